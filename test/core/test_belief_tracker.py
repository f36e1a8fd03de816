"""BeliefTracker: convergence, change of mind, wandering, pool behaviour, validation, allocation."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

GOALS = np.array([[12.0, 0.0], [0.0, 12.0], [-12.0, 0.0]])
DT = 0.4
MODES = ("particle", "bayes")


def make(mode: str, **kw) -> BeliefTracker:
    tracker = BeliefTracker(BeliefConfig(goals=GOALS, mode=mode, **kw))
    tracker.warmup()
    return tracker


def walk(start, heading_to, steps: int, rng: np.random.Generator, speed: float = 1.2, noise: float = 0.05,
         t0: float = 0.0):
    """Positions and finite-difference velocities of a walker heading to a point, with position noise."""
    p = np.array(start, dtype=float)
    out = []
    for k in range(steps):
        d = np.asarray(heading_to) - p
        p = p + speed * DT * d / np.linalg.norm(d)
        out.append((t0 + DT * (k + 1), p + noise * rng.standard_normal(2)))
    ts = np.array([o[0] for o in out])
    xy = np.array([o[1] for o in out])
    first = np.asarray(heading_to) - np.asarray(start)
    vxy = np.vstack([[speed * first / np.linalg.norm(first)], np.diff(xy, axis=0) / DT])
    return ts, xy, vxy


def feed(tracker, pid: int, ts, xy, vxy):
    out = None
    for t, p, v in zip(ts, xy, vxy, strict=True):
        out = tracker.update(t, np.array([pid]), p[None], v[None])
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("goal", [0, 1, 2])
def test_posterior_converges_to_true_goal(mode, goal):
    tracker = make(mode, seed=3)
    ts, xy, vxy = walk((0.0, -1.0) if goal != 1 else (1.0, 0.0), GOALS[goal], 15, np.random.default_rng(goal))
    out = feed(tracker, 7, ts, xy, vxy)
    assert out.most_likely[0] == goal
    assert out.probabilities[0, goal] > 0.8
    assert out.probabilities[0].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("mode", MODES)
def test_recovers_after_change_of_mind(mode):
    tracker = make(mode, seed=1)
    rng = np.random.default_rng(5)
    ts, xy, vxy = walk((0.0, 0.0), GOALS[0], 15, rng)
    out = feed(tracker, 1, ts, xy, vxy)
    assert out.most_likely[0] == 0 and out.probabilities[0, 1] < 0.05
    ts2, xy2, vxy2 = walk(xy[-1], GOALS[1], 12, rng, t0=ts[-1])
    vxy2[0] = (xy2[0] - xy[-1]) / DT
    out = feed(tracker, 1, ts2, xy2, vxy2)
    assert out.most_likely[0] == 1
    assert out.probabilities[0, 1] > 0.7


@pytest.mark.parametrize("mode", MODES)
def test_wandering_wins_for_a_random_walk(mode):
    tracker = make(mode, seed=2)
    rng = np.random.default_rng(11)
    p = np.zeros(2)
    v = np.zeros(2)
    for k in range(40):
        # A random walk in velocity: directions keep changing, towards no goal in particular.
        v = 0.6 * v + 0.9 * rng.standard_normal(2)
        p = p + v * DT
        out = tracker.update(DT * k, np.array([4]), p[None], v[None])
    assert out.most_likely[0] == 3
    assert tracker.labels[out.most_likely[0]] == "wandering"


@pytest.mark.parametrize("mode", MODES)
def test_outputs_are_consistent_and_reused(mode):
    tracker = make(mode)
    ids = np.array([10, 11, 12])
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]])
    vxy = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    first = tracker.update(0.0, ids, xy, vxy)
    first_buffer = first.probabilities
    out = tracker.update(0.4, ids, xy + DT * vxy, vxy)
    assert np.shares_memory(first_buffer, out.probabilities)
    p = out.probabilities
    assert p.shape == (3, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(out.entropy, -(p * np.log(p, where=p > 0, out=np.zeros_like(p))).sum(axis=1))
    np.testing.assert_array_equal(out.most_likely, p.argmax(axis=1))
    assert out.tracked.all()
    if mode == "particle":
        assert np.all((out.ess > 0) & (out.ess <= 1000))
    assert tracker.labels == ("goal0", "goal1", "goal2", "wandering")


def test_same_seed_same_beliefs():
    runs = []
    for _ in range(2):
        tracker = make("particle", seed=42)
        ts, xy, vxy = walk((0.0, 0.0), GOALS[1], 8, np.random.default_rng(0))
        runs.append(feed(tracker, 1, ts, xy, vxy).probabilities.copy())
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("mode", MODES)
def test_track_creation_and_timeout(mode):
    tracker = make(mode, track_timeout_s=1.0)
    rng = np.random.default_rng(0)
    ts, xy, vxy = walk((0.0, 0.0), GOALS[0], 8, rng)
    for t, p, v in zip(ts, xy, vxy, strict=True):
        tracker.update(t, np.array([1, 2]), np.vstack([p, -p]), np.vstack([v, -v]))
    assert tracker.stats()["active_tracks"] == 2
    assert tracker.stats()["tracks_created"] == 2
    t = ts[-1]
    # id 2 keeps being seen within the timeout; id 1 vanishes.
    tracker.update(t + 0.8, np.array([2]), -xy[-1][None], -vxy[-1][None])
    assert tracker.stats()["active_tracks"] == 2
    out = tracker.update(t + 1.6, np.array([2]), -xy[-1][None], -vxy[-1][None])
    assert tracker.stats()["active_tracks"] == 1
    assert tracker.stats()["tracks_dropped"] == 1
    assert tracker.belief_of(1) is None
    assert out.most_likely[0] == 2  # id 2 kept its belief (walking towards the goal at -x)
    out = tracker.update(t + 2.0, np.array([1]), xy[-1][None], vxy[-1][None])
    np.testing.assert_allclose(out.probabilities[0], np.full(4, 0.25))  # a returning id starts from the prior
    assert tracker.stats()["tracks_created"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_pool_full(mode):
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    tracker = make(mode, capacity=2, track_timeout_s=1.0, prior=prior)
    ids = np.array([1, 2, 3])
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    vxy = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    for k in range(3):
        out = tracker.update(0.4 * k, ids, xy + 0.4 * k * vxy, vxy)
        np.testing.assert_array_equal(out.tracked, [True, True, False])
        np.testing.assert_allclose(out.probabilities[2], prior)
        assert out.most_likely[2] == -1 and out.ess[2] == 0.0 and out.slot[2] == -1
        assert out.entropy[2] == pytest.approx(-(prior * np.log(prior)).sum())
    stats = tracker.stats()
    assert stats["pool_full_events"] == 3 and stats["active_tracks"] == 2 and stats["capacity"] == 2
    # Once id 1 times out, id 3 gets its slot.
    out = tracker.update(2.0, ids[1:], xy[1:], vxy[1:])
    np.testing.assert_array_equal(out.tracked, [True, True])
    assert tracker.stats()["pool_full_events"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_invalid_inputs_raise(mode):
    tracker = make(mode)
    ok_xy = np.zeros((2, 2))
    with pytest.raises(ValueError, match="NaN"):
        tracker.update(0.0, np.array([1, 2]), np.array([[0.0, np.nan], [0.0, 0.0]]), ok_xy)
    with pytest.raises(ValueError, match="NaN"):
        tracker.update(0.0, np.array([1, 2]), ok_xy, np.array([[0.0, np.inf], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="duplicates"):
        tracker.update(0.0, np.array([1, 1]), ok_xy, ok_xy)
    with pytest.raises(ValueError, match="shape"):
        tracker.update(0.0, np.array([1, 2]), np.zeros((2, 3)), ok_xy)
    with pytest.raises(ValueError, match="pred_mean"):
        tracker.update(0.0, np.array([1, 2]), ok_xy, ok_xy, pred_mean=np.zeros((3, 4, 2)))
    tracker.update(1.0, np.array([1, 2]), ok_xy, ok_xy)
    with pytest.raises(ValueError, match="backwards"):
        tracker.update(0.5, np.array([1, 2]), ok_xy, ok_xy)
    with pytest.raises(ValueError, match="labels"):
        BeliefTracker(BeliefConfig(goals=GOALS, labels=("a", "b")))
    with pytest.raises(ValueError, match="shape"):
        BeliefTracker(BeliefConfig(goals=np.zeros(3)))
    with pytest.raises(ValueError, match="mode"):
        BeliefTracker(BeliefConfig(goals=GOALS, mode="kalman"))
    for name in ("relax_time_s", "bayes_relax_time_s"):
        with pytest.raises(ValueError, match=name):
            BeliefTracker(BeliefConfig(goals=GOALS, mode=mode, **{name: 0.0}))


def test_each_mode_has_its_own_relax_time():
    from intent_perf_ros.core.belief.layout import P_RELAX

    cfg = BeliefConfig(goals=GOALS, relax_time_s=1.7, bayes_relax_time_s=0.6)
    assert cfg.kernel_params()[P_RELAX] == 1.7
    assert BeliefConfig(**{**cfg.__dict__, "mode": "bayes"}).kernel_params()[P_RELAX] == 0.6
    # The defaults differ: each was chosen on the training files for its own mode (docs/belief.md).
    assert BeliefConfig(goals=GOALS).bayes_relax_time_s < BeliefConfig(goals=GOALS).relax_time_s


@pytest.mark.parametrize("mode", MODES)
def test_gp_prediction_is_evidence(mode):
    """A predicted path bending towards goal 1 raises its belief compared with no prediction."""
    beliefs = []
    for use in (False, True):
        tracker = make(mode, seed=0, gp_weight=0.5)
        xy = np.array([[0.0, 0.0]])
        v = np.array([[0.8, 0.8]])  # heading between goal 0 and goal 1
        for k in range(4):
            steps = np.arange(1, 13)[None, :, None] * 0.4
            pred = xy[:, None, :] + np.array([0.0, 1.0])[None, None, :] * steps
            out = tracker.update(0.4 * k, np.array([1]), xy, v, pred_mean=pred if use else None)
            xy = xy + 0.4 * v
        beliefs.append(out.probabilities[0].copy())
    assert beliefs[1][1] > beliefs[0][1] + 0.1


@pytest.mark.parametrize("mode", MODES)
def test_steady_state_update_allocates_nothing(mode):
    tracker = make(mode, capacity=16)
    ids = np.arange(10, dtype=np.int64)
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(10, 2))
    vxy = rng.normal(size=(10, 2))
    for k in range(5):
        tracker.update(0.4 * k, ids, xy, vxy)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for k in range(5, 205):
            tracker.update(0.4 * k, ids, xy, vxy)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Not zero: a float or int attribute replaced during the loop may come from the allocator or
    # from CPython's free list, depending on what ran before (a CI run kept 176 bytes). Anything
    # kept per update (16 bytes at least) would pass 1 kB within these 200 updates.
    assert after - before < 1024
    # At any moment only the transient objects of one call exist (numba's dispatcher boxes the ~30
    # arguments: about 2.2 kB measured, whatever the number of updates); one per-human particle
    # array would already be 8 kB and the particle state of 10 humans 80 kB.
    assert peak - before < 4096


@pytest.mark.parametrize("mode", MODES)
def test_warmup_compiles_everything_the_first_update_needs(mode):
    from intent_perf_ros.core.belief.bayes import bayes_update
    from intent_perf_ros.core.belief.particles import particle_update

    kernel = particle_update if mode == "particle" else bayes_update
    tracker = make(mode)
    compiled = len(kernel.signatures)
    assert compiled >= 1
    xy = np.zeros((3, 2), dtype=np.float32)  # other dtypes are converted, not compiled for
    tracker.update(0, [1, 2, 3], xy, xy)
    tracker.update(0.4, np.array([1, 2, 3], dtype=np.int32), xy, xy, pred_mean=np.zeros((3, 12, 2)))
    assert len(kernel.signatures) == compiled


def test_bayes_ess_is_the_effective_number_of_hypotheses():
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    tracker = make("bayes", prior=prior)
    ts, xy, vxy = walk((0.0, 0.0), GOALS[0], 15, np.random.default_rng(1))
    out = tracker.update(ts[0], np.array([1]), xy[:1], vxy[:1])
    assert out.ess[0] == pytest.approx(1.0 / (prior**2).sum())  # a new track reports its prior's
    history = []
    for t, p, v in zip(ts[1:], xy[1:], vxy[1:], strict=True):
        out = tracker.update(t, np.array([1]), p[None], v[None])
        np.testing.assert_allclose(out.ess, 1.0 / (out.probabilities**2).sum(axis=1), rtol=1e-12)
        history.append(out.ess[0])
    # Certainty about goal 0 leaves one effective hypothesis; never more than H, never below 1.
    assert min(history) >= 1.0 and max(history) <= 4.0 and history[-1] < 1.2


def bayes_reference(prior, goals, rate, relax, vel_sigma, goal_noise, wander_noise, ts, vxy, xy):
    """Bayes-mode belief in plain numpy from the module docstring's formulas (no flow, no GP)."""
    p = prior.copy()
    k_goals = goals.shape[0]
    for j in range(1, len(ts)):
        dt = ts[j] - ts[j - 1]
        e = 1.0 - np.exp(-rate * dt)
        a = min(1.0, dt / relax)
        u = vxy[j - 1]
        to = goals - xy[j - 1]
        unit = to / np.linalg.norm(to, axis=1, keepdims=True)
        pred = np.vstack([u + a * (np.linalg.norm(u) * unit - u), u])
        var = 2 * vel_sigma**2 + np.append(np.full(k_goals, goal_noise**2), wander_noise**2) * dt
        loglik = -0.5 * ((vxy[j] - pred) ** 2).sum(axis=1) / var - np.log(var)
        p = ((1 - e) * p + e * prior) * np.exp(loglik - loglik.max())  # change of mind redraws from the prior
        p /= p.sum()
    return p


def test_bayes_filter_matches_a_numpy_reference():
    prior = np.array([0.5, 0.1, 0.3, 0.1])
    kw = dict(switch_rate_hz=0.7, bayes_relax_time_s=1.1, vel_sigma=0.35, goal_noise=0.4, wander_noise=0.9)
    tracker = make("bayes", prior=prior, **kw)
    rng = np.random.default_rng(4)
    ts = np.cumsum(rng.uniform(0.2, 0.6, 12))
    xy = np.cumsum(rng.normal(0.3, 0.5, (12, 2)), axis=0)
    vxy = rng.normal(0.5, 0.6, (12, 2))
    for t, p, v in zip(ts, xy, vxy, strict=True):
        out = tracker.update(t, np.array([3]), p[None], v[None])
    expected = bayes_reference(prior, GOALS, kw["switch_rate_hz"], kw["bayes_relax_time_s"], kw["vel_sigma"],
                               kw["goal_noise"], kw["wander_noise"], ts, vxy, xy)
    np.testing.assert_allclose(out.probabilities[0], expected, rtol=1e-9)


def test_particles_change_their_mind_to_goals_drawn_from_the_prior():
    from intent_perf_ros.core.belief.layout import new_state
    from intent_perf_ros.core.belief.particles import jump_goals

    n = 40000
    prior = np.array([0.55, 0.05, 0.3, 0.1])
    params = BeliefConfig(goals=GOALS, switch_rate_hz=1e9).kernel_params()  # e = 1: every particle jumps
    g = np.zeros((1, n), dtype=np.int64)
    jump_goals(0, 0.4, prior, params, g, new_state(7))
    share = np.bincount(g[0], minlength=4) / n
    assert np.all(np.abs(share - prior) < 5 * np.sqrt(prior * (1 - prior) / n))  # 5 binomial standard errors
    # A finite rate: a particle jumps with probability e = 1 - exp(-rate dt), to a goal drawn from the prior.
    params = BeliefConfig(goals=GOALS, switch_rate_hz=1.0).kernel_params()
    e = 1.0 - np.exp(-0.4)
    g[:] = 1
    jump_goals(0, 0.4, prior, params, g, new_state(8))
    expect = e * prior + (1 - e) * np.eye(4)[1]
    share = np.bincount(g[0], minlength=4) / n
    assert np.all(np.abs(share - expect) < 5 * np.sqrt(expect * (1 - expect) / n))


def test_particle_proposal_is_the_exact_gaussian_posterior_and_weights_the_predictive_likelihood():
    """propagate_slot against the joint Gaussian of (v', y_v, y_p) per axis, written out in numpy."""
    from intent_perf_ros.core.belief.layout import new_state
    from intent_perf_ros.core.belief.particles import propagate_slot

    n = 40000
    cfg = BeliefConfig(goals=GOALS, switch_rate_hz=0.0, relax_time_s=1.3, goal_noise=0.4, wander_noise=0.9,
                       pos_sigma_m=0.25, vel_sigma=0.3, vel_rel=0.1)
    params = cfg.kernel_params()
    dt = 0.4
    p0 = np.array([1.0, -2.0])
    v0 = np.array([1.1, 0.3])
    y_p = np.array([1.5, -1.8])
    y_v = np.array([1.0, 0.6])
    px, py, pvx, pvy = (np.full((1, n), c) for c in (*p0, *v0))
    w = np.full((1, n), 1.0 / n)
    g = np.zeros((1, n), dtype=np.int64)
    g[0, n // 2:] = 3  # half on goal 0, half wandering
    ll = np.zeros(n)
    ok = propagate_slot(0, dt, *y_p, *y_v, GOALS, np.zeros((3, 1, 1, 2)), np.full(4, 0.25), params, np.zeros(4),
                        px, py, pvx, pvy, w, g, ll, new_state(3))
    assert ok

    a = dt / cfg.relax_time_s
    u = (GOALS[0] - p0) / np.linalg.norm(GOALS[0] - p0)
    rv = cfg.vel_sigma**2 + cfg.vel_rel**2 * (y_v @ y_v)
    rp = cfg.pos_sigma_m**2

    def reference(m, q2):
        """(log p(y | m), posterior means (2,), posterior variance) per axis from the 3 x 3 joint Gaussian."""
        logp, means = 0.0, []
        for j in range(2):
            cov = np.array([[q2, q2, q2 * dt], [q2, q2 + rv, q2 * dt], [q2 * dt, q2 * dt, q2 * dt * dt + rp]])
            mu = np.array([m[j], m[j], p0[j] + dt * m[j]])
            obs = np.array([y_v[j], y_p[j]])
            syy = cov[1:, 1:]
            r = obs - mu[1:]
            logp += -0.5 * r @ np.linalg.solve(syy, r) - 0.5 * np.log(np.linalg.det(2 * np.pi * syy))
            gain = np.linalg.solve(syy, cov[1:, 0])
            means.append(mu[0] + gain @ r)
            var = cov[0, 0] - cov[0, 1:] @ gain
        return logp, np.array(means), var

    lp_goal, mean_goal, var_goal = reference(v0 + a * (np.linalg.norm(v0) * u - v0), cfg.goal_noise**2 * dt)
    lp_wand, mean_wand, var_wand = reference(v0, cfg.wander_noise**2 * dt)
    # The weight of a particle is its predictive likelihood: the same for every draw of a group.
    half = n // 2
    np.testing.assert_allclose(w[0, :half], w[0, 0], rtol=1e-12)
    np.testing.assert_allclose(w[0, half:], w[0, half], rtol=1e-12)
    assert w.sum() == pytest.approx(1.0)
    assert np.log(w[0, 0] / w[0, half]) == pytest.approx(lp_goal - lp_wand, abs=1e-9)
    # The moves are drawn from the posterior of v' given both observations; positions follow exactly.
    for sl, mean, var in ((slice(0, half), mean_goal, var_goal), (slice(half, n), mean_wand, var_wand)):
        v = np.column_stack([pvx[0, sl], pvy[0, sl]])
        se = np.sqrt(var / half)
        assert np.all(np.abs(v.mean(axis=0) - mean) < 5 * se)
        assert np.all(np.abs(v.var(axis=0) / var - 1) < 5 * np.sqrt(2 / half))
        np.testing.assert_allclose(px[0, sl], p0[0] + dt * v[:, 0], atol=1e-12)
        np.testing.assert_allclose(py[0, sl], p0[1] + dt * v[:, 1], atol=1e-12)
    # dt = 0 (a repeated time stamp): no move, weights times N(y_v; v, R_v) N(y_p; p, R_p) only.
    before = (px.copy(), pvx.copy())
    propagate_slot(0, 0.0, *y_p, *y_v, GOALS, np.zeros((3, 1, 1, 2)), np.full(4, 0.25), params, np.zeros(4),
                   px, py, pvx, pvy, w, g, ll, new_state(4))
    np.testing.assert_array_equal(px, before[0])
    np.testing.assert_array_equal(pvx, before[1])

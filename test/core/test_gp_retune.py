"""Online re-tuning of the place GP: schedule, adoption equals a refit, the child process equals in-process."""

import time

import numpy as np
import pytest
from gp_windows import random_windows

from intent_perf_ros.core.gp.background import BackgroundRetune
from intent_perf_ros.core.gp.online import OnlineGP
from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor
from intent_perf_ros.core.gp.retune import PLACE_GRID, PlaceRetune, choose_place_params, retune_place


def learning(capacity: int = 300) -> TrajectoryPredictor:
    """Constant velocity plus a place GP (no offline fit needed for what is tested here)."""
    pred = TrajectoryPredictor(PredictorConfig(online_capacity=capacity, max_humans=8))
    pred.warmup()
    return pred


def learn(pred: TrajectoryPredictor, windows: np.ndarray, first_end: int, per_step: int = 2) -> None:
    """``per_step`` windows end at each step from ``first_end`` on, learned in chunks of one step."""
    for k in range(0, len(windows), per_step):
        pred.add_windows(windows[k : k + per_step], first_end + k // per_step)


def wait_done(retuner: BackgroundRetune, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while retuner._thread is not None and retuner._thread.is_alive():
        assert time.monotonic() < deadline, "the re-tuning child gave no answer"
        retuner._thread.join(0.1)


def test_online_gp_set_state_equals_fit_and_reuses_its_buffers() -> None:
    rng = np.random.default_rng(0)
    x, y, xq = rng.normal(size=(80, 5)), rng.normal(size=(80, 3)), rng.normal(size=(7, 5))
    fitted = OnlineGP(PLACE_GRID[1], capacity=100).fit(x, y)
    other = OnlineGP(PLACE_GRID[1], capacity=100).fit(x[:10] + 1.0, y[:10])
    buffer = other._lflat
    other.set_state(fitted.state())
    assert other._lflat is buffer and other.refits_ == 2
    for a, b in zip(other.predict(xq), fitted.predict(xq), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(other.predict_mean(xq), fitted.predict_mean(xq), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="capacity"):
        OnlineGP(PLACE_GRID[1], capacity=50).set_state(fitted.state())


def test_retuning_is_due_first_after_enough_timed_windows_then_every_so_many() -> None:
    pred = learning()
    assert not pred.place_retune_due(first=40, every=60)  # nothing learned
    pred.add_windows(random_windows(50, 1))  # no times: learned, but not counted
    assert pred.stats()["n_online"] == 50 and not pred.place_retune_due(first=40, every=60)
    learn(pred, random_windows(40, 2), first_end=100)
    assert pred.place_retune_due(first=40, every=60) and not pred.place_retune_due(first=40, every=0)
    snapshot = pred.place_snapshot()
    assert np.isnan(snapshot.start_steps).sum() == 50 and len(snapshot.x) == 90
    assert not pred.place_retune_due(first=40, every=60)
    learn(pred, random_windows(58, 3), first_end=200)
    assert not pred.place_retune_due(first=40, every=60)
    learn(pred, random_windows(2, 4), first_end=300)
    assert pred.place_retune_due(first=40, every=60)
    pred.reset_online()
    assert not pred.place_retune_due(first=40, every=60)


def test_windows_without_times_are_never_replayed() -> None:
    pred = learning()
    pred.add_windows(random_windows(250, 5))
    choice, tested = choose_place_params(pred.place_snapshot())
    assert tested == 0 and choice == pred.place_snapshot().current


def test_the_choice_is_the_candidate_with_the_smallest_replayed_error() -> None:
    """Brute force over the grid with the replay itself, against the chosen index."""
    from intent_perf_ros.core.gp.retune import simulate_online

    pred = learning()
    learn(pred, random_windows(300, 6), first_end=20)
    snapshot = pred.place_snapshot()
    choice, tested = choose_place_params(snapshot)
    errors = []
    for params in PLACE_GRID:
        t, p = simulate_online(params, snapshot.x, snapshot.y, np.zeros(300, dtype=int), snapshot.start_steps,
                               np.random.default_rng(snapshot.seed), snapshot.capacity, snapshot.cuts,
                               snapshot.span, snapshot.jitter)
        errors.append(sum(float(np.sum((a - snapshot.shrink * b) ** 2)) for a, b in zip(t, p, strict=True)))
    assert tested > 0 and choice == int(np.argmin(errors))


def test_an_adopted_retuning_equals_a_refit_on_every_row_the_place_gp_holds() -> None:
    pred = learning(capacity=200)
    learn(pred, random_windows(150, 7), first_end=20)
    snapshot = pred.place_snapshot()
    choice = (snapshot.current + 1) % len(PLACE_GRID)
    fitted = OnlineGP(PLACE_GRID[choice], capacity=200).fit(snapshot.x, snapshot.y)

    def result(state) -> PlaceRetune:
        return PlaceRetune(choice, state, snapshot.start_steps, snapshot.rows_added, snapshot.generation, 100)

    learn(pred, random_windows(80, 8), first_end=200)  # learned while the re-tuning ran: 30 old rows dropped
    model = pred.place_model_
    x_all, y_all, starts_all = model.x_train_.copy(), model.y_train_.copy(), pred.place_snapshot().start_steps
    assert pred.adopt_place_retune(result(fitted.state()))
    assert pred.place_model_ is model and model.params.same_as(PLACE_GRID[choice])
    reference = OnlineGP(PLACE_GRID[choice], capacity=200).fit(x_all, y_all)
    np.testing.assert_allclose(model.x_train_, x_all)
    np.testing.assert_array_equal(pred.place_snapshot().start_steps, starts_all)  # times stay row-aligned
    xq = np.random.default_rng(9).normal(size=(6, 5))
    np.testing.assert_allclose(model.predict_mean(xq), reference.predict_mean(xq), rtol=0, atol=1e-8)
    assert pred.stats()["place_retunes"] == 1 and pred.stats()["place_rows_dropped"] == 0
    assert not pred.adopt_place_retune(result(None))  # the same choice as before: nothing to adopt


def test_a_bounded_catch_up_keeps_the_newest_rows_and_a_reset_place_refuses_old_results() -> None:
    pred = learning(capacity=200)
    learn(pred, random_windows(150, 7), first_end=20)
    snapshot = pred.place_snapshot()
    choice = (snapshot.current + 1) % len(PLACE_GRID)
    state = OnlineGP(PLACE_GRID[choice], capacity=200).fit(snapshot.x, snapshot.y).state()
    late = random_windows(10, 8)
    learn(pred, late, first_end=200)
    newest = pred.place_model_.x_train_[-4:].copy()
    done = PlaceRetune(choice, state, snapshot.start_steps, snapshot.rows_added, snapshot.generation, 100)
    assert pred.adopt_place_retune(done, max_catch_up=4)
    model = pred.place_model_
    assert model.n_train == 154 and pred.stats()["place_rows_dropped"] == 6
    np.testing.assert_array_equal(model.x_train_[:150], snapshot.x)
    np.testing.assert_array_equal(model.x_train_[150:], newest)
    np.testing.assert_array_equal(pred.place_snapshot().start_steps[-4:], 200 + np.arange(3, 5).repeat(2) - 19)
    pred.reset_online()
    learn(pred, random_windows(300, 10), first_end=500)  # more rows than the old snapshot had, another place
    assert not pred.adopt_place_retune(done)


def test_the_child_process_returns_what_retune_place_returns_here() -> None:
    pred = learning()
    learn(pred, random_windows(300, 11), first_end=20)
    snapshot = pred.place_snapshot()
    snapshot.current = -1  # none of the grid: the child refits whatever it chooses
    retuner = BackgroundRetune()
    retuner.start(snapshot)
    assert retuner.busy and retuner.poll() is None
    with pytest.raises(RuntimeError, match="already running"):
        retuner.start(snapshot)
    wait_done(retuner)
    result, local = retuner.poll(), retune_place(snapshot)
    assert retuner.failures == 0 and not retuner.busy and retuner.poll() is None
    assert (result.choice, result.tested, result.rows_added) == (local.choice, local.tested, local.rows_added)
    assert isinstance(result.state["L"], np.memmap)  # mapped from the child's file, not copied onto the heap
    for key, value in local.state.items():
        np.testing.assert_allclose(result.state[key], value, rtol=0, atol=1e-12)
    assert pred.adopt_place_retune(result)


def test_a_failing_child_is_counted_and_a_running_one_is_stopped_at_close() -> None:
    pred = learning()
    learn(pred, random_windows(300, 12), first_end=20)
    broken = pred.place_snapshot()
    broken.x = broken.x[:, :2]  # features of the wrong width: the child raises
    retuner = BackgroundRetune()
    retuner.start(broken)
    wait_done(retuner)
    assert retuner.poll() is None and retuner.failures == 1 and "exit code" in retuner.last_error
    retuner.start(pred.place_snapshot())
    retuner.close()
    assert not retuner.busy and retuner.poll() is None
    with pytest.raises(RuntimeError, match="closed"):
        retuner.start(pred.place_snapshot())


def test_the_replay_pools_only_windows_on_the_stride(monkeypatch) -> None:
    from intent_perf_ros.core.gp import retune

    rng = np.random.default_rng(5)
    n = 400
    start = np.arange(n) // 2 + 0.0  # two windows start per step
    place, resid, groups = rng.normal(size=(n, 5)), rng.normal(size=(n, 4)), np.zeros(n)
    place[:, 0] = start  # the row's start step, readable from what the GP is fitted on
    pooled = []
    real_fit = retune.ExactGP.fit

    def recording_fit(self, x, y):
        pooled.append(x[:, 0].copy())
        return real_fit(self, x, y)

    monkeypatch.setattr(retune.ExactGP, "fit", recording_fit)
    targets = {}
    for stride in (1, 3):
        pooled.clear()
        targets[stride], _ = retune.simulate_online(PLACE_GRID[0], place, resid, groups, start,
                                                    np.random.default_rng(1), 50, 4, 20, 1e-8, stride)
        # every window until 50 were learned (starts 0..24), then only those on the stride
        assert pooled and all(np.all((p < 25) | (p % stride == 0)) for p in pooled)
        assert all(p.size == 50 for p in pooled)
        if stride == 3:
            assert all(np.sum(p % 3 != 0) < 50 for p in pooled) and any(np.all(p % 3 == 0) for p in pooled)
    assert len(targets[1]) == len(targets[3])  # same cut times and test windows whatever the stride
    np.testing.assert_array_equal(np.concatenate(targets[1]), np.concatenate(targets[3]))
    np.testing.assert_array_equal(retune.on_grid(np.array([0.0, 1.0, 2.9, 3.1, np.nan]), 3),
                                  [True, False, True, True, True])

"""Ahead-of-time compiled kernels (core.aot): built by make, equal to the JIT, never stale."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from intent_perf_ros.core import aot

# A closed loop of the MPC among walking humans, through every MPC kernel (hypotheses included).
CLOSED_LOOP = textwrap.dedent("""
    import json, sys
    import numpy as np
    from intent_perf_ros.core.mpc import controller as module, hypotheses
    from intent_perf_ros.core.mpc.controller import MPCConfig, MPCController
    from intent_perf_ros.core.mpc.model import unicycle_step

    rng = np.random.default_rng(7)
    c = MPCController(MPCConfig(horizon=20, time_limit_s=0.0))
    state, goal = np.zeros(5), np.array([8.0, 0.5])
    xy = rng.uniform([2.0, -2.0], [6.0, 2.0], size=(4, 2))
    vxy = rng.normal(0.0, 0.6, size=(4, 2))
    goals, probs = np.array([[8.0, 3.0], [0.0, -4.0]]), rng.dirichlet(np.ones(3), size=4)
    steps = np.arange(1, 13)[None, :, None] * 0.4
    out_mean, out_var, trace = np.zeros((8, 12, 2)), np.zeros((8, 12, 2)), []
    for k in range(40):
        mean = xy[:, None, :] + vxy[:, None, :] * steps
        var = np.broadcast_to(0.05 * steps, mean.shape).copy()
        n = hypotheses.expand_hypotheses(mean, var, xy, vxy, goals, probs, 2, 0.4, out_mean, out_var)
        r = c.step(state, goal, out_mean[:n], out_var[:n], 0.4)
        trace.append([r.v, r.omega, r.iterations, n, float(out_mean[:n].sum())])
        state = unicycle_step(state, r.v, r.omega, 0.1)
        xy = xy + 0.1 * vxy
    print(json.dumps({"kernels": module._kernels.__name__, "numba": "numba" in sys.modules, "trace": trace}))
""")


def _closed_loop(kernels: str) -> dict:
    env = dict(os.environ, INTENT_PERF_KERNELS=kernels, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CLOSED_LOOP], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_make_built_the_mpc_kernels_and_they_run_the_mpc_like_the_jit_without_numba():
    jit, compiled = _closed_loop("jit"), _closed_loop("")
    assert jit["kernels"] == aot.MPC_KERNELS and jit["numba"]
    assert compiled["kernels"] == aot.compiled_name(aot.MPC_KERNELS), "run `make` (intent-perf build-kernels)"
    assert not compiled["numba"]
    assert len(compiled["trace"]) == 40 and any(row[3] > 4 for row in compiled["trace"])  # hypotheses were added
    np.testing.assert_allclose(np.array(compiled["trace"]), np.array(jit["trace"]), rtol=1e-9, atol=1e-12)


def test_every_kernel_the_mpc_calls_is_exported():
    from intent_perf_ros.core.mpc import kernels

    names = set(aot.exported_kernels(kernels))
    assert {"rollout_linearise", "interpolate", "half_planes", "min_distance", "reference_and_bounds",
            "stage_dynamics", "gather", "expand_hypotheses_into"} <= names


# BeliefTracker in both modes over a deterministic scene: seven walkers (one leaves, one arrives; up to six
# at once overflow a pool of five slots), GP paths on every other step read through strided views as
# belief_node passes them, a learned flow field: through every branch of both update kernels the node calls.
BELIEF_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    from intent_perf_ros.core.belief import tracker as module
    from intent_perf_ros.core.belief.goals import GoalFlowField
    from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

    goals = np.array([[12.0, 0.0], [0.0, 12.0], [-12.0, 0.0], [0.0, -12.0]])
    rng = np.random.default_rng(11)
    start = rng.uniform(-6.0, 6.0, size=(7, 2))
    heading = goals[[0, 1, 2, 3, 0, 2, 1]] - start
    vel = 1.2 * heading / np.linalg.norm(heading, axis=1, keepdims=True)
    lines = [start[j] + np.arange(20)[:, None] * 0.4 * vel[j] for j in range(7)]
    flow = GoalFlowField(cell_m=2.0).fit(goals, lines, np.array([0, 1, 2, 3, 0, 2, 1]))
    pred = np.zeros((8, 16, 2))
    out = {"kernels": [module._bayes.__name__, module._particles.__name__]}
    for mode in ("bayes", "particle"):
        tracker = BeliefTracker(BeliefConfig(goals=goals, mode=mode, particles=300, capacity=5, seed=5,
                                             track_timeout_s=1.0, flow=flow))
        tracker.warmup()
        trace = []
        for k in range(30):
            t = 0.4 * k
            rows = [j for j in range(7) if not (j == 2 and k >= 10) and not (j == 6 and k < 15)]
            ids = np.array([10 + j for j in rows])
            state = np.zeros((len(rows), 4))
            state[:, :2] = start[rows] + t * vel[rows] + 0.05 * rng.standard_normal((len(rows), 2))
            state[:, 2:] = vel[rows] + 0.1 * rng.standard_normal((len(rows), 2))
            steps = np.arange(1, 9)[None, :, None] * 0.4
            pred[:len(rows), :8] = state[:, None, :2] + steps * state[:, None, 2:]
            gp = pred[:len(rows), :8] if k % 2 else None
            r = tracker.update(t, ids, state[:, :2], state[:, 2:], gp, 0.4)
            trace.append(np.concatenate([r.probabilities.ravel(), r.entropy, r.ess, r.most_likely, r.tracked,
                                         r.slot]).tolist())
        out[mode] = {"trace": trace, "stats": tracker.stats()}
    out["numba"] = "numba" in sys.modules
    print(json.dumps(out))
""")


def _belief_run(kernels: str) -> dict:
    env = dict(os.environ, INTENT_PERF_KERNELS=kernels, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", BELIEF_RUN], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_make_built_the_belief_kernels_and_they_track_like_the_jit_without_numba():
    jit, compiled = _belief_run("jit"), _belief_run("")
    assert jit["kernels"] == [aot.BELIEF_BAYES_KERNELS, aot.BELIEF_PARTICLE_KERNELS] and jit["numba"]
    assert compiled["kernels"] == [aot.compiled_name(aot.BELIEF_BAYES_KERNELS),
                                   aot.compiled_name(aot.BELIEF_PARTICLE_KERNELS)], \
        "run `make` (intent-perf build-kernels)"
    assert not compiled["numba"]
    for mode in ("bayes", "particle"):
        stats = compiled[mode]["stats"]
        assert stats == jit[mode]["stats"]
        assert stats["updates"] == 30 and stats["pool_full_events"] > 0 and stats["tracks_dropped"] > 0
        assert len(compiled[mode]["trace"]) == 30
        for got, want in zip(compiled[mode]["trace"], jit[mode]["trace"], strict=True):
            np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float),
                                       rtol=1e-9, atol=1e-12)
    assert compiled["particle"]["stats"]["resamples"] > 0


def test_every_kernel_the_belief_tracker_calls_is_exported():
    from intent_perf_ros.core.belief import bayes, particles

    assert set(aot.exported_kernels(bayes)) == {"bayes_update"}
    assert set(aot.exported_kernels(particles)) == {"particle_update"}


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is None, reason="needs rclpy")
def test_belief_node_imports_without_numba_when_the_kernels_are_built():
    code = "import sys, intent_perf_ros.nodes.belief_node; print('numba' in sys.modules)"
    env = dict(os.environ, INTENT_PERF_KERNELS="", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", "run `make` (intent-perf build-kernels)"


def test_an_edited_kernel_source_is_not_served_by_its_old_build(tmp_path, monkeypatch):
    package = tmp_path / "aot_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "kern.py"
    body = "from numba import njit\n\n\n@njit('f8(f8)', cache=False)\ndef twice(x):\n    return {} * x\n"
    source.write_text(body.format("2.0"))
    monkeypatch.syspath_prepend(str(tmp_path))
    aot.build("aot_probe.kern")
    built = aot.load("aot_probe.kern")
    assert aot.is_compiled(built) and built.twice(1.5) == 3.0
    source.write_text(body.format("3.0"))
    sys.modules.pop("aot_probe.kern", None)
    edited = aot.load("aot_probe.kern")
    assert not aot.is_compiled(edited) and edited.twice(1.5) == 4.5
    aot.build("aot_probe.kern")  # the rebuild replaces the old extension
    assert [p.name.split(".")[0] for p in package.glob("_aot_kern_*")] == [aot.compiled_name("aot_probe.kern")
                                                                             .rpartition(".")[2]]


def test_an_edited_module_the_kernels_import_is_not_served_by_their_old_build(tmp_path, monkeypatch):
    """Constants and helpers imported from the kernel module's own package are compiled into it."""
    package = tmp_path / "aot_deps"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "consts.py").write_text("FACTOR = 2.0\n")
    (package / "helpers.py").write_text("from numba import njit\n\nfrom .consts import FACTOR\n\n\n"
                                        "@njit(cache=False)\ndef scale(x):\n    return FACTOR * x\n")
    (package / "kern.py").write_text("from numba import njit\n\nfrom aot_deps.helpers import scale\n\n\n"
                                     "@njit('f8(f8)', cache=False)\ndef twice(x):\n    return scale(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    aot.build("aot_deps.kern")
    built = aot.load("aot_deps.kern")
    assert aot.is_compiled(built) and built.twice(1.5) == 3.0
    (package / "consts.py").write_text("FACTOR = 3.0\n")  # two imports away from the kernel module
    for name in ("aot_deps.kern", "aot_deps.helpers", "aot_deps.consts"):
        sys.modules.pop(name, None)
    edited = aot.load("aot_deps.kern")
    assert not aot.is_compiled(edited) and edited.twice(1.5) == 4.5


def test_a_kernel_without_one_explicit_signature_cannot_be_exported(tmp_path, monkeypatch):
    package = tmp_path / "aot_bad"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kern.py").write_text("from numba import njit\n\n\n@njit(['f8(f8)', 'f4(f4)'])\ndef twice(x):\n"
                                     "    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="exactly one"):
        aot.build("aot_bad.kern")

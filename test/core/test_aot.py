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


def _package(tmp_path, monkeypatch, name: str, **modules: str):
    """A package ``name`` with these modules (name -> source) under tmp_path, importable for the test."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


def _run(script: str, kernels: str) -> str:
    """``script``'s standard output, run in a fresh interpreter with INTENT_PERF_KERNELS=``kernels``."""
    env = dict(os.environ, INTENT_PERF_KERNELS=kernels, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_built_the_mpc_kernels_and_they_run_the_mpc_like_the_jit_without_numba():
    jit, compiled = json.loads(_run(CLOSED_LOOP, "jit")), json.loads(_run(CLOSED_LOOP, ""))
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


def test_make_built_the_belief_kernels_and_they_track_like_the_jit_without_numba():
    jit, compiled = json.loads(_run(BELIEF_RUN, "jit")), json.loads(_run(BELIEF_RUN, ""))
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
    out = _run("import sys, intent_perf_ros.nodes.belief_node; print('numba' in sys.modules)", "")
    assert out.strip() == "False", "run `make` (intent-perf build-kernels)"


# gp_inference_node's path in both modes: sanitizer -> track histories -> predictions -> online learning, for a
# small predictor fitted on three synthetic places (leave-one-place-out validation and place tuning run too) in
# float64 (a sparse motion GP, as the stored default model) and float32 (exact: the _f4 twins, batches of 20 on
# the triangular-solve path). Twenty walkers, one of them with a NaN position, one repeated, one too fast, one
# leaving, one id that jumps; online_capacity 40 so that the place GP drops old windows as well as appending.
GP_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    from intent_perf_ros.core import tracks as tracks_module, validation as validation_module
    from intent_perf_ros.core.gp import kernels as gp_module
    from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor
    from intent_perf_ros.core.tracks import TrackHistory
    from intent_perf_ros.core.validation import HumanSanitizer

    def place_windows(n, place, seed):
        r = np.random.default_rng(seed)
        turn = r.normal(0.0, 0.08, (n, 20)) + 0.04 * (place - 1)
        heading = r.uniform(-np.pi, np.pi, (n, 1)) + np.cumsum(turn, axis=1)
        step = 0.4 * r.uniform(0.4, 1.6, (n, 1, 1)) * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
        return r.uniform(-8.0, 8.0, (n, 1, 2)) + np.cumsum(step, axis=1)

    windows = np.concatenate([place_windows(120, g, 10 + g) for g in range(3)])
    groups, frames = np.repeat(np.arange(3), 120), np.tile(np.arange(120), 3)
    rng = np.random.default_rng(5)
    start, vel = rng.uniform(-6.0, 6.0, (20, 2)), rng.normal(0.0, 0.8, (20, 2))
    out = {"kernels": [gp_module._LOOPS.__name__, tracks_module._kernels.__name__,
                       validation_module._kernels.__name__]}
    for dtype, sparse_threshold in (("float64", 200), ("float32", 4000)):
        cfg = PredictorConfig(max_train=300, hyperopt_points=100, hyperopt_restarts=0, calibration_points=100,
                              sparse_threshold=sparse_threshold, n_inducing=50, max_humans=24, online_capacity=40,
                              dtype=dtype)
        pred = TrajectoryPredictor(cfg).fit(windows, groups, frames)
        pred.warmup()
        tracks = TrackHistory(capacity=24, obs_steps=8, step_dt=0.4, window=20, timeout_s=1.0)
        tracks.warmup()
        sanitizer = HumanSanitizer(24)
        sanitizer.warmup()
        hist, mean, var = np.zeros((24, 8, 2)), np.zeros((24, 12, 2)), np.zeros((24, 12, 2))
        trace = []
        for k in range(45):
            t = 0.4 * k
            rows = [j for j in range(20) if not (j == 3 and 12 <= k < 20)]  # walker 3 leaves (timeout), returns
            ids = np.array([100 + j for j in rows] + ([105] if k == 7 else []), dtype=np.int64)
            xy = start[rows] + t * vel[rows] + 0.03 * rng.standard_normal((len(rows), 2))
            vxy = vel[rows] + 0.05 * rng.standard_normal((len(rows), 2))
            if k == 7:  # id 105 twice: the later entry wins
                xy, vxy = np.vstack([xy, xy[5] + 0.1]), np.vstack([vxy, vxy[5]])
            if k == 5:
                xy[2, 0] = np.nan
            if k == 9:
                vxy[4] = 50.0
            if k >= 25:  # walker 0's id jumps across the scene: a new history
                xy[0] += 30.0
            n, dropped, repaired = sanitizer.apply(ids, xy, vxy, len(ids))
            tracks.observe(t, ids, xy, n)
            tracks.history(vxy, n, hist)
            pred.predict(hist[:n], mean[:n], var[:n])
            learned = tracks.take_windows()
            if len(learned):
                keep = np.linspace(0, len(learned) - 1, min(4, len(learned))).round().astype(np.intp)
                pred.add_windows(learned[keep])
            trace.append([n, dropped, repaired, len(learned)] + hist[:n].ravel().tolist() + mean[:n].ravel().tolist()
                         + var[:n].ravel().tolist())
        out[dtype] = {"trace": trace, "stats": pred.stats(), "learned": pred.learned_windows().ravel().tolist(),
                      "tracks": [tracks.evictions, tracks.timeouts, tracks.jumps, tracks.out_of_order]}
    out["numba"] = "numba" in sys.modules
    print(json.dumps(out))
""")


def test_make_built_the_gp_kernels_and_they_predict_and_learn_like_the_jit_without_numba():
    jit, compiled = json.loads(_run(GP_RUN, "jit")), json.loads(_run(GP_RUN, ""))
    modules = [aot.GP_KERNELS, aot.INPUT_KERNELS, aot.INPUT_KERNELS]
    assert jit["kernels"] == modules and jit["numba"]
    assert compiled["kernels"] == [aot.compiled_name(name) for name in modules], \
        "run `make` (intent-perf build-kernels)"
    assert not compiled["numba"]
    for dtype in ("float64", "float32"):
        got, want = compiled[dtype], jit[dtype]
        assert got["stats"] == want["stats"] and got["tracks"] == want["tracks"]
        assert got["stats"]["sparse"] == (dtype == "float64") and got["stats"]["n_online"] == 40  # dropped too
        assert got["tracks"][1] > 0 and got["tracks"][2] > 0  # a timeout and a jump
        assert [row[:4] for row in got["trace"]] == [row[:4] for row in want["trace"]]
        assert sum(row[1] for row in got["trace"]) == 2 and sum(row[2] for row in got["trace"]) == 1
        assert max(row[0] for row in got["trace"]) == 20 and sum(row[3] > 0 for row in got["trace"]) > 20
        # Bit for bit until the place GP learns: its updates keep fastmath (loops.py), which the build
        # vectorises for any x86-64 and the JIT for this CPU, so the sums round differently from then on.
        learning = next(k for k, row in enumerate(got["trace"]) if row[3] > 0) + 1
        tol = 1e-12 if dtype == "float64" else 1e-5  # float32: its rounding (metres, m^2 of order 1-10)
        for k, (row_got, row_want) in enumerate(zip(got["trace"], want["trace"], strict=True)):
            if k <= learning:
                assert row_got == row_want, k
            np.testing.assert_allclose(row_got, row_want, rtol=tol, atol=tol)
        assert got["learned"] == want["learned"]


def test_every_kernel_gp_inference_node_calls_is_exported():
    from intent_perf_ros.core import input_kernels
    from intent_perf_ros.core.gp import kernels, loops

    twins = {name + "_f4" for name in kernels._DTYPE_LOOPS}
    assert set(aot.exported_kernels(loops)) == set(kernels._DTYPE_LOOPS) | twins | {"all_finite"}
    assert set(aot.exported_kernels(input_kernels)) == {"append", "append_grid", "observe", "read_tracked_humans",
                                                        "resample", "sanitize"}


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is None, reason="needs rclpy")
def test_gp_inference_node_imports_without_numba_or_scipy_optimize_when_the_kernels_are_built():
    out = _run("import sys, intent_perf_ros.nodes.gp_inference_node; "
               "print('numba' in sys.modules, 'scipy.optimize' in sys.modules)", "")
    assert out.split() == ["False", "False"], "run `make` (intent-perf build-kernels)"


def test_pycc_would_drop_fastmath_so_a_fastmath_kernel_is_refused(tmp_path, monkeypatch):
    _package(tmp_path, monkeypatch, "aot_fast",
             kern="from numba import njit\n\n\n@njit('f8(f8)', fastmath=True)\ndef twice(x):\n    return 2 * x\n")
    with pytest.raises(ValueError, match="fastmath"):
        aot.build("aot_fast.kern")


def test_an_edited_kernel_source_is_not_served_by_its_old_build(tmp_path, monkeypatch):
    body = "from numba import njit\n\n\n@njit('f8(f8)', cache=False)\ndef twice(x):\n    return {} * x\n"
    package = _package(tmp_path, monkeypatch, "aot_probe", kern=body.format("2.0"))
    source = package / "kern.py"
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


def test_a_build_for_another_processor_is_not_loaded(tmp_path, monkeypatch):
    """The build targets the processor it ran on: copied to another one, the JIT runs instead."""
    _package(tmp_path, monkeypatch, "aot_cpu",
             kern="from numba import njit\n\n\n@njit('f8(f8)', cache=False)\ndef half(x):\n    return 0.5 * x\n")
    aot.build("aot_cpu.kern")
    assert aot.is_compiled(aot.load("aot_cpu.kern"))
    assert aot.cpu_tag() in aot.compiled_name("aot_cpu.kern")
    monkeypatch.setattr(aot, "cpu_tag", lambda: "0ther0cpu")
    elsewhere = aot.load("aot_cpu.kern")
    assert not aot.is_compiled(elsewhere) and elsewhere.half(3.0) == 1.5


def test_an_edited_module_the_kernels_import_is_not_served_by_their_old_build(tmp_path, monkeypatch):
    """Constants and helpers imported from the kernel module's own package are compiled into it."""
    package = _package(
        tmp_path, monkeypatch, "aot_deps",
        consts="FACTOR = 2.0\n",
        helpers="from numba import njit\n\nfrom .consts import FACTOR\n\n\n"
                "@njit(cache=False)\ndef scale(x):\n    return FACTOR * x\n",
        kern="from numba import njit\n\nfrom aot_deps.helpers import scale\n\n\n"
             "@njit('f8(f8)', cache=False)\ndef twice(x):\n    return scale(x)\n",
    )
    aot.build("aot_deps.kern")
    built = aot.load("aot_deps.kern")
    assert aot.is_compiled(built) and built.twice(1.5) == 3.0
    (package / "consts.py").write_text("FACTOR = 3.0\n")  # two imports away from the kernel module
    for name in ("aot_deps.kern", "aot_deps.helpers", "aot_deps.consts"):
        sys.modules.pop(name, None)
    edited = aot.load("aot_deps.kern")
    assert not aot.is_compiled(edited) and edited.twice(1.5) == 4.5


def test_a_kernel_without_one_explicit_signature_cannot_be_exported(tmp_path, monkeypatch):
    _package(tmp_path, monkeypatch, "aot_bad",
             kern="from numba import njit\n\n\n@njit(['f8(f8)', 'f4(f4)'])\ndef twice(x):\n    return 2 * x\n")
    with pytest.raises(ValueError, match="exactly one"):
        aot.build("aot_bad.kern")

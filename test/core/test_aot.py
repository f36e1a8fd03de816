"""Ahead-of-time compiled kernels (core.aot): built by make, equal to the JIT, never stale."""
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


def test_a_kernel_without_one_explicit_signature_cannot_be_exported(tmp_path, monkeypatch):
    package = tmp_path / "aot_bad"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kern.py").write_text("from numba import njit\n\n\n@njit(['f8(f8)', 'f4(f4)'])\ndef twice(x):\n"
                                     "    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="exactly one"):
        aot.build("aot_bad.kern")

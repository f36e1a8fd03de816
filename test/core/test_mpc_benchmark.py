"""The benchmark's cvxpy formulation is the controller's QP, and the benchmark runs end to end."""

import json

import numpy as np
import pytest

from intent_perf_ros.bench import mpc_benchmark as bench
from intent_perf_ros.core.mpc.controller import Mode, MPCConfig, MPCController


def test_cvxpy_formulation_gives_the_same_command_at_tight_tolerance():
    cfg = MPCConfig(horizon=12, eps_abs=1e-7, eps_rel=1e-7, max_iter=50000, time_limit_s=0.0)
    ctrl = MPCController(cfg)
    loop = bench.Loop(ctrl)
    ref = bench.CvxpyMPC(ctrl)
    ref.settings.update(eps_abs=1e-7, eps_rel=1e-7, max_iter=50000)
    compared = 0
    for _ in range(25):
        res = ctrl.step(*loop.inputs())
        if res.mode == Mode.OPTIMAL:
            ref.load()
            v, om, status = ref.step()
            assert status == "optimal"
            assert v == pytest.approx(res.v, abs=1e-4) and om == pytest.approx(res.omega, abs=1e-4)
            compared += 1
        loop.advance(res.v, res.omega, res.mode)
    assert compared >= 20


def test_benchmark_main_writes_json(tmp_path, monkeypatch):
    out = tmp_path / "b.json"
    monkeypatch.setattr(bench, "noise_probe", lambda n=2000: bench._percentiles([1e-4] * 3))
    assert bench.main(["--horizons", "10", "--steps", "60", "--cvxpy-steps", "5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    row = data["rows"][0]
    assert data["machine"]["cores"] >= 1 and row["horizon"] == 10 and row["cvxpy_dpp_osqp"]["n"] == 5
    assert row["ours"]["n"] == 60 and np.isfinite(row["speedup_median"])

"""The regression gate flags a real 2x slowdown, passes identical runs, and does not fail on a blip."""

import json
from pathlib import Path

import pytest

from intent_perf_ros.bench import perf


def fake_group(ratios: list[dict[str, float]]):
    """A measure_group that returns the next set of (time-like) figures on each call, for every group."""
    calls = iter(ratios)

    def measure_group(group: str, short: bool) -> dict[str, perf.Figure]:
        values = next(calls)
        return {f"{group}.{k}": perf.figure(v, "us", 1.0) for k, v in values.items()}

    return measure_group


BASE = {"step_us": 100.0, "update_us": 50.0}


def baseline_of(values: dict[str, float], group: str = "mpc") -> dict[str, dict]:
    return {f"{group}.{k}": {"ratio": v, "lower_is_better": True} for k, v in values.items()}


def test_identical_runs_pass():
    _, verdicts = perf.gate(["mpc"], False, 1, 2, baseline_of(BASE), 0.05, {}, fake_group([BASE] * 3))
    assert [v.status for v in verdicts] == ["ok", "ok"]


def test_two_times_slower_is_a_regression_after_confirmation():
    slow = {"step_us": 200.0, "update_us": 50.0}
    _, verdicts = perf.gate(["mpc"], False, 1, 2, baseline_of(BASE), 0.05, {}, fake_group([slow] * 3))
    status = {v.name: v.status for v in verdicts}
    assert status == {"mpc.step_us": "regressed", "mpc.update_us": "ok"}
    assert next(v for v in verdicts if v.name == "mpc.step_us").change == pytest.approx(1.0)


def test_a_blip_is_re_measured_and_passes():
    slow = {"step_us": 200.0, "update_us": 50.0}
    _, verdicts = perf.gate(["mpc"], False, 1, 2, baseline_of(BASE), 0.05, {}, fake_group([slow, BASE]))
    assert all(v.status == "ok" for v in verdicts)


def test_normalisation_cancels_a_uniformly_slower_machine():
    # Everything, the reference included, takes twice as long: the ratios do not move.
    fast, slow = perf.figure(100.0, "us", 1.0), perf.figure(200.0, "us", 2.0)
    rate_fast, rate_slow = perf.figure(1000.0, "1/s", 1.0, False), perf.figure(500.0, "1/s", 2.0, False)
    assert fast.ratio == slow.ratio and rate_fast.ratio == rate_slow.ratio
    base = {
        "x.t_us": {"ratio": fast.ratio, "lower_is_better": True},
        "x.rate_per_s": {"ratio": rate_fast.ratio, "lower_is_better": False},
    }
    verdicts = perf.compare({"x.t_us": slow, "x.rate_per_s": rate_slow}, base, 0.05, {})
    assert [v.status for v in verdicts] == ["ok", "ok"]
    half_rate = perf.figure(500.0, "1/s", 1.0, False)
    assert perf.compare({"x.rate_per_s": half_rate}, base, 0.05, {})[0].status == "regressed"


def test_per_figure_tolerance_and_statuses():
    current = {
        "mpc.step_us": perf.figure(130.0, "us", 1.0),
        "mpc.new_us": perf.figure(1.0, "us", 1.0),
        "mpc.update_us": perf.figure(40.0, "us", 1.0),
    }
    base = baseline_of({**BASE, "gone_us": 5.0})
    status = {
        v.name: v.status for v in perf.compare(current, base, 0.05, {"mpc.step_us": 0.5, "mpc.*": 0.01})
    }
    assert status == {
        "mpc.step_us": "ok",
        "mpc.new_us": "new",
        "mpc.update_us": "improved",
        "mpc.gone_us": "missing",
    }
    assert perf.tolerance_of("mpc.other_us", {"mpc.*": 0.3}, 0.05) == 0.3
    assert perf.tolerance_of("gp.x_us", {"mpc.*": 0.3}, 0.05) == 0.05


def test_micro_benchmark_figures_are_ours_not_the_references(monkeypatch):
    mpc = {
        "rows": [
            {
                "horizon": 20,
                "ours": {"median_us": 90.0},
                "cvxpy_dpp_osqp": {"median_us": 9000.0},
                "fallback_shifted_plan": {"median_us": 4.0},
            }
        ]
    }
    gp = {
        "predict": [
            {"n_train": 1000, "n_queries": 1, "ours_us": 80.0, "sklearn_us": 400.0, "sparse300_us": 9.0}
        ],
        "update": {"update_us": 1500.0, "refit_us": 300000.0},
    }
    belief = {
        "particle": {"numba": {"median_us": 700.0}, "numpy": {"median_us": 6000.0}},
        "bayes": {"numba": {"median_us": 35.0}, "numpy": {"median_us": 100.0}},
    }
    outputs = {"mpc": mpc, "gp": gp, "belief": belief}

    class FakeModule:
        def __init__(self, group):
            self.group = group

        def main(self, argv):
            Path(argv[argv.index("--json") + 1]).write_text(json.dumps(outputs[self.group]))
            return 0

    monkeypatch.setattr(
        perf.importlib, "import_module", lambda name: FakeModule(name.rsplit(".", 1)[-1].split("_")[0])
    )
    monkeypatch.setattr(perf, "reference_ms", lambda: 2.0)
    assert {n: f.ratio for n, f in perf.measure_micro("mpc", True).items()} == {
        "mpc.h20.step_median_us": 45.0,
        "mpc.h20.fallback_shifted_plan_median_us": 2.0,
    }
    assert set(perf.measure_micro("gp", True)) == {
        "gp.n1000_m1.predict_us",
        "gp.n1000_m1.sparse300_us",
        "gp.update.one_point_us",
    }
    assert set(perf.measure_micro("belief", False)) == {
        "belief.particle.update_median_us",
        "belief.bayes.update_median_us",
    }


def test_baseline_file_round_trip_and_update(tmp_path):
    path = tmp_path / "baseline.json"
    figures = {"mpc.step_us": perf.figure(100.0, "us", 1.0)}
    perf.save_baseline(path, "short", figures, {"mpc.step_us": 0.2})
    loaded, tolerances = perf.load_baseline(path, "short")
    assert loaded["mpc.step_us"]["ratio"] == 100.0 and tolerances == {"mpc.step_us": 0.2}
    perf.save_baseline(path, "short", {"mpc.step_us": perf.figure(80.0, "us", 1.0)}, {})
    assert perf.load_baseline(path, "short")[0]["mpc.step_us"]["ratio"] == 80.0
    assert perf.load_baseline(path, "short")[1] == {"mpc.step_us": 0.2}
    with pytest.raises(ValueError, match="--write-baseline"):
        perf.load_baseline(path, "full")
    assert json.loads(path.read_text())["schema"] == 1


def test_reference_is_stable_enough_to_normalise():
    runs = [perf.reference_ms(repeats=7) for _ in range(3)]
    assert max(runs) / min(runs) < 2.0

"""``intent-perf load``: a tiny real sweep produces the JSON, table and plot; the saturation and
recommendation rules are checked on hand-made points (they must come from measured points only)."""
from __future__ import annotations

import json
import math

import pytest

from intent_perf_ros.bench import load

SATURATION_KEYS = {"saturated", "point", "reasons", "max_sustained", "note"}
RECOMMENDATION_KEYS = {"target_humans", "target_rate_hz", "target_p95_ms", "met", "layout", "shards", "backend",
                       "degradation", "evidence", "why"}


def point(shards: int, humans: int, rate: float, p95: float, lost: int = 0, target_ms: float = 10.0,
          composed: bool = False) -> dict:
    """A sweep point as ``point_result`` makes it from a bench result."""
    result = {
        "observations": {"sent": 10, "answered": 10, "unanswered": 0},
        "e2e_ms": {"count": 10, "p50": p95 / 2, "p95": p95, "p99": p95 * 1.2, "max": p95 * 1.5},
        "throughput_predictions_per_s": humans * rate,
        "throughput_observations_per_s": rate,
        "lost_messages": lost,
        "topics": {"intent/predictions": {"lost": lost}},
        "cpu_percent": {"mpc_node": 10.0},
        "rss_mb": {"mpc_node": 200.0},
        "rss_total_mb": 200.0,
        "startup_s": 1.0,
        "node_extra": {"gp_inference_node": {"gp.backend": "constant_velocity", "degradation.level": "0"}},
        "exit_codes": {},
    }
    return load.point_result(result, shards, humans, rate, target_ms, composed)


def test_saturation_is_the_first_failing_point_by_load():
    points = [point(1, 10, 30, 3.0), point(1, 50, 30, 12.0), point(1, 10, 60, 4.0), point(1, 1, 10, 1.0),
              point(1, 100, 30, 8.0, lost=3)]
    sat = load.saturation(points)["1"]
    # By offered load: 1x10, 10x30, 10x60 pass; 50x30 (1500/s) is the first over the P95 target.
    assert sat["saturated"] and sat["point"] == {"humans": 50, "rate_hz": 30, "offered_humans_per_s": 1500}
    assert sat["max_sustained"]["offered_humans_per_s"] == 600
    assert any("P95" in r for r in sat["reasons"])
    clean = load.saturation([point(2, 1, 10, 1.0)])["2"]
    assert not clean["saturated"] and clean["point"] is None and "not saturated" in clean["note"]


def test_recommendation_takes_the_fewest_passing_shards_and_never_extrapolates():
    points = [point(1, 100, 30, 25.0), point(2, 100, 30, 9.0), point(3, 100, 30, 5.0)]
    rec = load.recommend(points, 100, 30.0, 10.0)
    assert rec["met"] and rec["shards"] == 2 and rec["backend"] == "constant_velocity"
    assert set(rec) == RECOMMENDATION_KEYS
    assert not load.recommend(points, 200, 30.0, 10.0)["met"]  # 200 humans were not measured
    failing = load.recommend([point(1, 100, 30, 25.0), point(2, 100, 30, 4.0, lost=2)], 100, 30.0, 10.0)
    assert not failing["met"] and "no measured layout met" in failing["why"]


def test_composed_is_its_own_layout_and_preferred_when_it_passes():
    points = [point(1, 100, 30, 12.0), point(2, 100, 30, 9.0), point(1, 100, 30, 6.0, composed=True)]
    assert set(load.saturation(points)) == {"1", "2", "composed"}
    assert load.saturation(points)["1"]["saturated"] and not load.saturation(points)["composed"]["saturated"]
    rec = load.recommend(points, 100, 30.0, 10.0)
    assert rec["met"] and rec["layout"] == "composed" and rec["shards"] == 1  # one process beats two shards
    slow = [point(1, 100, 30, 12.0), point(2, 100, 30, 9.0), point(1, 100, 30, 11.0, composed=True)]
    assert load.recommend(slow, 100, 30.0, 10.0)["layout"] == "2"


def test_truncated_humans_fail_the_point():
    p = point(1, 100, 30, 2.0)
    assert p["ok"]
    truncated = load.point_result({**_raw(), "throughput_predictions_per_s": 64 * 30.0}, 1, 100, 30.0, 10.0)
    assert not truncated["ok"] and "humans predicted" in truncated["reasons"][0]


def _raw() -> dict:
    return {
        "observations": {"sent": 10, "answered": 10, "unanswered": 0},
        "e2e_ms": {"count": 10, "p50": 1.0, "p95": 2.0, "p99": 2.0, "max": 2.0},
        "throughput_predictions_per_s": 0.0, "throughput_observations_per_s": 30.0, "lost_messages": 0,
        "topics": {}, "cpu_percent": {}, "rss_mb": {}, "rss_total_mb": 0.0, "startup_s": 1.0,
    }


@pytest.mark.system
def test_tiny_sweep_writes_json_table_and_plot(tmp_path, capfd):
    out, png = tmp_path / "load.json", tmp_path / "load.png"
    code = load.main([
        "--shards", "1", "--humans", "1", "5", "--rate", "10", "--duration", "2",
        "--param", f"gp_inference_node:dataset_dir={tmp_path / 'no_data'}",
        "--param", f"gp_inference_node:model_cache_dir={tmp_path / 'models'}",
        "--work-dir", str(tmp_path / "work"), "--json", str(out), "--plot", str(png),
    ])
    assert code == 0
    result = json.loads(out.read_text())
    assert {"settings", "machine", "wall_s", "points", "saturation", "recommendation"} <= set(result)
    assert [(p["humans"], p["rate_hz"], p["shards"]) for p in result["points"]] == [(1, 10.0, 1), (5, 10.0, 1)]
    for p in result["points"]:
        assert set(load.POINT_KEYS) <= set(p)
        assert p["observations"]["sent"] == 20 and p["observations"]["answered"] > 0
        assert math.isfinite(p["e2e_ms"]["p95"]) and p["e2e_ms"]["p95"] > 0
        assert p["throughput_predictions_per_s"] > 0
        assert {"gp_inference_node", "belief_node", "mpc_node"} <= set(p["cpu_percent"]) & set(p["rss_mb"])
    assert result["points"][1]["humans_per_observation"] == pytest.approx(5.0, abs=0.01)
    sat = result["saturation"]["1"]
    assert set(sat) == SATURATION_KEYS
    assert sat["saturated"] == (sat["point"] is not None)  # None only when not saturated, and then said so
    if not sat["saturated"]:
        assert sat["note"] == "not saturated within the measured grid"
    assert set(result["recommendation"]) == RECOMMENDATION_KEYS
    assert not result["recommendation"]["met"]  # 100 humans at 30 Hz was not measured: no extrapolation
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capfd.readouterr().out
    assert "layout humans" in table and "recommendation for 100 humans at 30 Hz" in table

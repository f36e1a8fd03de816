"""Monitor logic: levels change at the thresholds, STALE after silence, names and keys."""
import dataclasses

import pytest

from intent_perf_ros.core.health import (
    ASPECTS,
    PIPELINE_STATUS,
    HealthModel,
    Level,
    NodeSnapshot,
    Thresholds,
    interval_error_rate,
    level_for,
)

NODES = ("belief_node", "gp_inference_node", "mpc_node")


def _by_name(reports):
    return {r.name: r for r in reports}


def _model(**thresholds) -> HealthModel:
    return HealthModel(Thresholds(**thresholds), hardware_id="robot-1", expected_nodes=NODES)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, Level.OK), (10.0, Level.OK), (10.001, Level.WARN), (50.0, Level.WARN), (50.001, Level.ERROR)],
)
def test_level_for_changes_just_above_each_limit(value, expected):
    assert level_for(value, 10.0, 50.0) == expected


@pytest.mark.parametrize(
    ("field", "aspect", "values"),
    [
        ("callback_p95_ms", "latency", (9.9, 10.5, 51.0)),
        ("rss_mb", "memory", (2000.0, 2100.0, 4100.0)),
        ("cpu_percent", "cpu", (69.0, 71.0, 91.0)),
    ],
)
def test_each_aspect_goes_ok_warn_error_at_the_default_thresholds(field, aspect, values):
    for value, expected in zip(values, (Level.OK, Level.WARN, Level.ERROR), strict=True):
        model = _model()
        model.update(NodeSnapshot("gp_inference_node", **{field: value}), now=1.0)
        report = _by_name(model.reports(now=1.5))[f"gp_inference_node: {aspect}"]
        assert report.level == expected, (field, value, report.message)
        assert report.hardware_id == "robot-1"


def test_error_rate_uses_the_interval_since_the_previous_snapshot():
    model = _model()
    model.update(NodeSnapshot("belief_node", msgs_in=1000, dropped=0, errors=0), now=1.0)
    assert _by_name(model.reports(1.0))["belief_node: errors"].level == Level.OK
    # 2 bad out of the next 1000: 0.2 % -> WARN
    model.update(NodeSnapshot("belief_node", msgs_in=2000, dropped=1, errors=1, repaired=500), now=2.0)
    report = _by_name(model.reports(2.0))["belief_node: errors"]
    assert report.level == Level.WARN
    assert dict(report.values)["error_rate_percent"] == "0.200"
    # 20 bad out of the next 1000: 2 % -> ERROR; then a clean interval recovers
    model.update(NodeSnapshot("belief_node", msgs_in=3000, dropped=12, errors=10), now=3.0)
    assert _by_name(model.reports(3.0))["belief_node: errors"].level == Level.ERROR
    model.update(NodeSnapshot("belief_node", msgs_in=4000, dropped=12, errors=10), now=4.0)
    assert _by_name(model.reports(4.0))["belief_node: errors"].level == Level.OK


def test_interval_error_rate_after_a_restart_uses_the_new_totals():
    before = NodeSnapshot("n", msgs_in=5000, dropped=3)
    restarted = NodeSnapshot("n", msgs_in=100, dropped=1, errors=1)
    assert interval_error_rate(before, restarted) == pytest.approx(0.02)
    assert interval_error_rate(None, NodeSnapshot("n")) == 0.0


def test_node_goes_stale_after_the_timeout_and_back_when_it_reports():
    model = _model(stale_after_s=3.0)
    for node in NODES:
        model.update(NodeSnapshot(node, e2e_p95_ms=5.0), now=10.0)
    assert all(r.level == Level.OK for r in model.reports(now=13.0))
    reports = _by_name(model.reports(now=13.5))
    for aspect in ASPECTS:
        assert reports[f"mpc_node: {aspect}"].level == Level.STALE
        assert "last received at t=10.000 s" in reports[f"mpc_node: {aspect}"].message
    assert reports[PIPELINE_STATUS].level == Level.STALE
    model.update(NodeSnapshot("mpc_node", e2e_p95_ms=5.0), now=13.6)
    reports = _by_name(model.reports(now=13.7))
    assert reports["mpc_node: latency"].level == Level.OK
    assert reports[PIPELINE_STATUS].level == Level.OK
    assert reports["belief_node: latency"].level == Level.STALE  # silent since t=10


def test_expected_node_never_heard_from_is_stale():
    reports = _by_name(_model().reports(now=0.0))
    assert reports["belief_node: latency"].level == Level.STALE
    assert reports["belief_node: latency"].message == "no statistics received yet"
    assert reports[PIPELINE_STATUS].level == Level.STALE


def test_names_keys_and_pipeline_figures():
    model = _model(e2e_warn_ms=20.0, e2e_error_ms=80.0)
    snapshot = NodeSnapshot(
        "mpc_node", window_s=1.0, callback_p95_ms=4.0, e2e_p50_ms=12.0, e2e_p95_ms=25.0,
        msgs_in=10, rss_mb=300.0, cpu_percent=20.0, extra={"pool_misses_count": "0"},
    )
    model.update(snapshot, now=0.0)
    reports = model.reports(now=0.5)
    names = [r.name for r in reports]
    expected = [f"{n}: {a}" for n in NODES for a in ASPECTS] + [PIPELINE_STATUS]
    assert names == expected
    by_name = _by_name(reports)
    latency = dict(by_name["mpc_node: latency"].values)
    assert latency["callback_p95_ms"] == "4.000"
    assert latency["e2e_p50_ms"] == "12.000"
    assert {"window_s", "callback_max_ms", "e2e_p99_ms"} <= latency.keys()
    assert dict(by_name["mpc_node: memory"].values) == {"rss_mb": "300.000"}
    assert by_name["mpc_node: details"].values == [("pool_misses_count", "0")]
    assert by_name["mpc_node: details"].level == Level.OK
    assert {"msgs_in_count", "dropped_count", "repaired_count", "rate_in_hz"} <= dict(
        by_name["mpc_node: errors"].values
    ).keys()
    pipeline = by_name[PIPELINE_STATUS]
    assert pipeline.level == Level.WARN  # 25 ms p95 > 20 ms warn
    assert "25.0 ms" in pipeline.message
    assert dict(pipeline.values)["e2e_p95_ms"] == "25.000"


def test_thresholds_validate_and_list_their_parameters():
    with pytest.raises(ValueError, match="latency warn"):
        Thresholds(latency_warn_ms=60.0, latency_error_ms=50.0)
    with pytest.raises(ValueError, match="stale_after_s"):
        Thresholds(stale_after_s=0.0)
    assert Thresholds.field_names() == tuple(f.name for f in dataclasses.fields(Thresholds))
    assert {"latency_warn_ms", "stale_after_s", "e2e_error_ms"} <= set(Thresholds.field_names())

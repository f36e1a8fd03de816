"""The Prometheus endpoint serves the node figures on loopback (ephemeral port)."""
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from intent_perf_ros.core.health import NodeSnapshot
from intent_perf_ros.monitoring.prometheus_exporter import PrometheusExporter


@pytest.fixture
def exporter():
    exp = PrometheusExporter(port=0)
    exp.start()
    yield exp
    exp.stop()


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_scrape_serves_gauges_counters_and_histograms(exporter):
    exporter.update(NodeSnapshot("mpc_node", callback_p95_ms=4.0, e2e_p95_ms=12.0, e2e_max_ms=30.0,
                                 msgs_in=100, dropped=2, rss_mb=250.0, cpu_percent=35.0, rate_in_hz=10.0))
    exporter.update(NodeSnapshot("mpc_node", callback_p95_ms=60.0, e2e_p95_ms=8.0, msgs_in=200, dropped=3,
                                 rss_mb=260.0))
    exporter.update(NodeSnapshot("belief_node", callback_p50_ms=1.5))
    m = _scrape(exporter.port)
    node = (("node", "mpc_node"),)
    assert m[("intent_perf_msgs_in_total", node)] == 200  # the newest snapshot's totals
    assert m[("intent_perf_dropped_total", node)] == 3
    assert m[("intent_perf_resident_memory_megabytes", node)] == 260.0
    assert m[("intent_perf_callback_latency_ms", (("node", "mpc_node"), ("quantile", "0.95")))] == 60.0
    assert m[("intent_perf_callback_latency_ms", (("node", "belief_node"), ("quantile", "0.5")))] == 1.5
    # one observation per snapshot: p95 of 4 ms and of 60 ms
    assert m[("intent_perf_callback_p95_ms_count", node)] == 2
    assert m[("intent_perf_callback_p95_ms_bucket", (("le", "10.0"), ("node", "mpc_node")))] == 1
    assert m[("intent_perf_callback_p95_ms_bucket", (("le", "50.0"), ("node", "mpc_node")))] == 1
    assert m[("intent_perf_e2e_p95_ms_bucket", (("le", "10.0"), ("node", "mpc_node")))] == 1
    assert m[("intent_perf_e2e_p95_ms_sum", node)] == 20.0


def test_stop_releases_the_port_and_start_twice_is_an_error(exporter):
    port = exporter.port
    with pytest.raises(RuntimeError, match="already started"):
        exporter.start()
    exporter.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    with pytest.raises(RuntimeError, match="start"):
        _ = exporter.port
    exporter.stop()  # idempotent


def test_port_is_validated():
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        PrometheusExporter(port=70000)

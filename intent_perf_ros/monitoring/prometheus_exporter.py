"""A Prometheus endpoint with the figures monitor_node receives from every node.

Off by default (monitor_node starts it when its ``prometheus_port`` parameter is set). The
latest NodeStats of each node is served as gauges and counters built at scrape time, so a
scrape sees one consistent message per node. The percentiles arrive already computed, so raw
latencies cannot be re-binned; instead each period's P95 is observed into a histogram, whose
buckets answer fleet questions such as "what fraction of seconds had P95 above 10 ms".
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from intent_perf_ros.core.health import NodeSnapshot

PREFIX = "intent_perf"
# Edges around the design's limits (10 ms WARN, 50 ms ERROR) so both are bucket boundaries.
P95_BUCKETS_MS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
_QUANTILES: tuple[tuple[str, str], ...] = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"), ("1", "max"))
_COUNTERS: tuple[tuple[str, str], ...] = (
    ("msgs_in", "Messages received"),
    ("msgs_out", "Messages published"),
    ("dropped", "Inputs rejected"),
    ("repaired", "Inputs repaired and used"),
    ("errors", "Callbacks that raised (caught) or fell back"),
)
_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("rate_in_hz", "rate_in_hertz", "Input message rate over the last statistics period"),
    ("rate_out_hz", "rate_out_hertz", "Output message rate over the last statistics period"),
    ("rss_mb", "resident_memory_megabytes", "Resident set size of the node process (MiB)"),
    ("cpu_percent", "cpu_percent", "CPU use of the node process, percent of one core"),
    ("window_s", "stats_window_seconds", "Seconds covered by the latency percentiles"),
)


class _LatestSnapshots(Collector):
    """Builds gauge and counter families from the newest snapshot of each node at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, NodeSnapshot] = {}

    def put(self, snapshot: NodeSnapshot) -> None:
        with self._lock:
            self._latest[snapshot.node_name] = snapshot

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshots = [asdict(s) for s in self._latest.values()]
        for kind, what in (("callback", "Callback latency"), ("e2e", "Observation-to-output latency")):
            family = GaugeMetricFamily(
                f"{PREFIX}_{kind}_latency_ms", f"{what} percentiles over the statistics window (ms)",
                labels=["node", "quantile"],
            )
            for s in snapshots:
                for quantile, label in _QUANTILES:
                    family.add_metric([s["node_name"], quantile], s[f"{kind}_{label}_ms"])
            yield family
        for field, help_text in _COUNTERS:
            counter = CounterMetricFamily(f"{PREFIX}_{field}", help_text, labels=["node"])
            for s in snapshots:
                counter.add_metric([s["node_name"]], s[field])
            yield counter
        for field, name, help_text in _GAUGES:
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=["node"])
            for s in snapshots:
                gauge.add_metric([s["node_name"]], s[field])
            yield gauge


class PrometheusExporter:
    """Serves ``/metrics`` on ``address:port`` from its own registry (port 0 picks a free one)."""

    def __init__(self, port: int, address: str = "127.0.0.1") -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535 (0 picks a free port), got {port}")
        self._requested_port = port
        self._address = address
        self._registry = CollectorRegistry(auto_describe=True)
        self._latest = _LatestSnapshots()
        self._registry.register(self._latest)
        self._p95 = {
            kind: Histogram(
                f"{PREFIX}_{kind}_p95_ms", f"{what} P95 of each statistics period (ms)",
                labelnames=["node"], buckets=P95_BUCKETS_MS, registry=self._registry,
            )
            for kind, what in (("callback", "Callback latency"), ("e2e", "Observation-to-output latency"))
        }
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port served (the chosen one when constructed with 0); valid after :meth:`start`."""
        if self._server is None:
            raise RuntimeError("exporter not started: call start() first")
        return self._server.server_address[1]

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("exporter already started; stop() it before starting again")
        self._server, self._thread = start_http_server(
            self._requested_port, addr=self._address, registry=self._registry
        )

    def update(self, snapshot: NodeSnapshot) -> None:
        """Publish a node's newest statistics (call once per NodeStats message)."""
        self._latest.put(snapshot)
        self._p95["callback"].labels(node=snapshot.node_name).observe(snapshot.callback_p95_ms)
        self._p95["e2e"].labels(node=snapshot.node_name).observe(snapshot.e2e_p95_ms)

    def stop(self) -> None:
        """Close the socket and end the server thread; safe to call when not started."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._server = None
        self._thread = None

"""The monitor's judgement, free of ROS: node statistics in, diagnostic statuses out.

monitor_node feeds every NodeStats message to :meth:`HealthModel.update` and converts
:meth:`HealthModel.reports` into a ``diagnostic_msgs/DiagnosticArray``; keeping the thresholds,
levels and staleness here makes them testable without a ROS graph.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import IntEnum

from intent_perf_ros.core.stats import PERCENTILE_LABELS


class Level(IntEnum):
    """``diagnostic_msgs/DiagnosticStatus`` levels (the message stores them as one byte)."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class Thresholds:
    """Warn and error limits; a value equal to a limit stays at the lower level.

    The end-to-end limits apply to the pipeline status and default to the per-callback ones, as
    the design states one latency budget; raise them when transport between nodes is slow.
    """

    latency_warn_ms: float = 10.0
    latency_error_ms: float = 50.0
    rss_warn_mb: float = 2048.0
    rss_error_mb: float = 4096.0
    cpu_warn_percent: float = 70.0
    cpu_error_percent: float = 90.0
    error_rate_warn: float = 0.001
    error_rate_error: float = 0.01
    stale_after_s: float = 3.0
    e2e_warn_ms: float = 10.0
    e2e_error_ms: float = 50.0

    def __post_init__(self) -> None:
        pairs = {
            "latency": (self.latency_warn_ms, self.latency_error_ms),
            "rss": (self.rss_warn_mb, self.rss_error_mb),
            "cpu": (self.cpu_warn_percent, self.cpu_error_percent),
            "error_rate": (self.error_rate_warn, self.error_rate_error),
            "e2e": (self.e2e_warn_ms, self.e2e_error_ms),
        }
        for name, (warn, error) in pairs.items():
            if not 0.0 <= warn <= error:
                raise ValueError(f"need 0 <= {name} warn ({warn}) <= {name} error ({error}); fix the limits")
        if self.stale_after_s <= 0.0:
            raise ValueError(f"stale_after_s must be > 0 s, got {self.stale_after_s}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names monitor_node declares as parameters, one per threshold."""
        return tuple(f.name for f in fields(cls))


@dataclass
class NodeSnapshot:
    """One NodeStats message as plain Python (counters are totals since the node started)."""

    node_name: str
    window_s: float = 0.0
    callback_p50_ms: float = 0.0
    callback_p95_ms: float = 0.0
    callback_p99_ms: float = 0.0
    callback_max_ms: float = 0.0
    e2e_p50_ms: float = 0.0
    e2e_p95_ms: float = 0.0
    e2e_p99_ms: float = 0.0
    e2e_max_ms: float = 0.0
    msgs_in: int = 0
    msgs_out: int = 0
    dropped: int = 0
    repaired: int = 0
    errors: int = 0
    rate_in_hz: float = 0.0
    rate_out_hz: float = 0.0
    rss_mb: float = 0.0
    cpu_percent: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class StatusReport:
    """One ``DiagnosticStatus``: keys of ``values`` carry their unit (``callback_p95_ms``)."""

    name: str
    level: int
    message: str
    hardware_id: str
    values: list[tuple[str, str]]


# "details" carries the node's own ``extra`` figures (per-topic counts, solver and pool
# statistics) at level OK: they have no common threshold, but belong beside the judged aspects.
ASPECTS: tuple[str, ...] = ("latency", "memory", "cpu", "errors", "details")
PIPELINE_STATUS = "pipeline: end-to-end latency"


def level_for(value: float, warn: float, error: float) -> Level:
    """ERROR above ``error``, WARN above ``warn``, OK otherwise."""
    if value > error:
        return Level.ERROR
    if value > warn:
        return Level.WARN
    return Level.OK


@dataclass
class _NodeRecord:
    snapshot: NodeSnapshot
    received_at: float
    error_rate: float


def interval_error_rate(previous: NodeSnapshot | None, current: NodeSnapshot) -> float:
    """(dropped + errors) / max(msgs_in, 1) over the interval since the previous snapshot.

    Per interval rather than lifetime so that an early burst does not stay red forever and a
    new burst after hours of clean running is not diluted away. Repaired inputs were used, so
    they do not count. Counters that went backwards mean the node restarted: its totals then
    are the interval.
    """
    bad = current.dropped + current.errors
    received = current.msgs_in
    if previous is not None and received >= previous.msgs_in and bad >= previous.dropped + previous.errors:
        bad -= previous.dropped + previous.errors
        received -= previous.msgs_in
    return bad / max(received, 1)


class HealthModel:
    """Latest statistics per node and the diagnostic statuses they imply.

    A node not heard from within ``stale_after_s`` (or an expected node never heard from) has
    all its statuses STALE, so a killed node cannot leave a stale green light in rqt.
    """

    def __init__(
        self,
        thresholds: Thresholds,
        hardware_id: str,
        pipeline_node: str = "mpc_node",
        expected_nodes: Iterable[str] = (),
    ) -> None:
        self._thresholds = thresholds
        self._hardware_id = hardware_id
        self._pipeline_node = pipeline_node
        self._expected = tuple(expected_nodes)
        self._records: dict[str, _NodeRecord] = {}

    def update(self, snapshot: NodeSnapshot, now: float) -> None:
        """Record a node's statistics received at ``now`` (seconds, the clock ``reports`` uses)."""
        previous = self._records.get(snapshot.node_name)
        rate = interval_error_rate(previous.snapshot if previous else None, snapshot)
        self._records[snapshot.node_name] = _NodeRecord(snapshot, now, rate)

    def reports(self, now: float) -> list[StatusReport]:
        """Statuses of every known or expected node (sorted by name), then the pipeline's."""
        out: list[StatusReport] = []
        for node in sorted(set(self._records) | set(self._expected)):
            record = self._records.get(node)
            stale = self._stale_message(record, now)
            if stale is not None:
                out.extend(self._status(f"{node}: {aspect}", Level.STALE, stale, []) for aspect in ASPECTS)
                continue
            out.extend(self._node_reports(record))
        out.append(self._pipeline_report(now))
        return out

    def _stale_message(self, record: _NodeRecord | None, now: float) -> str | None:
        if record is None:
            return "no statistics received yet"
        age = now - record.received_at
        if age > self._thresholds.stale_after_s:
            return f"no statistics for {age:.1f} s (last received at t={record.received_at:.3f} s)"
        return None

    def _node_reports(self, record: _NodeRecord) -> list[StatusReport]:
        s, t, node = record.snapshot, self._thresholds, record.snapshot.node_name
        latency = level_for(s.callback_p95_ms, t.latency_warn_ms, t.latency_error_ms)
        memory = level_for(s.rss_mb, t.rss_warn_mb, t.rss_error_mb)
        cpu = level_for(s.cpu_percent, t.cpu_warn_percent, t.cpu_error_percent)
        errors = level_for(record.error_rate, t.error_rate_warn, t.error_rate_error)
        return [
            self._status(
                f"{node}: latency", latency,
                _message(
                    "callback p95", s.callback_p95_ms, "ms", latency, t.latency_warn_ms, t.latency_error_ms
                ),
                [
                    ("window_s", _fmt(s.window_s)),
                    *_percentile_values("callback", s),
                    *_percentile_values("e2e", s),
                ],
            ),
            self._status(
                f"{node}: memory", memory,
                _message("RSS", s.rss_mb, "MB", memory, t.rss_warn_mb, t.rss_error_mb),
                [("rss_mb", _fmt(s.rss_mb))],
            ),
            self._status(
                f"{node}: cpu", cpu,
                _message("CPU", s.cpu_percent, "% of one core", cpu, t.cpu_warn_percent, t.cpu_error_percent),
                [("cpu_percent", _fmt(s.cpu_percent))],
            ),
            self._status(
                f"{node}: errors", errors,
                _message(
                    "error rate", 100.0 * record.error_rate, "%", errors,
                    100.0 * t.error_rate_warn, 100.0 * t.error_rate_error, digits=3,
                ),
                [
                    ("error_rate_percent", _fmt(100.0 * record.error_rate)),
                    ("msgs_in_count", str(s.msgs_in)),
                    ("msgs_out_count", str(s.msgs_out)),
                    ("dropped_count", str(s.dropped)),
                    ("repaired_count", str(s.repaired)),
                    ("errors_count", str(s.errors)),
                    ("rate_in_hz", _fmt(s.rate_in_hz)),
                    ("rate_out_hz", _fmt(s.rate_out_hz)),
                ],
            ),
            self._status(
                f"{node}: details", Level.OK, f"{len(s.extra)} node-specific figures", sorted(s.extra.items())
            ),
        ]

    def _pipeline_report(self, now: float) -> StatusReport:
        record = self._records.get(self._pipeline_node)
        stale = self._stale_message(record, now)
        if stale is not None:
            return self._status(PIPELINE_STATUS, Level.STALE, f"{self._pipeline_node}: {stale}", [])
        s, t = record.snapshot, self._thresholds
        level = level_for(s.e2e_p95_ms, t.e2e_warn_ms, t.e2e_error_ms)
        return self._status(
            PIPELINE_STATUS, level,
            _message("observation to command p95", s.e2e_p95_ms, "ms", level, t.e2e_warn_ms, t.e2e_error_ms),
            [("measured_at_node", self._pipeline_node), *_percentile_values("e2e", s)],
        )

    def _status(self, name: str, level: Level, message: str, values: list[tuple[str, str]]) -> StatusReport:
        return StatusReport(name=name, level=int(level), message=message, hardware_id=self._hardware_id,
                            values=values)


def _percentile_values(prefix: str, s: NodeSnapshot) -> list[tuple[str, str]]:
    return [(f"{prefix}_{label}_ms", _fmt(getattr(s, f"{prefix}_{label}_ms"))) for label in PERCENTILE_LABELS]


def _message(
    what: str, value: float, unit: str, level: Level, warn: float, error: float, digits: int = 1
) -> str:
    text = f"{what} {value:.{digits}f} {unit}"
    if level == Level.ERROR:
        return f"{text} above the error limit {error:g}"
    if level == Level.WARN:
        return f"{text} above the warning limit {warn:g}"
    return text


def _fmt(value: float) -> str:
    return f"{value:.3f}"

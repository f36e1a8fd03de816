"""``intent-perf bench BAG``: replay a bag through the four nodes and measure them.

Starts the node processes (or, with ``--attach``, uses a stack that already runs), replays the bag
at ``--rate`` (1.0 = recorded pace, 5 = five times faster, ``max`` = as fast as the stack answers)
and records every output. Reports observation-to-command latency (percentiles and per stage),
throughput in human predictions per second, published vs received messages per topic, RSS and CPU
per node over time, misses of the 10 ms deadline and, at rate 1, prediction error against the
bag's ground truth. See ``replay.py`` for how latency is measured (restamped inputs).

Soak mode (``--duration SECONDS``): the bag is replayed in a loop for that long, with a pause longer
than the nodes' track timeout between loops; the recording is summarised as it goes (bounded memory)
and the JSON gains a ``soak`` section: RSS drift per node after a warm-up, lost commands, and
end-to-end percentiles per time slice.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import rclpy
import yaml
from rclpy.context import Context
from rclpy.experimental import EventsExecutor
from rclpy.serialization import deserialize_message

from intent_perf_ros.bench.bags import Bag, iter_humans, parse_topic_map, read_bag
from intent_perf_ros.bench.replay import (
    BELIEF,
    HUMANS,
    PREDICTIONS,
    LatencyDigest,
    Recording,
    Replayer,
    Reservoir,
    find_node_pids,
    play,
)
from intent_perf_ros.msg import IntentPredictionArray
from intent_perf_ros.runner import (
    COMPOSED,
    NODES,
    NodeProcesses,
    default_params_file,
    expand_shards,
    hosted_nodes,
    process_names,
)

STACK_NODES = ("gp_inference_node", "belief_node", "mpc_node")
DEADLINE_MS = 10.0
# The goals on this 2-core machine (synthetic scenario, 10 humans, 30 Hz, four processes).
GOALS_REAL_TIME = {"e2e_p95_ms": 2.0, "e2e_p999_ms": 5.0, "lost_messages": 0, "rss_total_mb": 600.0}
GOAL_PREDICTIONS_PER_S_MAX = 20_000.0
# Issue 8 (endurance): after warm-up no node's RSS drifts by 5 % or more, and no command is lost.
GOALS_SOAK = {"rss_drift_percent": 5.0, "lost_commands": 0}
STAGES = ("prediction", "belief", "control")
SOAK_FOLD_PERIOD_S = 1.0  # how often a soak run summarises its recording and drops the raw records
SOAK_ANSWER_TIMEOUT_S = 5.0  # a soak observation not answered this long after it was sent is unanswered
SOAK_EDGE_S = 5.0  # RSS at the end of warm-up / of the run: median of the sampler's last 10 samples (0.5 s)
SOAK_MAX_SAMPLES = 2048  # RSS/CPU points kept per node (thinned evenly over the run)
SOAK_RESERVOIR = 20_000  # latency samples kept for the plots
LOOP_GAP_MARGIN_S = 0.5  # pause between loops beyond the longest track timeout


def summary(values_ms: list[float] | np.ndarray) -> dict[str, float]:
    """count, mean and P50/P95/P99/P99.9/max; NaN when empty (JSON null after ``finite``)."""
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        return {"count": 0, **dict.fromkeys(("mean", "p50", "p95", "p99", "p999", "max"), math.nan)}
    p50, p95, p99, p999 = np.percentile(a, [50, 95, 99, 99.9])
    return {
        "count": int(a.size),
        "mean": float(a.mean()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "p999": float(p999),
        "max": float(a.max()),
    }


@dataclass
class BenchRun:
    """The JSON result plus the per-command samples the report plots."""

    result: dict
    e2e_t_s: list[float] = field(default_factory=list)  # send time of each answered observation, from start
    e2e_ms: list[float] = field(default_factory=list)


def _extras(stats: dict) -> dict[str, dict[str, int]]:
    """Per node, the integer counters of its latest NodeStats ``extra`` (``msgs_in.<topic>`` ...)."""
    out = {}
    for node, msg in stats.items():
        values = {}
        for kv in msg.extra:
            if kv.key.startswith(("msgs_in.", "msgs_out.")):
                values[kv.key] = int(float(kv.value))
        out[node] = values
    return out


def topic_loss(
    before: dict,
    after: dict,
    published: dict[str, int],
    replayer_in: dict[str, int],
    shards: int = 1,
) -> dict:
    """Published vs received per topic during the run, from counter deltas of NodeStats.

    ``published``: what the replayer sent per input topic (None where it did not publish);
    ``replayer_in``: what the replayer received of the outputs it taps. Commands are counted as the
    answers to predictions (one per predictions message the MPC received): the stale-input
    watchdog's own commands are not messages of the chain and are excluded.

    With ``shards`` > 1 the GP and belief processes are ``<node>_<i>``: every GP shard receives every
    observation (each one is a consumer), predictions and beliefs published are summed over shards,
    a belief shard counts only its own shard's predictions as received (it ignores the others), and
    the MPC answers one command per complete cycle of ``shards`` predictions messages.
    """

    def delta(node: str, key: str) -> int:
        return after.get(node, {}).get(key, 0) - before.get(node, {}).get(key, 0)

    if shards > 1:
        gp, belief = process_names("gp_inference_node", shards), process_names("belief_node", shards)
        predictions_out = sum(delta(n, f"msgs_out.{PREDICTIONS}") for n in gp)
        mpc_predictions = delta("mpc_node", f"msgs_in.{PREDICTIONS}")
        chain = {
            "humans/tracked": (published.get("humans/tracked"), {n: delta(n, "msgs_in.humans/tracked") for n in gp}),
            "odom": (published.get("odom"), {"mpc_node": delta("mpc_node", "msgs_in.odom")}),
            "goal_pose": (published.get("goal_pose"), {"mpc_node": delta("mpc_node", "msgs_in.goal_pose")}),
            PREDICTIONS: (
                predictions_out,
                {
                    "belief_nodes": sum(delta(n, f"msgs_in.{PREDICTIONS}") for n in belief),
                    "mpc_node": mpc_predictions,
                    "bench": replayer_in[PREDICTIONS],
                },
            ),
            BELIEF: (
                sum(delta(n, f"msgs_out.{BELIEF}") for n in belief),
                {"mpc_node": delta("mpc_node", f"msgs_in.{BELIEF}"), "bench": replayer_in[BELIEF]},
            ),
            "cmd_vel": (mpc_predictions // shards, {"bench": replayer_in["cmd_vel"]}),
        }
        return _loss(chain)

    chain = {
        "humans/tracked": (
            published.get("humans/tracked"),
            {"gp_inference_node": delta("gp_inference_node", "msgs_in.humans/tracked")},
        ),
        "odom": (published.get("odom"), {"mpc_node": delta("mpc_node", "msgs_in.odom")}),
        "goal_pose": (published.get("goal_pose"), {"mpc_node": delta("mpc_node", "msgs_in.goal_pose")}),
        PREDICTIONS: (
            delta("gp_inference_node", f"msgs_out.{PREDICTIONS}"),
            {
                "belief_node": delta("belief_node", f"msgs_in.{PREDICTIONS}"),
                "mpc_node": delta("mpc_node", f"msgs_in.{PREDICTIONS}"),
                "bench": replayer_in[PREDICTIONS],
            },
        ),
        BELIEF: (
            delta("belief_node", f"msgs_out.{BELIEF}"),
            {"mpc_node": delta("mpc_node", f"msgs_in.{BELIEF}"), "bench": replayer_in[BELIEF]},
        ),
        "cmd_vel": (delta("mpc_node", f"msgs_in.{PREDICTIONS}"), {"bench": replayer_in["cmd_vel"]}),
    }
    return _loss(chain)


def _loss(chain: dict) -> dict:
    """Per topic: what was published, what each consumer received, and the shortfall summed."""
    out = {}
    for topic, (sent, received) in chain.items():
        if sent is None:  # listen mode: someone else published it
            out[topic] = {"published": None, "received": received, "lost": 0}
            continue
        out[topic] = {
            "published": sent,
            "received": received,
            "lost": sum(max(sent - r, 0) for r in received.values()),
        }
    return out


def spin_until(
    executor: EventsExecutor,
    condition: Callable[[], bool],
    timeout_s: float,
    stack: NodeProcesses | None = None,
) -> bool:
    """Spin until ``condition()`` holds; False on time-out. Fails fast when a node process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if stack is not None and (dead := stack.poll()):
            raise RuntimeError(f"node process exited: {dead} (exit codes); see {stack.log_dir}/<node>.log")
        executor.spin_once(timeout_sec=0.05)
    return condition()


def stack_nodes(shards: int = 1) -> tuple[str, ...]:
    """Names of the measured node processes (monitor excluded): sharded GP and belief processes are
    named by ``runner.process_names``, so readiness and counters use the names the processes have."""
    return tuple(expand_shards(STACK_NODES, shards))


def _not_ready(r: Replayer, shards: int = 1) -> list[str]:
    """What the stack still lacks: nodes that have not reported, and unmatched links of the chain
    (the bench's own taps included). Every shard must be up: a cycle completes only with all of them."""
    missing = [f"NodeStats of {n}" for n in stack_nodes(shards) if n not in r.stats]
    if not r.matched(shards if not r.listen else 1):
        missing.append(
            "a subscriber of every input topic" if not r.listen else "a publisher of /humans/tracked"
        )
    links = {
        f"{shards + 2} subscribers of {PREDICTIONS}": r.count_subscribers(PREDICTIONS) >= shards + 2,
        f"{shards} publishers of {PREDICTIONS}": r.count_publishers(PREDICTIONS) >= shards,
        f"2 subscribers of {BELIEF}": r.count_subscribers(BELIEF) >= 2,
        f"{shards} publishers of {BELIEF}": r.count_publishers(BELIEF) >= shards,
        "a publisher of cmd_vel": r.count_publishers("cmd_vel") >= 1,
    }
    return missing + [name for name, ok in links.items() if not ok]


def crowded(r: Replayer, shards: int = 1) -> list[str]:
    """Publishers beyond one stack and one player: another stack on the same ROS_DOMAIN_ID would
    add its messages to every count and latency here. A sharded stack has ``shards`` publishers of
    predictions and beliefs."""
    expected = {HUMANS: 1, PREDICTIONS: shards, BELIEF: shards, "cmd_vel": 1}
    found = {t: r.count_publishers(t) for t in expected}
    return [f"{n} publishers of {t}" for t, n in found.items() if n > expected[t]]


def score_predictions(
    predictions: list, bag_time_ns: dict[int, int], bag: Bag, max_messages: int = 2000
) -> dict | None:
    """ADE/FDE [m] of the predicted means against the bag's ground truth, beside constant velocity.

    Each prediction is placed at the bag time of the observation it was made from; only humans whose
    true track covers the whole horizon count. At most ``max_messages`` messages (evenly strided).
    """
    start = bag.ground_truth[0].timestamp_ns if bag.ground_truth else 0
    rows: dict[int, list[tuple[float, float, float]]] = {}
    for stamp, msg in iter_humans(bag, bag.ground_truth):
        for h in msg.humans:
            rows.setdefault(h.id, []).append(((stamp - start) * 1e-9, h.x, h.y))
    truth = {i: np.asarray(r) for i, r in rows.items()}
    ade, fde, cv_ade, cv_fde = [], [], [], []
    stride = max(len(predictions) // max_messages, 1)
    for msg in predictions[::stride]:
        t0 = (bag_time_ns[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] - start) * 1e-9
        steps = np.arange(1, msg.horizon_steps + 1) * msg.step_dt
        for p in msg.predictions:
            track = truth.get(p.id)
            if (
                track is None
                or msg.horizon_steps == 0
                or not track[0, 0] <= t0 <= t0 + steps[-1] <= track[-1, 0]
            ):
                continue
            gx, gy = (
                np.interp(t0 + steps, track[:, 0], track[:, 1]),
                np.interp(t0 + steps, track[:, 0], track[:, 2]),
            )
            err = np.hypot(np.frombuffer(p.mean_x) - gx, np.frombuffer(p.mean_y) - gy)
            cv = np.hypot(p.x + p.vx * steps - gx, p.y + p.vy * steps - gy)
            ade.append(err.mean())
            fde.append(err[-1])
            cv_ade.append(cv.mean())
            cv_fde.append(cv[-1])
    if not ade:
        return None
    return {
        "count": len(ade),
        "ade_m": float(np.mean(ade)),
        "fde_m": float(np.mean(fde)),
        "cv_ade_m": float(np.mean(cv_ade)),
        "cv_fde_m": float(np.mean(cv_fde)),
    }


@dataclass
class Samples:
    """Per answered observation of a recording, in stamp order: what ``_analyse`` summarises and a soak
    run accumulates batch by batch."""

    sent: int
    t_ns: list[int]  # send time since the replay started
    e2e_ms: list[float]
    stages: dict[str, list[float]]  # observation -> each stage's output
    costs: dict[str, list[float]]  # what each stage adds
    answered: list  # deserialised predictions messages of answered observations
    last_answer_ns: int | None


def _samples(rec: Recording, play_start_ns: int) -> Samples:
    first: dict[int, int] = {}
    for recv, stamp in rec.commands:
        if stamp in rec.sent:
            first.setdefault(stamp, recv)
    origins = {s: sent for s, (sent, _) in rec.sent.items()}
    e2e = [(origins[s] - play_start_ns, (recv - origins[s]) * 1e-6) for s, recv in sorted(first.items())]
    pred_at = {s: recv for recv, s, _ in rec.predictions if s in origins}
    belief_at = {s: recv for recv, s in rec.beliefs if s in origins}
    stages = {
        "prediction": [(t - origins[s]) * 1e-6 for s, t in pred_at.items()],
        "belief": [(t - origins[s]) * 1e-6 for s, t in belief_at.items()],
        "control": [ms for _, ms in e2e],
    }
    costs = {
        "prediction": stages["prediction"],
        "belief": [(belief_at[s] - pred_at[s]) * 1e-6 for s in belief_at if s in pred_at],
        "control": [(first[s] - pred_at[s]) * 1e-6 for s in first if s in pred_at],
    }
    answered = [
        deserialize_message(data, IntentPredictionArray) for _, s, data in rec.predictions if s in first
    ]
    return Samples(
        len(rec.sent),
        [t for t, _ in e2e],
        [ms for _, ms in e2e],
        stages,
        costs,
        answered,
        max(first.values(), default=None),
    )


def _figures(
    sent: int, answered: int, misses: int, humans: int, window_s: float, e2e: dict, stages: dict, costs: dict
) -> dict:
    """The result's latency, throughput and deadline keys, from counts and summaries."""
    return {
        "observations": {"sent": sent, "answered": answered, "unanswered": sent - answered},
        "e2e_ms": e2e,
        "stages_ms": stages,
        "stage_cost_ms": costs,
        "throughput_predictions_per_s": humans / window_s,
        "throughput_observations_per_s": answered / window_s,
        "deadline_ms": DEADLINE_MS,
        "deadline_misses": misses,
        "deadline_miss_fraction": misses / max(sent, 1),
    }


def _analyse(
    r: Replayer, bag: Bag, play_start_ns: int, play_end_ns: int, score: bool
) -> tuple[dict, BenchRun]:
    rec = r.rec
    s = _samples(rec, play_start_ns)
    humans = sum(len(p.predictions) for p in s.answered)
    last = play_end_ns if s.last_answer_ns is None else s.last_answer_ns
    window_s = max((last - play_start_ns) * 1e-9, 1e-9)
    answered = len(s.e2e_ms)
    misses = sum(1 for ms in s.e2e_ms if ms > DEADLINE_MS) + s.sent - answered
    result = _figures(
        s.sent,
        answered,
        misses,
        humans,
        window_s,
        summary(s.e2e_ms),
        {k: summary(v) for k, v in s.stages.items()},
        {k: summary(v) for k, v in s.costs.items()},
    )
    result["predictions_error"] = (
        score_predictions(s.answered, {st: b for st, (_, b) in rec.sent.items()}, bag)
        if bag.ground_truth and score
        else None
    )
    return result, BenchRun(result, [t * 1e-9 for t in s.t_ns], s.e2e_ms)


@dataclass
class SoakSettings:
    """``bench --duration``: replay the bag in a loop for ``duration_s`` seconds.

    ``warmup_s``: RSS drift is measured from its end (None: a third of the run, at most 120 s; what
    grows legitimately at the start - numba and QP caches, the GP's online-learning FIFO - must have
    reached its bound by then). ``slice_s``: end-to-end percentiles per slice of the run.
    ``loop_gap_s``: the pause between loops (None: the longest ``track_timeout_s`` of the parameters
    file + 0.5 s): every track has expired when the bag's ids come round again, so a loop boundary is
    new people entering the scene, not an id whose position jumps.
    """

    duration_s: float
    warmup_s: float | None = None
    slice_s: float = 60.0
    loop_gap_s: float | None = None

    def warmup(self) -> float:
        return min(self.duration_s / 3.0, 120.0) if self.warmup_s is None else self.warmup_s

    def check(self) -> None:
        if self.slice_s <= 0 or self.warmup() < 0 or (self.loop_gap_s is not None and self.loop_gap_s < 0):
            raise ValueError("--slice must be positive, --warmup and --loop-gap not negative")
        if self.duration_s < self.warmup() + 2 * SOAK_EDGE_S:
            raise ValueError(
                f"--duration {self.duration_s:g} s leaves no time to measure drift after the "
                f"{self.warmup():.1f} s warm-up: it must be at least warm-up + {2 * SOAK_EDGE_S:g} s"
            )


def track_timeout_s(params_file: Path) -> float:
    """The longest ``track_timeout_s`` in a parameters file, at least the nodes' default of 2 s."""
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    values = [v.get("ros__parameters", {}).get("track_timeout_s") for v in params.values() if isinstance(v, dict)]
    return max([2.0, *(float(v) for v in values if v is not None)])


class CallbackDigest:
    """``callback_summary`` fed one NodeStats window at a time, in bounded memory (soak runs)."""

    def __init__(self) -> None:
        self.p50: dict[str, LatencyDigest] = {}
        self.worst: dict[str, list[float]] = {}  # node -> [p95, p99, max, windows]

    def add(self, msg) -> None:
        if msg.rate_in_hz <= 0:
            return
        self.p50.setdefault(msg.node_name, LatencyDigest()).add([msg.callback_p50_ms])
        w = self.worst.setdefault(msg.node_name, [-math.inf, -math.inf, -math.inf, 0])
        w[:] = [
            max(w[0], msg.callback_p95_ms),
            max(w[1], msg.callback_p99_ms),
            max(w[2], msg.callback_max_ms),
            w[3] + 1,
        ]

    def summary(self, nodes: tuple[str, ...]) -> dict[str, dict[str, float]]:
        return {
            n: {"p50": self.p50[n].percentile(50), "p95": w[0], "p99": w[1], "max": w[2], "windows": w[3]}
            for n in nodes
            if (w := self.worst.get(n))
        }


class Soak:
    """The streaming side of a soak run. Every ``SOAK_FOLD_PERIOD_S`` the observations sent more than
    ``SOAK_ANSWER_TIMEOUT_S`` ago are summarised into digests and their raw records dropped (as are the
    NodeStats windows), so the bench's memory does not grow with the run's length."""

    def __init__(self, settings: SoakSettings, replayer: Replayer, play_start_ns: int, play_start_mono: float) -> None:
        self.settings, self.replayer = settings, replayer
        self.start_ns, self.start_mono = play_start_ns, play_start_mono
        self.e2e = LatencyDigest()
        self.stages = {k: LatencyDigest() for k in STAGES}
        self.costs = {k: LatencyDigest() for k in STAGES}
        self.sent = self.answered = self.misses = self.humans = 0
        self.last_answer_ns: int | None = None
        self.reservoir = Reservoir(SOAK_RESERVOIR)
        self.callbacks = CallbackDigest()
        self.open_slices: dict[int, LatencyDigest] = {}
        self.slices: list[dict] = []
        self.loops = 0
        self.rss_warm: dict[str, float] | None = None
        self.bench_rss_warm = math.nan
        self._next_fold = play_start_mono + SOAK_FOLD_PERIOD_S

    def spin(self, spin_once: Callable[[float], None]) -> Callable[[float], None]:
        """``spin_once`` followed by the soak's bookkeeping: what ``play`` gets to run the executor."""

        def spin_and_fold(timeout_s: float) -> None:
            spin_once(timeout_s)
            self.tick()

        return spin_and_fold

    def tick(self) -> None:
        now = time.monotonic()
        if self.rss_warm is None and now >= self.start_mono + self.settings.warmup() + SOAK_EDGE_S:
            self.rss_warm = recent_rss(self.replayer)
            self.bench_rss_warm = _own_rss_mb()
        if now >= self._next_fold:
            self._next_fold = now + SOAK_FOLD_PERIOD_S
            cutoff_ns = time.time_ns() - int(SOAK_ANSWER_TIMEOUT_S * 1e9)
            self.fold(cutoff_ns)
            self._close_slices((cutoff_ns - self.start_ns) * 1e-9)
            self.fold_windows(math.inf)

    def fold(self, before_ns: float) -> None:
        """Summarise the observations stamped before ``before_ns`` and drop their records."""
        s = _samples(self.replayer.rec.split(before_ns), self.start_ns)
        e2e = np.asarray(s.e2e_ms)
        t_s = np.asarray(s.t_ns, dtype=np.float64) * 1e-9
        self.sent += s.sent
        self.answered += e2e.size
        self.misses += int((e2e > DEADLINE_MS).sum()) + s.sent - e2e.size
        self.humans += sum(len(p.predictions) for p in s.answered)
        if s.last_answer_ns is not None:
            self.last_answer_ns = max(self.last_answer_ns or 0, s.last_answer_ns)
        self.e2e.add(e2e)
        for k in STAGES:
            self.stages[k].add(s.stages[k])
            self.costs[k].add(s.costs[k])
        self.reservoir.add(t_s, e2e)
        index = np.floor(t_s / self.settings.slice_s).astype(np.int64)
        for k in np.unique(index):
            self.open_slices.setdefault(int(k), LatencyDigest()).add(e2e[index == k])

    def _close_slices(self, until_s: float) -> None:
        """Slices that end before ``until_s`` receive no more samples: keep their summary only."""
        width = self.settings.slice_s
        while (k := len(self.slices)) * width + width <= until_s:
            e2e = self.open_slices.pop(k, LatencyDigest()).summary()
            self.slices.append({"t0_s": k * width, "t1_s": (k + 1) * width, **e2e})

    def fold_windows(self, until_mono: float) -> None:
        """NodeStats windows received since the replay started (and before ``until_mono``) into the digest."""
        for t, msg in self.replayer.stats_history:
            if self.start_mono < t <= until_mono:
                self.callbacks.add(msg)
        self.replayer.stats_history.clear()

    def finish(self, play_end_ns: int, play_end_mono: float) -> tuple[dict, BenchRun]:
        """Fold what is left and return the result's usual figures (``_analyse``'s keys) and the run."""
        self.fold(math.inf)
        # Nothing is published after duration_s (``play(until=...)``): the slices cover [0, duration_s).
        width = self.settings.slice_s
        self._close_slices(math.ceil(self.settings.duration_s / width) * width)
        self.fold_windows(play_end_mono + 1.5)
        last = play_end_ns if self.last_answer_ns is None else self.last_answer_ns
        result = _figures(
            self.sent,
            self.answered,
            self.misses,
            self.humans,
            max((last - self.start_ns) * 1e-9, 1e-9),
            self.e2e.summary(),
            {k: v.summary() for k, v in self.stages.items()},
            {k: v.summary() for k, v in self.costs.items()},
        )
        result["predictions_error"] = None  # raw predictions are not kept for hours
        return result, BenchRun(result, *self.reservoir.items())

    def section(self, played_s: float, gap_s: float, rss_end: dict[str, float], lost_commands: int) -> dict:
        """The JSON's ``soak`` section."""
        warm = self.rss_warm or {}
        nodes = [n for n in rss_end if n in warm]
        drift = {n: 100.0 * (rss_end[n] - warm[n]) / warm[n] for n in nodes}
        if nodes:
            total_warm = sum(warm[n] for n in nodes)
            drift["total"] = 100.0 * (sum(rss_end[n] for n in nodes) - total_warm) / total_warm
        return {
            "duration_s": self.settings.duration_s,
            "played_s": played_s,
            "loops": self.loops,
            "loop_gap_s": gap_s,
            "warmup_s": self.settings.warmup(),
            "slice_s": self.settings.slice_s,
            "rss_mb_after_warmup": warm,
            "rss_mb_end": rss_end,
            "rss_drift_percent": drift,
            "lost_commands": lost_commands,
            "e2e_ms_per_slice": self.slices,
            # The bench's own memory must stay flat too (raw records are dropped as they are summarised).
            "bench_rss_mb": {"after_warmup": self.bench_rss_warm, "end": _own_rss_mb()},
        }


def _own_rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def recent_rss(replayer: Replayer) -> dict[str, float]:
    """Per sampled node, the median RSS of the sampler's last few samples (robust to one odd sample)."""
    return {n: float(np.nanmedian(v)) for n, v in replayer.sampler.recent_rss_mb.items() if v}


def _play_soak(
    replayer: Replayer,
    soak: Soak,
    spin: Callable[[float], None],
    rate: float | None,
    max_in_flight: int,
    gap_s: float,
    progress: Callable[[], None],
) -> None:
    """Replay the bag in loops until the soak's duration is over, pausing ``gap_s`` between loops.
    Stamps are the publish time, so they stay monotonic and fresh across loops."""
    end = soak.start_mono + soak.settings.duration_s
    spin = soak.spin(spin)
    while time.monotonic() < end:
        soak.loops += 1
        play(replayer, spin, rate, max_in_flight, progress=progress, until=end)
        gap_end = min(time.monotonic() + gap_s, end)
        while (now := time.monotonic()) < gap_end:
            spin(min(gap_end - now, 0.05))


def proportional_set_mb(pids: dict[str, int]) -> dict[str, float]:
    """PSS per process, read once after the replay. RSS counts a shared library's pages in every
    process that maps it (the four nodes share numpy, rclpy, LLVM...), so the RSS sum overstates what
    the stack takes together; PSS splits shared pages between their users, and sums. Reading it walks
    the process's page tables (about 5 ms for a node), too slow to sample during the run."""
    pss = {}
    for name, pid in pids.items():
        try:
            pss[name] = psutil.Process(pid).memory_full_info().pss / 2**20
        except psutil.Error:
            continue
    return pss


def run_bench(
    bag: Bag,
    rate: float | None = 1.0,
    *,
    attach: bool = False,
    listen: bool = False,
    params_file: str | None = None,
    log_dir: str | Path = "out/bench_logs",
    max_in_flight: int = 4,
    startup_timeout_s: float = 180.0,
    listen_idle_s: float = 3.0,
    progress: bool = True,
    ros_args: dict[str, list[str]] | None = None,
    stack: NodeProcesses | None = None,
    shards: int = 1,
    overrides: dict[str, dict] | None = None,
    soak: SoakSettings | None = None,
    composed: bool = False,
) -> BenchRun:
    """One replay; see the module docstring. ``rate=None`` is ``--rate max``; ``ros_args`` per node
    are added to the started processes' command lines (e.g. ``["-p", "backend:=numpy"]``).
    ``stack``: node processes the caller started and will stop (several replays, one start-up).
    ``shards``: GP and belief processes (as ``intent-perf up --shards``); with ``attach`` it says how
    many shards the running stack has. ``overrides``: parameter values per node for started stacks
    (``NodeProcesses``), e.g. ``{"gp_inference_node": {"backend": "numpy"}}``. ``soak``: replay the
    bag in a loop (``bench --duration``) and add the ``soak`` section. ``composed``: the GP, belief and
    MPC nodes in one process (``intent-perf up --composed``); memory is then per process."""
    if listen and not attach:
        raise ValueError("--listen measures a stack that runs already: use it with --attach")
    if soak is not None:
        if listen:
            raise ValueError("--duration replays the bag in a loop: it cannot be used with --listen")
        soak.check()
    if stack is not None:
        shards = max(sum(1 for n in stack.nodes if n.startswith("gp_inference_node")), 1)
    names = stack_nodes(shards)
    owned = (
        None
        if attach or stack
        else NodeProcesses(params_file, log_dir=log_dir, ros_args=ros_args, shards=shards, overrides=overrides,
                           composed=composed)
    )
    if owned is not None:
        owned.start()
    stack = stack or owned
    gap_s = _loop_gap_s(soak, stack.params_file if stack else params_file) if soak else 0.0
    soaking: Soak | None = None
    context = Context()
    rclpy.init(context=context)
    exit_codes: dict[str, int] = {}
    try:
        executor = EventsExecutor(context=context)
        pids = stack.pids() if stack is not None else find_node_pids((*names, *NODES[3:], COMPOSED))
        replayer = Replayer(
            bag,
            listen=listen,
            sample_pids=pids,
            context=context,
            shards=shards,
            max_samples=SOAK_MAX_SAMPLES if soak else None,
        )
        executor.add_node(replayer)
        startup_start = time.monotonic()
        if not spin_until(executor, lambda: not _not_ready(replayer, shards), startup_timeout_s, stack):
            where = f"see {log_dir}/*.log" if stack else "is the stack running in this ROS_DOMAIN_ID?"
            raise RuntimeError(
                f"the stack did not come up within {startup_timeout_s} s, missing: "
                f"{', '.join(_not_ready(replayer, shards))}; {where}"
            )
        startup_s = time.monotonic() - startup_start
        if crowded(replayer, shards):
            raise RuntimeError(
                f"{', '.join(crowded(replayer, shards))}: another stack or player shares "
                f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}; run the bench on a free domain"
            )
        before = _extras(replayer.stats)
        counts_before = dict(replayer.stats_count)
        spin = lambda timeout: executor.spin_once(timeout_sec=timeout)  # noqa: E731
        play_start, play_start_mono = time.time_ns(), time.monotonic()
        bar = _progress(None if soak else sum(1 for m in bag.inputs if m.topic == "/humans/tracked"), progress)
        if listen:
            spin_until(executor, lambda: len(replayer.rec.sent) > 0, startup_timeout_s)
            last = [len(replayer.rec.sent), time.monotonic()]

            def idle() -> bool:
                if len(replayer.rec.sent) != last[0]:
                    bar.update(len(replayer.rec.sent) - last[0])
                    last[:] = [len(replayer.rec.sent), time.monotonic()]
                return time.monotonic() - last[1] > listen_idle_s

            spin_until(executor, idle, 24 * 3600.0, stack)
        elif soak is not None:
            soaking = Soak(soak, replayer, play_start, play_start_mono)
            _play_soak(replayer, soaking, spin, rate, max_in_flight, gap_s, lambda: bar.update(1))
            rss_end = recent_rss(replayer)
        else:
            play(replayer, spin, rate, max_in_flight, progress=lambda: bar.update(1))
        bar.close()
        play_end, play_end_mono = time.time_ns(), time.monotonic()
        # Drain: every observation answered (command and belief), or nothing new for a second. Only
        # outputs answering a sent observation count: the watchdog's commands after the replay would
        # otherwise keep the wait alive for its whole 30 s whenever one observation went unanswered.
        seen = [replayer.rec.answers, time.monotonic()]

        def drained() -> bool:
            if replayer.rec.answers != seen[0]:
                seen[:] = [replayer.rec.answers, time.monotonic()]
            return replayer.answered() >= len(replayer.rec.sent) or time.monotonic() - seen[1] > 1.0

        spin_until(executor, drained, 30.0, stack)
        pss = proportional_set_mb(pids)
        # Counters are final once every stack node reported twice more after the last input.
        settled = {n: replayer.stats_count.get(n, 0) + 2 for n in names}
        spin_until(
            executor, lambda: all(replayer.stats_count.get(n, 0) >= c for n, c in settled.items()), 5.0
        )
        replayer.sampler.sample()
        if soaking is not None:
            result, run = soaking.finish(play_end, play_end_mono)
        else:
            result, run = _analyse(replayer, bag, play_start, play_end, score=listen or rate == 1.0)
        published = {
            t: (None if listen else replayer.published[t]) for t in ("humans/tracked", "odom", "goal_pose")
        }
        if listen:
            published["humans/tracked"] = len(replayer.rec.sent)
        taps = {
            PREDICTIONS: replayer.received[PREDICTIONS],
            BELIEF: replayer.received[BELIEF],
            "cmd_vel": result["observations"]["answered"],
        }
        topics = topic_loss(before, _extras(replayer.stats), published, taps, shards)
        sampler = replayer.sampler
        node_stats = {n: replayer.stats[n] for n in names if n in replayer.stats}
        intruders = crowded(replayer, shards)
        if soaking is not None:
            callbacks = soaking.callbacks.summary(names)  # the windows were folded as they came
        else:
            # NodeStats windows that overlap the replay (published up to one period after its end).
            windows = [m for t, m in replayer.stats_history if play_start_mono < t <= play_end_mono + 1.5]
            callbacks = callback_summary(windows, names)
        busy = (play_start_mono - sampler.t0, play_end_mono - sampler.t0)
        stats_reports = {n: replayer.stats_count.get(n, 0) - counts_before.get(n, 0) for n in names}
        replayer.destroy_node()
        executor.shutdown()
    finally:
        rclpy.try_shutdown(context=context)
        if owned is not None:
            exit_codes = owned.stop()
    rss = dict(sampler.peak_rss_mb)
    # Nodes no process sample covers report their own RSS; the nodes of composed_nodes share its process.
    sampled = {node for process in rss for node in hosted_nodes(process)}
    for n, msg in node_stats.items():
        if n not in sampled:
            rss.setdefault(n, float(msg.rss_mb))
    result.update(
        {
            "bag": {
                "path": str(bag.path),
                "storage": bag.storage,
                "duration_s": bag.duration_s,
                "topics": bag.counts(),
                "ground_truth": bool(bag.ground_truth),
                "topic_map": bag.topic_map,
            },
            "settings": {
                "rate": "max" if rate is None else rate,
                "attach": attach,
                "listen": listen,
                "max_in_flight": max_in_flight if rate is None else None,
                "restamped": not listen,
                "shards": shards,
                "composed": COMPOSED in pids,
            },
            "machine": {
                "platform": platform.platform(),
                "cpus": psutil.cpu_count(),
                "python": platform.python_version(),
            },
            "startup_s": startup_s,
            "warnings": [f"during the run: {', '.join(intruders)} (counts include a foreign stack)"]
            if intruders
            else [],
            "wall_s": (play_end - play_start) * 1e-9,
            "topics": topics,
            "lost_messages": sum(t["lost"] for t in topics.values()),
            "rss_mb": rss,
            "rss_total_mb": sum(rss.values()),
            "pss_mb": pss,
            "pss_total_mb": sum(pss.values()),
            "cpu_percent": _mean_during(sampler.t_s, sampler.cpu_percent, *busy),
            "node_callback_ms": callbacks,
            "node_extra": {n: {kv.key: kv.value for kv in m.extra} for n, m in node_stats.items()},
            "node_stats_reports": stats_reports,
            "timeseries": {"t_s": sampler.t_s, "rss_mb": sampler.rss_mb, "cpu_percent": sampler.cpu_percent},
            "exit_codes": exit_codes,
        }
    )
    if soaking is not None:
        result["soak"] = soaking.section(result["wall_s"], gap_s, rss_end, topics["cmd_vel"]["lost"])
    result["goals"] = goals(result)
    return run


def _loop_gap_s(soak: SoakSettings, params_file: Path | str | None) -> float:
    """The pause between soak loops: as asked, else the longest track timeout + a margin."""
    if soak.loop_gap_s is not None:
        return soak.loop_gap_s
    return track_timeout_s(Path(params_file) if params_file else default_params_file()) + LOOP_GAP_MARGIN_S


def _mean_during(t_s: list[float], series: dict[str, list[float]], start: float, end: float) -> dict:
    """Mean of each series over the samples taken while the bag played (all samples if none)."""
    inside = [i for i, t in enumerate(t_s) if start <= t <= end] or list(range(len(t_s)))
    return {n: float(np.nanmean([v[i] for i in inside])) for n, v in series.items() if v}


def callback_summary(windows: list, nodes: tuple[str, ...] = STACK_NODES) -> dict[str, dict[str, float]]:
    """Per node, callback time over its NodeStats windows during the replay: the median of the
    window medians, the worst window's P95 and P99, and the maximum (windows are ~1 s)."""
    out = {}
    for node in nodes:
        mine = [m for m in windows if m.node_name == node and m.rate_in_hz > 0]
        if mine:
            out[node] = {
                "p50": float(np.median([m.callback_p50_ms for m in mine])),
                "p95": max(m.callback_p95_ms for m in mine),
                "p99": max(m.callback_p99_ms for m in mine),
                "max": max(m.callback_max_ms for m in mine),
                "windows": len(mine),
            }
    return out


def goals(result: dict) -> list[dict]:
    """The issue's goals that apply to this run, each with its measured value and verdict."""
    checks = []
    if result["settings"]["rate"] == 1.0:
        measured = {
            "e2e_p95_ms": result["e2e_ms"]["p95"],
            "e2e_p999_ms": result["e2e_ms"]["p999"],
            "lost_messages": result["lost_messages"],
            "rss_total_mb": result["rss_total_mb"],
        }
        for name, target in GOALS_REAL_TIME.items():
            value = measured[name]
            ok = (
                value == 0
                if name == "lost_messages"
                else value < target
                if name == "rss_total_mb"
                else value <= target
            )
            checks.append({"name": name, "target": target, "value": value, "met": bool(ok)})
    if "soak" in result:
        drift = [v for n, v in result["soak"]["rss_drift_percent"].items() if n != "total"]
        worst = max(drift, default=math.nan)  # growth is what leaks; no drift measured is not met
        lost = result["soak"]["lost_commands"]
        checks.append(
            {
                "name": "rss_drift_percent",
                "target": GOALS_SOAK["rss_drift_percent"],
                "value": worst,
                "met": bool(worst < GOALS_SOAK["rss_drift_percent"]),
            }
        )
        checks.append(
            {"name": "lost_commands", "target": GOALS_SOAK["lost_commands"], "value": lost, "met": lost == 0}
        )
    if result["settings"]["rate"] == "max":
        value = result["throughput_predictions_per_s"]
        checks.append(
            {
                "name": "throughput_predictions_per_s",
                "target": GOAL_PREDICTIONS_PER_S_MAX,
                "value": value,
                "met": value >= GOAL_PREDICTIONS_PER_S_MAX,
            }
        )
    return checks


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs or CI.
    return tqdm(total=total, unit="obs", desc="replay", disable=None if enabled else True, leave=False)


def finite(value):
    """NaN/inf -> None, recursively, so the JSON is strict (json.dumps would write NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def print_summary(result: dict) -> None:
    e, s = result["e2e_ms"], result["settings"]
    print(
        f"intent-perf bench {result['bag']['path']} at rate {s['rate']}, {s['shards']} shard(s): "
        f"{result['observations']['answered']}/{result['observations']['sent']} observations answered "
        f"in {result['wall_s']:.1f} s"
    )
    print(
        f"  e2e ms: P50 {e['p50']:.2f}  P95 {e['p95']:.2f}  P99 {e['p99']:.2f}  P99.9 {e['p999']:.2f}  "
        f"max {e['max']:.2f}; deadline ({result['deadline_ms']:.0f} ms) misses {result['deadline_misses']}"
    )
    cost = result["stage_cost_ms"]
    print("  stage P50/P95 ms: " + ", ".join(f"{k} {v['p50']:.2f}/{v['p95']:.2f}" for k, v in cost.items()))
    print(
        f"  throughput {result['throughput_predictions_per_s']:.0f} human predictions/s; "
        f"lost messages {result['lost_messages']}; RSS total {result['rss_total_mb']:.0f} MB "
        f"({', '.join(f'{n} {v:.0f}' for n, v in result['rss_mb'].items())}); "
        f"PSS total {result['pss_total_mb']:.0f} MB (shared pages counted once)"
    )
    if result["predictions_error"]:
        pe = result["predictions_error"]
        print(
            f"  prediction error: ADE {pe['ade_m']:.3f} m FDE {pe['fde_m']:.3f} m "
            f"(constant velocity {pe['cv_ade_m']:.3f}/{pe['cv_fde_m']:.3f}) over {pe['count']} predictions"
        )
    if "soak" in result:
        print_soak(result["soak"])
    for warning in result["warnings"]:
        print(f"  WARNING: {warning}")
    for g in result["goals"]:
        print(f"  goal {g['name']}: {g['value']:.3f} vs {g['target']} -> {'met' if g['met'] else 'NOT MET'}")


def print_soak(soak: dict) -> None:
    drift = ", ".join(f"{n} {v:+.2f}%" for n, v in soak["rss_drift_percent"].items())
    print(
        f"  soak: {soak['played_s']:.0f} s, {soak['loops']} loops ({soak['loop_gap_s']:.1f} s apart); "
        f"RSS drift after the {soak['warmup_s']:.0f} s warm-up: {drift or 'not measured'}; "
        f"lost commands {soak['lost_commands']}"
    )
    for sl in soak["e2e_ms_per_slice"]:
        print(
            f"    {sl['t0_s']:6.0f}-{sl['t1_s']:<6.0f} s: {sl['count']:6d} commands, e2e ms P50 {sl['p50']:.2f} "
            f"P95 {sl['p95']:.2f} P99 {sl['p99']:.2f} max {sl['max']:.2f}"
        )


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("--rate must be positive or 'max'")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="intent-perf bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "bag", type=Path, help="rosbag2 directory (mcap or sqlite3), e.g. from intent-perf make-bag"
    )
    p.add_argument(
        "--rate", type=_rate, default=1.0, help="1.0 recorded pace, 5 = 5x, max = as fast as it answers"
    )
    p.add_argument("--max-in-flight", type=int, default=4, help="--rate max: unanswered observations at once")
    p.add_argument(
        "--attach", action="store_true", help="measure a stack that already runs (no processes started)"
    )
    p.add_argument(
        "--listen",
        action="store_true",
        help="with --attach: publish nothing, measure while `ros2 bag play BAG` plays it",
    )
    p.add_argument("--topic-map", help="BAG_TOPIC=PACKAGE_TOPIC[,...] for bags with other topic names")
    p.add_argument("--params-file")
    p.add_argument(
        "--shards",
        type=int,
        default=1,
        help="GP and belief processes each (as intent-perf up --shards); with --attach: the running stack's",
    )
    p.add_argument(
        "--composed",
        action="store_true",
        help="the GP, belief and MPC nodes in one process (as intent-perf up --composed)",
    )
    p.add_argument(
        "--duration",
        type=float,
        help="soak: replay the bag in a loop for this many seconds; adds the JSON's soak section",
    )
    p.add_argument(
        "--warmup", type=float, help="soak: RSS drift is measured after this (default: a third, at most 120 s)"
    )
    p.add_argument("--slice", type=float, default=60.0, help="soak: e2e percentiles per slice of this many s")
    p.add_argument(
        "--loop-gap",
        type=float,
        help="soak: pause between loops (default: the longest track_timeout_s of the parameters + 0.5 s)",
    )
    p.add_argument("--log-dir", default="out/bench_logs")
    p.add_argument(
        "--startup-timeout", type=float, default=180.0, help="seconds for the stack to come up (default 180)"
    )
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--report", type=Path, help="write report.md and PNG plots into this directory")
    p.add_argument("--check-goals", action="store_true", help="exit 1 when a goal of the issue is not met")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    soak = None if args.duration is None else SoakSettings(args.duration, args.warmup, args.slice, args.loop_gap)
    if soak is not None:
        if args.listen:
            parser.error("--duration replays the bag in a loop: it cannot be used with --listen")
        try:
            soak.check()
        except ValueError as exc:
            parser.error(str(exc))
    bag = read_bag(args.bag, parse_topic_map(args.topic_map))
    run = run_bench(
        bag,
        args.rate,
        attach=args.attach,
        listen=args.listen,
        params_file=args.params_file,
        log_dir=args.log_dir,
        max_in_flight=args.max_in_flight,
        startup_timeout_s=args.startup_timeout,
        shards=args.shards,
        soak=soak,
        composed=args.composed,
    )
    print_summary(run.result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(finite(run.result), indent=2))
        print(f"result written to {args.json}")
    if args.report:
        from intent_perf_ros.bench import report

        print(f"report written to {report.write_report(run, args.report)}")
    failed = any(code != 0 for code in run.result["exit_codes"].values())
    return 1 if failed or (args.check_goals and not all(g["met"] for g in run.result["goals"])) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a bench run measured, from its recording: latency summaries, per-stage costs, throughput,
deadline misses and prediction error against the bag's ground truth (``intent-perf bench``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rclpy.serialization import deserialize_message

from intent_perf_ros.bench.bags import Bag, iter_humans
from intent_perf_ros.bench.replay import Recording, Replayer
from intent_perf_ros.msg import IntentPredictionArray
from intent_perf_ros.nodes.flat_fields import prediction_layout, read_fields

STAGES = ("prediction", "belief", "control")
DEADLINE_MS = 10.0


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
        fields = read_fields(msg, prediction_layout(msg.horizon_steps))
        for human, state, mean in zip(fields["ids"], fields["state"], fields["mean"], strict=True):
            track = truth.get(int(human))
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
            err = np.hypot(mean[:, 0] - gx, mean[:, 1] - gy)
            cv = np.hypot(state[0] + state[2] * steps - gx, state[1] + state[3] * steps - gy)
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
    """Per answered observation of a recording, in stamp order: what ``analyse`` summarises and a soak
    run accumulates batch by batch."""

    sent: int
    t_ns: list[int]  # send time since the replay started
    e2e_ms: list[float]
    stages: dict[str, list[float]]  # observation -> each stage's output
    costs: dict[str, list[float]]  # what each stage adds
    answered: list  # deserialised predictions messages of answered observations
    last_answer_ns: int | None


def samples(rec: Recording, play_start_ns: int) -> Samples:
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


def figures(
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


def analyse(
    r: Replayer, bag: Bag, play_start_ns: int, play_end_ns: int, score: bool
) -> tuple[dict, BenchRun]:
    rec = r.rec
    s = samples(rec, play_start_ns)
    humans = sum(len(p.ids) for p in s.answered)
    last = play_end_ns if s.last_answer_ns is None else s.last_answer_ns
    window_s = max((last - play_start_ns) * 1e-9, 1e-9)
    answered = len(s.e2e_ms)
    misses = sum(1 for ms in s.e2e_ms if ms > DEADLINE_MS) + s.sent - answered
    result = figures(
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


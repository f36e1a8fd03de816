"""intent-perf bench: the JSON has every key with consistent counts; loss and error are computed right."""

import array
import json
import math
import os

import numpy as np
import pytest

from intent_perf_ros.bench import analysis, bags, bench, floor, make_bag, replay, report
from intent_perf_ros.msg import IntentPredictionArray
from intent_perf_ros.runner import unclean_exits

KEYS_E2E = {"count", "mean", "p50", "p95", "p99", "p999", "max"}


def test_topic_loss_from_counter_deltas():
    before = {
        "gp_inference_node": {"msgs_in.humans/tracked": 5, "msgs_out.intent/predictions": 5},
        "mpc_node": {"msgs_in.intent/predictions": 5},
    }
    after = {
        "gp_inference_node": {"msgs_in.humans/tracked": 103, "msgs_out.intent/predictions": 103},
        "belief_node": {"msgs_in.intent/predictions": 98, "msgs_out.intent/belief": 98},
        "mpc_node": {
            "msgs_in.intent/predictions": 103,
            "msgs_in.intent/belief": 98,
            "msgs_in.odom": 100,
            "msgs_in.goal_pose": 4,
        },
    }
    taps = {"intent/predictions": 98, "intent/belief": 98, "cmd_vel": 97}
    topics = bench.topic_loss(before, after, {"humans/tracked": 100, "odom": 100, "goal_pose": 4}, taps)
    assert topics["humans/tracked"] == {"published": 100, "received": {"gp_inference_node": 98}, "lost": 2}
    assert topics["intent/predictions"]["lost"] == 0 + 0 + 0  # belief 98 of 98 published, mpc 98, bench 98
    assert topics["cmd_vel"] == {"published": 98, "received": {"bench": 97}, "lost": 1}
    listen = bench.topic_loss(before, after, {"humans/tracked": 100, "odom": None, "goal_pose": None}, taps)
    assert listen["odom"]["published"] is None and listen["odom"]["lost"] == 0


def test_prediction_error_against_ground_truth(tmp_path):
    make_bag.make_bag(tmp_path / "bag", humans=2, rate_hz=10.0, duration_s=8.0, seed=2)
    bag = bags.read_bag(tmp_path / "bag")
    stamp, truth = next(bags.iter_humans(bag, bag.ground_truth[10:]))
    later = {s: m for s, m in bags.iter_humans(bag, bag.ground_truth)}
    # A perfect predictor: the true positions 0.4 s, 0.8 s ahead.
    step_dt, steps = 0.4, 2
    future = [later[stamp + round(k * step_dt * 1e9)] for k in range(1, steps + 1)]
    msg = IntentPredictionArray(step_dt=step_dt, horizon_steps=steps)
    msg.header.stamp.sec = 7
    msg.ids = array.array("I", [h.id for h in truth.humans])
    msg.state = array.array("d", [v for h in truth.humans for v in (h.x, h.y, 0.0, 0.0)])
    msg.mean = array.array("d", [v for i in range(len(truth.humans)) for f in future
                                 for v in (f.humans[i].x, f.humans[i].y)])
    msg.variance = array.array("d", [0.0] * len(msg.mean))
    score = analysis.score_predictions([msg], {7 * 10**9: stamp}, bag)
    assert score["count"] == 2
    assert score["ade_m"] == pytest.approx(0.0, abs=1e-9) and score["fde_m"] == pytest.approx(0.0, abs=1e-9)
    assert score["cv_fde_m"] > 0.5  # standing still is wrong for walking humans


@pytest.mark.system
@pytest.mark.parametrize("composed", [False, True], ids=["four_processes", "composed"])
def test_bench_on_a_tiny_bag(tmp_path, composed):
    bag_dir = tmp_path / "bag"
    make_bag.make_bag(bag_dir, humans=3, rate_hz=20.0, duration_s=3.0, seed=1)
    # No training data: the GP node starts in a second with its constant-velocity predictor (what is
    # tested here is the bench, not the model).
    (tmp_path / "no_data").mkdir()
    fast_start = {"gp_inference_node": ["-p", f"dataset_dir:={tmp_path / 'no_data'}"]}
    run = bench.run_bench(
        bags.read_bag(bag_dir),
        1.0,
        log_dir=tmp_path / "logs",
        progress=False,
        ros_args=fast_start,
        startup_timeout_s=240.0,
        composed=composed,
    )
    out = tmp_path / "bench.json"
    out.write_text(json.dumps(bench.finite(run.result), allow_nan=False))
    report.write_report(run, tmp_path / "report")
    result = json.loads(out.read_text())
    assert set(result["exit_codes"]) == set(result["rss_mb"])
    assert unclean_exits(result["exit_codes"], result["teardown_hangs"]) == {}, f"see the logs in {tmp_path / 'logs'}"

    assert set(result["e2e_ms"]) == KEYS_E2E
    e = result["e2e_ms"]
    assert 0 < e["p50"] <= e["p95"] <= e["p99"] <= e["p999"] <= e["max"] < 1000
    obs = result["observations"]
    assert obs["sent"] == 60 == result["topics"]["humans/tracked"]["published"]
    assert obs["answered"] + obs["unanswered"] == obs["sent"] and e["count"] == obs["answered"]
    assert obs["answered"] >= 55
    # Every observation holds 3 humans: predictions per second are 3x observations per second.
    assert result["throughput_predictions_per_s"] == pytest.approx(
        3 * result["throughput_observations_per_s"]
    )
    assert result["throughput_predictions_per_s"] > 0
    assert result["lost_messages"] == sum(t["lost"] for t in result["topics"].values())
    assert result["topics"]["odom"]["published"] == 60 and result["topics"]["goal_pose"]["published"] == 3
    processes = {"composed_nodes", "monitor_node"} if composed else {"gp_inference_node", "belief_node", "mpc_node",
                                                                      "monitor_node"}
    assert set(result["rss_mb"]) == set(result["pss_mb"]) == processes and result["settings"]["composed"] == composed
    assert all(v > 20 for v in result["rss_mb"].values())
    assert result["rss_total_mb"] == pytest.approx(sum(result["rss_mb"].values()))
    # PSS splits shared library pages between the processes: never above RSS, and the sum is lower.
    assert all(0 < result["pss_mb"][n] <= result["rss_mb"][n] for n in processes)
    assert result["pss_total_mb"] == pytest.approx(sum(result["pss_mb"].values()))
    assert result["pss_total_mb"] < result["rss_total_mb"]
    assert set(result["stages_ms"]) == set(result["stage_cost_ms"]) == {"prediction", "belief", "control"}
    assert result["stages_ms"]["prediction"]["p50"] <= e["p50"]
    assert result["deadline_misses"] >= obs["unanswered"]
    assert result["predictions_error"] is None or math.isfinite(result["predictions_error"]["ade_m"])
    assert {g["name"] for g in result["goals"]} == {
        "e2e_p95_ms",
        "e2e_p999_ms",
        "lost_messages",
        "rss_total_mb",
    }
    pages = tmp_path / "report"
    assert {p.name for p in pages.iterdir()} == {
        "report.md",
        "latency_histogram.png",
        "latency_over_time.png",
        "rss_over_time.png",
    }
    assert "observation -> command" in (pages / "report.md").read_text()


def test_soak_streaming_figures_are_bounded_and_close_to_exact():
    values = np.random.default_rng(1).lognormal(0.0, 1.0, 50_000)
    digest = replay.LatencyDigest()
    for chunk in np.array_split(values, 7):
        digest.add(chunk)
    exact = analysis.summary(values)
    got = digest.summary()
    assert got["count"] == exact["count"] and got["max"] == exact["max"]
    assert got["mean"] == pytest.approx(exact["mean"])
    for key in ("p50", "p95", "p99", "p999"):
        assert got[key] == pytest.approx(exact[key], rel=0.006)  # half a 1 % bin, plus interpolation
    assert math.isnan(replay.LatencyDigest().summary()["p95"])
    sample = replay.Reservoir(1000)
    for start in range(0, 20_000, 500):
        t = np.arange(start, start + 500, dtype=float)
        sample.add(t, 2 * t)
    t, v = sample.items()
    assert len(t) == 1000 and t == sorted(t) and all(b == 2 * a for a, b in zip(t, v, strict=True))
    assert 7_000 < np.mean(t) < 13_000  # uniform over the stream, not its start


def test_recording_split_hands_over_old_observations_and_their_outputs():
    rec = replay.Recording()
    for stamp in (1, 2, 10):
        rec.observed(stamp, stamp, 0)
    rec.commands += [(5, 1), (6, 99), (12, 10)]  # 99: a watchdog command, answers nothing
    for stamp in (1, 99, 10):
        rec.answer(stamp, 0)
    old = rec.split(5)
    assert set(old.sent) == {1, 2} and old.commands == [(5, 1)] and old.progress == {1: [1, 0], 2: [0, 0]}
    assert set(rec.sent) == {10} and rec.commands == [(6, 99), (12, 10)] and rec.answers == 2


def test_sampler_thins_its_series_but_keeps_peak_and_recent():
    sampler = replay.ProcessSampler({"me": os.getpid()}, max_samples=8, recent=3)
    for _ in range(40):
        sampler.sample()
    assert 4 <= len(sampler.t_s) < 8 and len(sampler.rss_mb["me"]) == len(sampler.t_s)
    assert sampler.t_s == sorted(sampler.t_s) and len(sampler.recent_rss_mb["me"]) == 3
    assert sampler.peak_rss_mb["me"] >= max(sampler.rss_mb["me"])


@pytest.mark.system
def test_transport_floor_replays_every_observation_through_the_relays(tmp_path):
    bag_dir = tmp_path / "bag"
    make_bag.make_bag(bag_dir, humans=3, rate_hz=20.0, duration_s=3.0, seed=1)
    result = floor.transport_floor(bags.read_bag(bag_dir), 1.0, tmp_path / "logs")
    assert result["observations"] == 60
    assert result["lost"] == {floor.PREDICTIONS: 0, floor.BELIEFS: 0, floor.COMMANDS: 0}, \
        f"see the logs in {tmp_path / 'logs'}"
    e = result["e2e_ms"]
    assert e["count"] == 60 and 0 < e["p50"] <= e["p95"] <= e["p999"] <= e["max"] < 1000
    idle = result["idle_penalty"]
    assert idle["period_s"] == pytest.approx(0.05, rel=0.05)
    assert idle["ratio"] == pytest.approx(idle["after_idle_us"] / idle["back_to_back_us"]) and idle["ratio"] > 0
    ours = {k: 2 * v for k, v in e.items()}
    assert floor.compare(ours, result) == pytest.approx({"ratio_p50": 2, "ratio_p95": 2, "ratio_p99": 2,
                                                         "ratio_p999": 2})
    text = "\n".join(report.floor_markdown({"floor": result, "e2e_ms": ours}))
    assert "| ours / floor | 2.00x | 2.00x | 2.00x | 2.00x | 2.00x |" in text


@pytest.mark.parametrize("other", [["--composed"], ["--shards", "2"], ["--rate", "max"], ["--attach"]])
def test_the_floor_is_refused_where_it_does_not_model_the_run(other, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["no_such_bag", "--floor", *other])
    assert exit_info.value.code == 2 and "--floor" in capsys.readouterr().err

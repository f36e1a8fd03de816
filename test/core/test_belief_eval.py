"""eval-intent: helpers on synthetic data; the command on ETH/UCY when the data are present."""
from __future__ import annotations

import json

import numpy as np
import pytest

from intent_perf_ros.bench import eval_intent
from intent_perf_ros.datasets import eth_ucy


def test_observed_counts_and_heading_scores():
    assert eval_intent.observed_counts(8) == [2, 4, 6]
    assert eval_intent.observed_counts(3) == [2, 2, 3]
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    goals = np.array([[10.0, 0.0], [2.0, 5.0], [-5.0, 0.0]])
    np.testing.assert_allclose(eval_intent.heading_scores(xy, 3, goals), [1.0, 0.0, -1.0], atol=1e-12)


def test_run_filter_reports_each_stop():
    from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

    tracker = BeliefTracker(BeliefConfig(goals=np.array([[20.0, 0.0], [-20.0, 0.0]]), capacity=1))
    frames = np.arange(10) * eth_ucy.FRAME_STEP
    xy = np.column_stack([0.5 * np.arange(10), np.zeros(10)])
    beliefs = eval_intent.run_filter(tracker, frames, xy, [3, 5, 8])
    assert len(beliefs) == 3
    assert beliefs[-1].argmax() == 0 and beliefs[-1][0] > beliefs[0][0]


@pytest.mark.skipif(not eth_ucy.default_data_dir().is_dir(), reason="ETH/UCY data not present")
def test_eval_intent_writes_the_schema(tmp_path):
    out = tmp_path / "intent.json"
    assert eval_intent.main(["--scenes", "zara1", "--max-tracks", "25", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"zara1", "average"}
    for row in report.values():
        assert set(row) == set(eval_intent.KEYS)
        for key in ("acc25", "acc50", "acc75", "baseline_acc50"):
            assert 0.0 <= row[key] <= 1.0
        assert row["logloss50"] > 0 and row["baseline_logloss50"] > 0
    # The belief beats chance among ~8 goals by far on this scene.
    assert report["zara1"]["acc50"] > 0.4


@pytest.mark.skipif(not eth_ucy.default_data_dir().is_dir(), reason="ETH/UCY data not present")
def test_eval_intent_seed_sets_the_particle_streams(tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        out = tmp_path / f"{name}.json"
        assert eval_intent.main(["--scenes", "zara1", "--max-tracks", "20", "--particles", "200",
                                 "--seed", str(seed), "--json", str(out)]) == 0
        runs[name] = json.loads(out.read_text())["zara1"]
    assert runs["a"] == runs["b"]  # a seed reproduces its figures exactly
    assert runs["a"]["logloss50"] != runs["c"]["logloss50"]  # another seed is another Monte Carlo draw
    assert runs["a"]["baseline_logloss50"] == runs["c"]["baseline_logloss50"]  # the baseline has no randomness


def test_parse_overrides():
    assert eval_intent.parse_overrides(["bayes_relax_time_s=0.9", "goal_noise = 0.5"]) == {
        "bayes_relax_time_s": 0.9, "goal_noise": 0.5}
    for bad in (["seed=3"], ["nonsense=1"], ["goal_noise"], ["goal_noise=abc"]):
        with pytest.raises(ValueError):
            eval_intent.parse_overrides(bad)


@pytest.mark.skipif(not eth_ucy.default_data_dir().is_dir(), reason="ETH/UCY data not present")
def test_eval_intent_train_files_and_overrides(tmp_path):
    from intent_perf_ros.core.belief.tracker import BeliefConfig

    runs = {}
    default = BeliefConfig(goals=np.zeros((1, 2))).bayes_relax_time_s
    for name, extra in (("default", []), ("same", ["--set", f"bayes_relax_time_s={default}"]),
                        ("slow", ["--set", "bayes_relax_time_s=3.0"])):
        out = tmp_path / f"{name}.json"
        assert eval_intent.main(["--train", "--mode", "bayes", "--max-tracks", "30", "--json", str(out), *extra]) == 0
        runs[name] = json.loads(out.read_text())
    # --train evaluates the two training files only, never the five scenes.
    assert set(runs["default"]) == {"zara3", "uni_examples", "average"}
    assert runs["default"] == runs["same"]  # --set with the default value changes nothing
    assert runs["slow"]["average"]["logloss50"] != runs["default"]["average"]["logloss50"]
    assert runs["slow"]["average"]["baseline_acc50"] == runs["default"]["average"]["baseline_acc50"]

"""``intent-perf bench BAG --duration``: the soak mode loops a tiny bag for ~30 s through the four node
processes; the JSON's soak section has loops, drift, lost commands and per-slice percentiles that agree
with the run's other counts."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from intent_perf_ros.runner import default_params_file, effective_params

pytestmark = pytest.mark.system

INTENT_PERF = str(Path(sys.executable).with_name("intent-perf"))  # the console script of this environment

BAG_S, RATE_HZ = 4.0, 20.0
DURATION_S, WARMUP_S, SLICE_S = 30.0, 10.0, 10.0


def test_soak_loops_the_bag_and_reports_drift_and_slices(tmp_path):
    bag_dir = tmp_path / "bag"
    subprocess.run([INTENT_PERF, "make-bag", "--synthetic", "--humans", "3", "--rate-hz", str(RATE_HZ),
                    "--duration", str(BAG_S), "--seed", "1", "--out", str(bag_dir)], check=True, timeout=60)
    # No training data: the GP node starts in a second with its constant-velocity predictor.
    params = effective_params(default_params_file(), 1, {"gp_inference_node": {
        "dataset_dir": str(tmp_path / "no_data"), "model_cache_dir": str(tmp_path / "models")}}, tmp_path)
    out = tmp_path / "soak.json"
    bench = subprocess.run([INTENT_PERF, "bench", str(bag_dir), "--duration", str(DURATION_S), "--warmup",
                            str(WARMUP_S), "--slice", str(SLICE_S), "--params-file", str(params), "--log-dir",
                            str(tmp_path / "logs"), "--startup-timeout", "120", "--json", str(out)],
                           capture_output=True, text=True, timeout=240)
    assert bench.returncode == 0, f"{bench.stdout}{bench.stderr}; node logs in {tmp_path / 'logs'}"
    assert "soak: " in bench.stdout
    result = json.loads(out.read_text())
    soak, obs = result["soak"], result["observations"]

    # Looped: each loop publishes the bag's 80 observations (the last one maybe in part), pausing
    # track_timeout_s (2 s) + 0.5 s between loops.
    per_loop = int(BAG_S * RATE_HZ)
    assert soak["loops"] > 1 and soak["loop_gap_s"] == pytest.approx(2.5)
    assert (soak["loops"] - 1) * per_loop < obs["sent"] <= soak["loops"] * per_loop
    assert obs["sent"] == result["topics"]["humans/tracked"]["published"]
    assert soak["played_s"] == pytest.approx(DURATION_S, abs=1.0)
    # A loop boundary is new people, not ids that jump: every track expired during the pause, and the
    # bag's 3 humans got new tracks in every loop.
    belief = result["node_extra"]["belief_node"]
    assert int(belief["belief.tracks_created"]) == 3 * soak["loops"]
    assert int(belief["belief.tracks_dropped"]) == 3 * (soak["loops"] - 1)

    # Counts agree: every answered observation is in exactly one slice.
    slices = soak["e2e_ms_per_slice"]
    assert [s["t0_s"] for s in slices] == [SLICE_S * k for k in range(math.ceil(DURATION_S / SLICE_S))]
    assert sum(s["count"] for s in slices) == result["e2e_ms"]["count"] == obs["answered"]
    assert obs["answered"] >= 0.9 * obs["sent"]
    assert all(0 < s["p50"] <= s["p95"] <= s["p99"] <= s["max"] < 1000 for s in slices if s["count"])

    # Drift from the end of the warm-up to the end, per node and in total; no command lost.
    nodes = {"gp_inference_node", "belief_node", "mpc_node", "monitor_node"}
    assert set(soak["rss_mb_after_warmup"]) == set(soak["rss_mb_end"]) == nodes
    assert set(soak["rss_drift_percent"]) == nodes | {"total"}
    assert all(math.isfinite(v) and abs(v) < 50 for v in soak["rss_drift_percent"].values())
    assert soak["lost_commands"] == 0 == result["topics"]["cmd_vel"]["lost"]
    assert {g["name"] for g in result["goals"]} >= {"rss_drift_percent", "lost_commands"}

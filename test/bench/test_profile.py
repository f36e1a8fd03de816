"""intent-perf profile writes its report for each node core."""
import json

import pytest

from intent_perf_ros.bench import profile


@pytest.mark.parametrize("node", ["mpc", "belief"])
def test_profile_report(tmp_path, node):
    assert profile.main([node, "--steps", "60", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["node"] == node and report["steps"] == 60
    assert report["functions"], "cProfile found no function over the threshold"
    assert {"step_ms", "rss_mb"} <= set(report["latency"])
    assert {"peak_bytes_above_start", "retained_bytes", "top_sites"} <= set(report["tracemalloc"])
    assert (tmp_path / "report.txt").read_text().strip()
    assert (tmp_path / "cprofile.pstats").stat().st_size > 0

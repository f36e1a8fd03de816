"""GP backend auto-selection rules, and a tiny side-by-side run of the GPU benchmark (CPU here)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from intent_perf_ros.core.gp import backend_select
from intent_perf_ros.core.gp.backend_select import DEFAULT_CROSSOVER, Crossover, choose_backend

SMALL = {"n_train": 300, "batch": 1}
BIG = {"n_train": 20000, "batch": 1000}


@pytest.fixture
def torch_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend torch is installed (the rules must not depend on this machine's venv)."""
    real = importlib.util.find_spec
    fake = importlib.machinery.ModuleSpec("torch", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: fake if name == "torch" else real(name, *a))


@pytest.fixture
def torch_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))


def test_auto_without_cuda_is_numpy_at_every_size(torch_present: None) -> None:
    for size in (SMALL, BIG):
        assert choose_backend("auto", **size, cuda_available=False) == "numpy"


def test_auto_with_cuda_follows_the_crossover(torch_present: None) -> None:
    c = Crossover(min_train=1000, min_batch=64, single_query_train=2500)
    pick = lambda n, b: choose_backend("auto", n, b, cuda_available=True, crossover=c)  # noqa: E731
    assert pick(20000, 1000) == "torch"
    assert pick(1000, 64) == "torch"  # both batched thresholds reached (inclusive)
    assert pick(999, 1000) == "numpy"  # large batch, too few training points
    assert pick(1000, 63) == "numpy"  # enough points, batch too small to amortise the launch
    assert pick(2499, 1) == "numpy"  # one query is launch-bound on a GPU
    assert pick(2500, 1) == "torch"  # ... until the CPU's N^2 memory traffic costs more
    assert pick(300, 1) == "numpy"


def test_default_crossover_keeps_small_problems_on_the_cpu(torch_present: None) -> None:
    # ANCHORS: one query costs 0.4-0.6 ms on an H200 vs 0.08-0.12 ms on this CPU at N = 1000
    assert choose_backend("auto", 1000, 1, cuda_available=True) == "numpy"
    # ... while 1000 queries at N = 20,000 are 51x faster there
    assert choose_backend("auto", 20000, 1000, cuda_available=True) == "torch"
    assert DEFAULT_CROSSOVER.torch_wins(5000, 1)  # 3.8-6.7 ms on the CPU vs ~0.5 ms on the GPU


def test_explicit_requests(torch_present: None) -> None:
    assert choose_backend("numpy", **BIG, cuda_available=True) == "numpy"
    assert choose_backend("numba", **BIG, cuda_available=True) == "numpy"
    assert choose_backend("torch", **SMALL, cuda_available=False) == "torch"  # honoured, on the CPU
    assert choose_backend("torch", **SMALL, cuda_available=True) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("cuda", **SMALL)
    with pytest.raises(ValueError, match=">= 0"):
        choose_backend("auto", -1, 1)


def test_missing_torch_falls_back_to_numpy_with_a_warning(
    torch_missing: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=backend_select.__name__):
        assert choose_backend("torch", **BIG) == "numpy"
    assert any("torch is not installed" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=backend_select.__name__):
        assert choose_backend("auto", **BIG, cuda_available=True) == "numpy"
    assert not caplog.records  # "auto" without torch is a normal numpy-only deployment


def test_auto_detects_cuda_lazily_only_above_the_crossover(
    torch_present: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fake_detect() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(backend_select, "detect_cuda", fake_detect)
    assert choose_backend("auto", **SMALL) == "numpy"
    assert choose_backend("numpy", **BIG) == "numpy"
    assert calls == []
    assert choose_backend("auto", **BIG) == "torch"
    assert calls == [1]


def _torch_imported_after(call: str, driver_present: bool = False) -> bool:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import intent_perf_ros.core.gp.backend_select as backend_select\n"
        "from intent_perf_ros.core.gp.backend_select import choose_backend\n"
        + ("backend_select.NVIDIA_DRIVER = Path('/')\n" if driver_present else "")
        + f"print({call})\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return out[-1] == "True"


def test_numpy_and_small_auto_never_import_torch() -> None:
    assert not _torch_imported_after("choose_backend('numpy', 20000, 1000)")
    assert not _torch_imported_after("choose_backend('auto', 300, 1)")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_large_auto_imports_torch_to_look_for_cuda_only_where_an_nvidia_driver_is() -> None:
    # the control for the test above: the sys.modules check does see an import when there is one
    assert _torch_imported_after("choose_backend('auto', 20000, 1000)", driver_present=True)
    assert not _torch_imported_after("choose_backend('auto', 20000, 1000)", driver_present=False)


def test_crossover_from_measurement() -> None:
    measured = {"min_train": 2000, "min_batch": 16, "single_query_train": None, "fit_min_train": 1000}
    c = Crossover.from_dict(measured)
    assert c == Crossover(min_train=2000, min_batch=16, single_query_train=DEFAULT_CROSSOVER.single_query_train)
    with pytest.raises(ValueError):
        Crossover(min_train=0)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_gpu_benchmark_quick_run(tmp_path: Path) -> None:
    from intent_perf_ros.bench import gpu_benchmark

    out = tmp_path / "gpu.json"
    rc = gpu_benchmark.main(
        ["--quick", "--sizes", "200", "20000", "--batches", "1", "50", "--threads", "1", "--json", str(out)]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"machine", "rows", "skipped", "crossover", "all_agree", "tolerance"}
    assert result["all_agree"] is True
    assert result["machine"]["device_name"]
    assert [(r["n_train"], r["batch"]) for r in result["rows"]] == [(200, 1), (200, 50)]
    assert [s["n_train"] for s in result["skipped"]] == [20000]  # --quick never runs N = 20,000
    for row in result["rows"]:
        assert row["agree"] and row["mean_rel_err"] < 1e-6 and row["var_rel_err"] < 1e-6
        assert row["numpy_fit_s"] > 0 and row["torch_predict_us"] > 0
        assert row["predict_numpy_over_torch"] == pytest.approx(row["numpy_predict_us"] / row["torch_predict_us"])
    assert set(result["crossover"]) >= {"min_train", "min_batch", "single_query_train", "measured_on"}
    Crossover.from_dict(result["crossover"])  # the measured crossover loads


def test_measured_crossover_reads_the_staircase() -> None:
    from intent_perf_ros.bench.gpu_benchmark import measured_crossover

    def row(n: int, m: int, torch_faster: bool) -> dict:
        return {"n_train": n, "batch": m, "predict_numpy_over_torch": 2.0 if torch_faster else 0.5,
                "fit_numpy_over_torch": 2.0 if n >= 5000 else 0.5}

    rows = [row(1000, 1, False), row(5000, 1, True), row(20000, 1, True),
            row(1000, 1000, True), row(5000, 1000, True), row(20000, 1000, True)]
    c = measured_crossover(rows, "test")
    assert (c["min_train"], c["min_batch"], c["single_query_train"], c["fit_min_train"]) == (1000, 1000, 5000, 5000)
    # a noisy win below a loss does not count: torch must win from there on
    c = measured_crossover([row(1000, 1, True), row(5000, 1, False), row(20000, 1, True)], "test")
    assert c["single_query_train"] == 20000 and c["min_batch"] is None

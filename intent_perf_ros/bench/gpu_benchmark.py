"""Exact GP on the GPU vs the CPU, side by side: fit + predict (mean and variance), and the crossover.

For each training size N and batch size M it fits the numpy backend (``ExactGP``: numba + BLAS,
the configuration ``TrajectoryPredictor`` builds) and the torch backend (``TorchExactGP`` on CUDA
when available, else on the CPU) on the same data (RBF, d = 4, float64), times the fit and
``predict_into`` of M queries, checks that both agree (mean and variance to 1e-6, relative to the
largest reference value), and reports times, ratios and the measured crossover: the smallest sizes
from which torch wins. ``backend_select.Crossover.from_dict`` reads that crossover; the defaults of
``backend_select.DEFAULT_CROSSOVER`` should be replaced by it once measured on the target GPU.

Why side by side in one run: machines are noisy, so only ratios measured together mean anything.
Why the numpy backend keeps its production settings (``predict_with="inverse"``): the question is
whether the node should switch, so the CPU side is what the node would otherwise run; its fit forms
K^-1 as well, which makes it costlier than a bare Cholesky (about 7x the flops).

Without CUDA the torch side runs on the CPU: the figures then compare two CPU backends, and the
crossover is labelled with the device it was measured on (it is not a GPU crossover). N = 20,000
needs about 3.2 GB per N x N matrix (peak about 6 of them in the numpy fit) and minutes on a small
CPU: it runs only without ``--quick`` and only when enough memory is free.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
from threadpoolctl import threadpool_limits

from intent_perf_ros.bench.gp_benchmark import JITTER, PARAMS, data, machine, median_time
from intent_perf_ros.core.gp.exact import ExactGP

TOLERANCE = 1e-6  # relative agreement of mean and variance between the backends (float64)
HOST_MATRICES = 6  # peak N x N float64 matrices in host memory (numpy fit measured at 5.2)
DEVICE_MATRICES = 5  # peak N x N matrices on the GPU during the torch fit (measured 4.2 on the CPU)
MIN_FREE_BYTES = 8 * 2**30  # never start a size that needs the whole N x N machinery with less free
QUICK_MAX_TRAIN = 5000


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_shortfall(n: int, device: str) -> str | None:
    """Why size ``n`` cannot run here (not enough host or GPU memory), or None when it can."""
    matrix = 8 * n * n
    need = max(HOST_MATRICES * matrix, MIN_FREE_BYTES if matrix >= 2**30 else 0)
    free = psutil.virtual_memory().available
    if free < need:
        return (
            f"needs about {need / 2**30:.1f} GiB of host memory ({matrix / 2**30:.2f} GiB per N x N matrix), "
            f"{free / 2**30:.1f} GiB available"
        )
    if device == "cuda":
        import torch

        gpu_free = torch.cuda.mem_get_info()[0]
        if gpu_free < DEVICE_MATRICES * matrix:
            return f"needs about {DEVICE_MATRICES * matrix / 2**30:.1f} GiB of GPU memory, {gpu_free / 2**30:.1f} free"
    return None


def _sync(device: str) -> None:
    """Wait for queued GPU work: the torch fit returns before its last triangular solve has run."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_fit(fit: Callable[[], object], device: str, reps: int) -> tuple[object, float]:
    """Median seconds of ``reps`` fits (no warm-up call here: ``warm_up`` ran once per process)."""
    times, model = [], None
    for _ in range(reps):
        model = None
        gc.collect()
        t0 = time.perf_counter()
        model = fit()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return model, float(np.median(times))


def relative_error(a: np.ndarray, ref: np.ndarray) -> float:
    """max |a - ref| / max |ref|: element-wise ratios blow up where a posterior mean crosses zero."""
    return float(np.abs(a - ref).max() / max(float(np.abs(ref).max()), 1e-300))


def warm_up(device: str) -> None:
    """Compile the numba loops and initialise CUDA, cuBLAS and cuSOLVER before anything is timed."""
    from intent_perf_ros.core.gp.torch_backend import TorchExactGP

    x, y, xq = data(64, 32, seed=1)
    for model in (ExactGP(PARAMS, jitter=JITTER), TorchExactGP(PARAMS, jitter=JITTER, device=device)):
        model.fit(x, y)
        for m in (1, 32):
            model.predict(xq[:m])
    _sync(device)


def bench_size(n: int, batches: list[int], device: str, quick: bool) -> list[dict]:
    """Fit and predict at one training size with both backends; one row per batch size."""
    from intent_perf_ros.core.gp.torch_backend import TorchExactGP

    x, y, xq = data(n, max(batches))
    fit_reps = 1 if quick or n >= 5000 else 3
    predict_reps = 3 if quick or n >= 5000 else 5
    budget = 0.2 if quick else 1.0
    results: dict[str, dict] = {}
    makers = {
        "numpy": lambda: ExactGP(PARAMS, jitter=JITTER).fit(x, y),
        "torch": lambda: TorchExactGP(PARAMS, jitter=JITTER, device=device).fit(x, y),
    }
    for name, make in makers.items():  # one model alive at a time: at N = 20,000 each holds GBs
        model, t_fit = time_fit(make, device if name == "torch" else "cpu", fit_reps)
        res = results[name] = {"fit_s": t_fit, "predict_s": {}, "mean": {}, "var": {}}
        for m in batches:
            q = np.ascontiguousarray(xq[:m])
            mean, var = np.empty((m, y.shape[1])), np.empty(m)
            model.reserve(m)
            res["predict_s"][m] = median_time(
                lambda model=model, q=q, mean=mean, var=var: model.predict_into(q, mean, var),
                min_reps=predict_reps,
                budget_s=budget,
            )
            res["mean"][m], res["var"][m] = mean, var
        del model
        gc.collect()
    rows = []
    for m in batches:
        npy, tch = results["numpy"], results["torch"]
        mean_err = relative_error(tch["mean"][m], npy["mean"][m])
        var_err = relative_error(tch["var"][m], npy["var"][m])
        rows.append(
            {
                "n_train": n,
                "batch": m,
                "numpy_fit_s": npy["fit_s"],
                "torch_fit_s": tch["fit_s"],
                "fit_numpy_over_torch": npy["fit_s"] / tch["fit_s"],
                "numpy_predict_us": 1e6 * npy["predict_s"][m],
                "torch_predict_us": 1e6 * tch["predict_s"][m],
                "predict_numpy_over_torch": npy["predict_s"][m] / tch["predict_s"][m],
                "mean_rel_err": mean_err,
                "var_rel_err": var_err,
                "agree": mean_err < TOLERANCE and var_err < TOLERANCE,
            }
        )
    return rows


def _first_winning(points: list[tuple[int, bool]]) -> int | None:
    """Smallest size from which torch wins at every larger measured size (noise-robust staircase)."""
    first = None
    for size, wins in sorted(points, reverse=True):
        if not wins:
            break
        first = size
    return first


def measured_crossover(rows: list[dict], device_name: str) -> dict:
    """The ``Crossover`` fields (see ``backend_select``) read off the measured grid.

    ``single_query_train``: from which N torch wins a batch of 1. ``min_batch`` / ``min_train``: the
    batch size > 1 at which torch wins from the smallest N (ties: the smaller batch), and that N.
    None where torch never won in the measured range. ``fit_min_train``: from which N the fit wins.
    """
    batches = sorted({r["batch"] for r in rows})
    per_batch = {
        m: _first_winning([(r["n_train"], r["predict_numpy_over_torch"] > 1.0) for r in rows if r["batch"] == m])
        for m in batches
    }
    batched = sorted((n, m) for m, n in per_batch.items() if m > 1 and n is not None)
    fit_points = {(r["n_train"], r["fit_numpy_over_torch"] > 1.0) for r in rows}
    return {
        "min_train": batched[0][0] if batched else None,
        "min_batch": batched[0][1] if batched else None,
        "single_query_train": per_batch.get(1),
        "fit_min_train": _first_winning(sorted(fit_points)),
        "predict_min_train_per_batch": {str(m): n for m, n in per_batch.items()},
        "measured_on": device_name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intent-perf gpu-benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="training sizes N")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 1000], help="queries per predict call")
    parser.add_argument(
        "--quick", action="store_true", help=f"fewer repetitions; sizes above {QUICK_MAX_TRAIN} are skipped"
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both backends (0: all cores)")
    args = parser.parse_args(argv)
    if min(args.sizes) < 2 or min(args.batches) < 1:
        parser.error("sizes must be >= 2 and batches >= 1")
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to compare the numpy backend with", file=sys.stderr)
        return 2
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU: {cpu_model()}"
    print(f"torch device: {device} ({device_name}); numpy backend on {threads} CPU threads of {cpu_model()}")
    if device == "cpu":
        print("no CUDA device: the torch side runs on the CPU; the crossover below is not a GPU crossover")
    rows: list[dict] = []
    skipped: list[dict] = []
    batches = sorted(set(args.batches))
    with threadpool_limits(threads):
        warm_up(device)
        for n in sorted(set(args.sizes)):
            reason = f"--quick runs N <= {QUICK_MAX_TRAIN} only" if args.quick and n > QUICK_MAX_TRAIN else None
            reason = reason or memory_shortfall(n, device)
            if reason:
                print(f"N={n:6d} skipped: {reason}")
                skipped.append({"n_train": n, "reason": reason})
                continue
            for row in bench_size(n, batches, device, args.quick):
                rows.append(row)
                print(
                    f"N={n:6d} M={row['batch']:5d}  fit numpy {row['numpy_fit_s'] * 1e3:9.1f} ms "
                    f"torch {row['torch_fit_s'] * 1e3:9.1f} ms ({row['fit_numpy_over_torch']:5.2f}x)  "
                    f"predict numpy {row['numpy_predict_us']:10.1f} us torch {row['torch_predict_us']:10.1f} us "
                    f"({row['predict_numpy_over_torch']:5.2f}x)  agree {row['agree']} "
                    f"(mean {row['mean_rel_err']:.1e}, var {row['var_rel_err']:.1e})"
                )
    crossover = measured_crossover(rows, device_name) if rows else None
    if crossover:
        print(
            "measured crossover (torch wins from): "
            f"Crossover(min_train={crossover['min_train']}, min_batch={crossover['min_batch']}, "
            f"single_query_train={crossover['single_query_train']}); fit from N={crossover['fit_min_train']}; "
            f"measured on {device_name}"
        )
    all_agree = all(r["agree"] for r in rows)
    info = machine(threads) | {
        "torch": torch.__version__,
        "torch_device": device,
        "device_name": device_name,
        "cpu_model": cpu_model(),
        "cuda": torch.version.cuda,
    }
    result = {
        "machine": info,
        "tolerance": TOLERANCE,
        "quick": args.quick,
        "rows": rows,
        "skipped": skipped,
        "crossover": crossover,
        "all_agree": all_agree,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if not all_agree:
        print(f"DISAGREEMENT: the backends differ by more than {TOLERANCE:g} (see rows)", file=sys.stderr)
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())

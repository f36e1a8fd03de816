"""GP prediction speed, side by side: ours vs scikit-learn, the memory-bound floor, updates, torch.

For N = 100, 1000, 5000 training points (RBF, d = 4, float64) and M = 1, 100 queries it times
``ExactGP.predict_into`` (numba kernel + BLAS triangular solve into preallocated buffers) against
``GaussianProcessRegressor.predict(return_std=True)`` with the same kernel and data, checks that
means and standard deviations agree to 1e-8, and times the floor that any exact predictor must
pay: one symmetric matrix-vector product over an N x N matrix (``dsymv``; ``dsymm`` for M = 100).
It also times a one-point incremental update (drop oldest + append) against a refit at N = 1000,
the sparse GP, and the torch backend on the CPU. Medians over repetitions; JSON via ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import sklearn
from scipy.linalg import blas
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, WhiteKernel
from sklearn.gaussian_process.kernels import ConstantKernel as C
from threadpoolctl import threadpool_info, threadpool_limits

from intent_perf_ros.core.gp.exact import ExactGP
from intent_perf_ros.core.gp.kernels import RBFParams
from intent_perf_ros.core.gp.online import OnlineGP, compile_online_kernels
from intent_perf_ros.core.gp.sparse import SparseGP

PARAMS = RBFParams(np.array([0.8, 1.1, 1.5, 2.0]), 1.3, 0.05)
JITTER = 1e-10


def median_time(fn, min_reps: int = 5, budget_s: float = 0.5) -> float:
    """Median seconds of ``fn()`` over at least ``min_reps`` calls or ``budget_s`` seconds."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 2000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def data(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = np.sin(x @ np.array([1.0, -0.5, 0.3, 0.8]))[:, None] + 0.2 * rng.normal(size=(n, 1))
    return x, y, rng.normal(size=(m, 4))


def sklearn_model(x: np.ndarray, y: np.ndarray) -> GaussianProcessRegressor:
    kernel = C(PARAMS.signal_var, "fixed") * RBF(PARAMS.lengthscales, "fixed") + WhiteKernel(
        PARAMS.noise_var, "fixed"
    )
    return GaussianProcessRegressor(
        kernel, alpha=JITTER * (PARAMS.signal_var + PARAMS.noise_var), optimizer=None
    ).fit(x, y.ravel())


def bench_predict(n: int, m: int, torch_ok: bool) -> dict:
    x, y, xq = data(n, m)
    ours = ExactGP(PARAMS, jitter=JITTER).fit(x, y)
    ours.reserve(m)
    mean, var = np.empty((m, 1)), np.empty(m)
    t_ours = median_time(lambda: ours.predict_into(xq, mean, var))
    ref = sklearn_model(x, y)
    t_sk = median_time(lambda: ref.predict(xq, return_std=True), min_reps=3, budget_s=1.0)
    ref_mean, ref_std = ref.predict(xq, return_std=True)
    ours.predict_into(xq, mean, var)
    sym = np.asfortranarray(ours.L_ @ ours.L_.T)
    if m == 1:
        vec, out = np.ones(n), np.empty(n)
        t_floor = median_time(lambda: blas.dsymv(1.0, sym, vec, y=out, overwrite_y=1))
        floor = "dsymv (one symmetric matrix-vector product, N x N)"
    else:
        rhs, out = np.asfortranarray(np.ones((n, m))), np.asfortranarray(np.empty((n, m)))
        t_floor = median_time(lambda: blas.dsymm(1.0, sym, rhs, c=out, overwrite_c=1))
        floor = "dsymm (symmetric matrix times N x M)"
    row = {
        "n_train": n,
        "n_queries": m,
        "ours_us": 1e6 * t_ours,
        "sklearn_us": 1e6 * t_sk,
        "floor_us": 1e6 * t_floor,
        "floor": floor,
        "speedup_vs_sklearn": t_sk / t_ours,
        "ratio_to_floor": t_ours / t_floor,
        "max_abs_diff_mean": float(np.abs(mean[:, 0] - ref_mean).max()),
        "max_abs_diff_std": float(np.abs(np.sqrt(var) - ref_std).max()),
    }
    row["agree_1e-8"] = row["max_abs_diff_mean"] < 1e-8 and row["max_abs_diff_std"] < 1e-8
    if n >= 1000:
        sparse = SparseGP(PARAMS, n_inducing=300).fit(x, y)
        sparse.reserve(m)
        row["sparse300_us"] = 1e6 * median_time(lambda: sparse.predict_into(xq, mean, var))
    if torch_ok:
        from intent_perf_ros.core.gp.torch_backend import TorchExactGP

        tmodel = TorchExactGP(PARAMS, jitter=JITTER, device="cpu").fit(x, y)
        tmean, tvar = np.empty((m, 1)), np.empty(m)
        row["torch_cpu_us"] = 1e6 * median_time(lambda: tmodel.predict_into(xq, tmean, tvar))
        ours.predict_into(xq, mean, var)
        row["torch_max_abs_diff"] = float(max(np.abs(tmean - mean).max(), np.abs(tvar - var).max()))
    return row


def bench_update(n: int = 1000) -> dict:
    """One new point into a full FIFO window of n (drop oldest + append) vs a refit of n points."""
    compile_online_kernels()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(n + 400, 4)), rng.normal(size=(n + 400, 24))
    model = OnlineGP(PARAMS, capacity=n, jitter=1e-8).fit(x[:n], y[:n])
    counter = iter(range(n, n + 400))

    def update() -> None:
        i = next(counter)
        model.add(x[i : i + 1], y[i : i + 1])

    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        update()
        times.append(time.perf_counter() - t0)
    t_update = float(np.median(times[5:]))
    t_refit = median_time(
        lambda: ExactGP(PARAMS, jitter=1e-8).fit(model.x_train_, model.y_train_), min_reps=5
    )
    return {
        "n_train": n,
        "n_outputs": 24,
        "update_us": 1e6 * t_update,
        "refit_us": 1e6 * t_refit,
        "refit_over_update": t_refit / t_update,
        "refits_during_updates": model.refits_ - 1,
    }


def machine(threads: int) -> dict:
    blas_libs = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "blas_threads": threads,
        "blas": blas_libs,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intent-perf gp-benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 100])
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads for every timed call (default 1)"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the torch CPU backend")
    args = parser.parse_args(argv)
    torch_ok = False
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
            torch_ok = True
        except ImportError:
            print("torch not installed: skipping the torch backend", file=sys.stderr)
    with threadpool_limits(args.threads):
        rows = []
        for n in args.sizes:
            for m in args.queries:
                row = bench_predict(n, m, torch_ok)
                rows.append(row)
                print(
                    f"N={n:5d} M={m:3d}  ours {row['ours_us']:9.1f} us  sklearn {row['sklearn_us']:10.1f} us "
                    f"({row['speedup_vs_sklearn']:6.1f}x)  floor {row['floor_us']:8.1f} us "
                    f"(ours/floor {row['ratio_to_floor']:4.2f})  agree {row['agree_1e-8']}"
                    + (f"  torch {row['torch_cpu_us']:9.1f} us" if "torch_cpu_us" in row else "")
                    + (f"  sparse300 {row['sparse300_us']:7.1f} us" if "sparse300_us" in row else "")
                )
        update = bench_update()
        print(
            f"N=1000 one-point update {update['update_us']:.0f} us vs refit {update['refit_us']:.0f} us "
            f"({update['refit_over_update']:.1f}x)"
        )
    result = {"machine": machine(args.threads), "predict": rows, "update": update}
    if torch_ok:
        import torch

        result["machine"]["torch"] = torch.__version__
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

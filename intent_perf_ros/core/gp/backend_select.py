"""Which exact-GP backend to run: numpy (numba + BLAS, ``ExactGP``) or torch (``TorchExactGP``).

Why a rule at all: a GPU only pays for large training sets and large batches. Per call it costs a
fixed ~0.5 ms (kernel launches, host-device copies, a synchronisation), while the CPU cost of a
prediction grows as N^2 per query (the variance reads the whole N x N factor). Below the crossover
the numpy backend is faster *and* keeps torch (about 200 MB of RSS, a second of import) out of the
process, so "auto" only goes to torch when CUDA is present and the problem is big enough.

Why this rule: the boundary is a staircase, not a single size. One query is memory-bound on the CPU
(8 N^2 bytes read) and launch-bound on the GPU, so it moves to the GPU only for a large N; a batch
is compute-bound (N^2 M flops for the triangular solve) and moves at a much smaller N. Hence three
numbers (see ``Crossover``).

Where the defaults come from: no GPU was available where this module was written, so
``DEFAULT_CROSSOVER`` is derived from the figures in ``shared/docs/ANCHORS.md`` (NVIDIA H200, torch
2.11, float64, measured elsewhere) against the CPU figures of the 2-core development machine:

* H200: one query 0.4-0.6 ms whatever N (launch-bound); 1000 queries at N = 20,000 in 14.7 ms
  (about 27 TFLOP/s on the solve); fit at N = 20,000 in 87 ms vs 5.9 s on 16 CPU cores.
* CPU: one query 80-115 us at N = 1000 and 3.8-6.7 ms at N = 5000 (about N^2); a batch of M
  queries costs about N^2 M / 50 GFLOP/s.
* One query: the CPU passes 0.6 ms near N = 1000 * sqrt(0.6 / 0.1), about 2500 -> ``single_query_train``.
* Batches at N = 1000: the CPU passes 0.6 ms near M = 0.6 ms * 50 GFLOP/s / 1e6, about 30; the
  GPU is still at its launch floor there. With margin for the copies: ``min_batch`` = 64 from
  ``min_train`` = 1000 (below N = 1000 the CPU solve of a whole batch stays under a millisecond).

``python -m intent_perf_ros.bench.gpu_benchmark --json out/gpu_benchmark.json`` on a CUDA machine
measures both backends side by side and writes the measured crossover under ``"crossover"``;
``Crossover.from_dict`` loads it, and those numbers should replace the defaults below.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "numba", "torch")  # "numba" is an alias of "numpy": ExactGP is numba + BLAS


@dataclass(frozen=True)
class Crossover:
    """Sizes from which the torch backend on CUDA beats the numpy backend on the CPU.

    Torch is chosen when ``n_train >= single_query_train`` (even one query is faster on the GPU),
    or when ``n_train >= min_train`` and ``batch >= min_batch`` (a batch amortises the launch cost).
    """

    min_train: int = 1000
    min_batch: int = 64
    single_query_train: int = 2500

    def __post_init__(self) -> None:
        if min(self.min_train, self.min_batch, self.single_query_train) < 1:
            raise ValueError(f"crossover sizes must be >= 1, got {self}")

    def torch_wins(self, n_train: int, batch: int) -> bool:
        """True when a problem of this size is expected to run faster on the GPU."""
        return n_train >= self.single_query_train or (n_train >= self.min_train and batch >= self.min_batch)

    @classmethod
    def from_dict(cls, measured: dict[str, Any]) -> Crossover:
        """Crossover from the ``"crossover"`` entry that ``gpu_benchmark`` writes.

        Fields the benchmark could not measure (None: torch never won in the measured range) fall
        back to the defaults, so a partial measurement never makes torch *more* likely than assumed.
        """
        default = cls()
        values = {
            name: measured[name] if measured.get(name) is not None else getattr(default, name)
            for name in ("min_train", "min_batch", "single_query_train")
        }
        return cls(**{k: int(v) for k, v in values.items()})


DEFAULT_CROSSOVER = Crossover()


def torch_installed() -> bool:
    """Whether torch can be imported, without importing it (an import costs ~1 s and ~200 MB)."""
    return importlib.util.find_spec("torch") is not None


NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def detect_cuda() -> bool:
    """Ask torch for a usable CUDA device; False when torch is missing or broken. Without an NVIDIA
    kernel driver there can be no CUDA device, so torch is not even imported (saves ~200 MB)."""
    if not NVIDIA_DRIVER.exists():
        return False
    try:
        import torch
    except Exception as exc:  # a broken install must not take the node down; numpy still works
        LOG.warning("torch is installed but failed to import (%s); using the numpy GP backend", exc)
        return False
    return bool(torch.cuda.is_available())


def choose_backend(
    requested: str,
    n_train: int,
    batch: int,
    cuda_available: bool | None = None,
    crossover: Crossover = DEFAULT_CROSSOVER,
) -> str:
    """Return "numpy" or "torch" for an exact GP of ``n_train`` points predicting ``batch`` queries.

    * "numpy" / "numba": always "numpy"; torch is neither imported nor looked for.
    * "torch": "torch" whenever torch is installed, on the CPU if there is no CUDA (an explicit
      request is honoured, e.g. to test the backend); "numpy" with a warning if torch is missing.
    * "auto": "torch" only when torch is installed, CUDA is available and ``crossover.torch_wins``;
      otherwise "numpy". Torch on the CPU is never chosen by "auto": on this project's CPUs it is
      slower than the numpy backend at every size measured.

    ``cuda_available=None`` detects CUDA lazily: only for "auto" and only when the size is above the
    crossover, so a small "auto" problem does not import torch either. Pass a bool to override.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {requested!r}")
    if n_train < 0 or batch < 0:
        raise ValueError(f"n_train and batch must be >= 0, got {n_train} and {batch}")
    if requested in ("numpy", "numba"):
        return "numpy"
    if not torch_installed():
        if requested == "torch":
            LOG.warning("backend 'torch' requested but torch is not installed; using the numpy GP backend")
        else:
            LOG.debug("torch not installed: 'auto' uses the numpy GP backend")
        return "numpy"
    if requested == "torch":
        if cuda_available is False:
            LOG.info("backend 'torch' requested without CUDA: the torch GP runs on the CPU")
        return "torch"
    if not crossover.torch_wins(n_train, batch):
        return "numpy"
    if cuda_available is None:
        cuda_available = detect_cuda()
    if cuda_available:
        LOG.info("GP backend auto: torch on CUDA (N=%d, batch=%d above %s)", n_train, batch, crossover)
        return "torch"
    return "numpy"

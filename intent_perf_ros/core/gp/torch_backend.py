"""Exact GP in torch: CUDA when available (large N, large batches), else CPU.

Same math and interface as ``ExactGP`` (R&W Alg. 2.1, cached L and beta = L^-1 Y). Imported only
when ``PredictorConfig.backend == "torch"`` so numpy-only deployments never load torch. Unlike the
numpy backend, predict allocates device tensors per call (torch's caching allocator reuses them);
on one query it is launch-bound on a GPU, so it pays for big N and big batches only.
"""

from __future__ import annotations

import numpy as np
import torch

from intent_perf_ros.core.gp.exact import allocating_predict, check_xy
from intent_perf_ros.core.gp.kernels import RBFParams


def _rbf(a: torch.Tensor, b: torch.Tensor, inv_ls: torch.Tensor, signal_var: float) -> torch.Tensor:
    return signal_var * torch.exp(-0.5 * torch.cdist(a * inv_ls, b * inv_ls).square())


class TorchExactGP:
    """Exact GP on a torch device with ``predict_into`` writing numpy buffers."""

    def __init__(
        self,
        params: RBFParams,
        jitter: float = 1e-10,
        max_jitter: float = 1e-2,
        dtype: str = "float64",
        device: str | None = None,
    ) -> None:
        self.params = params
        self.jitter = jitter
        self.max_jitter = max_jitter
        self.dtype = dtype
        self.device = device

    def _torch_setup(self) -> None:
        self.device_ = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tdtype_ = torch.float64 if self.dtype == "float64" else torch.float32
        self.inv_ls_t_ = torch.as_tensor(
            1.0 / self.params.lengthscales, dtype=self.tdtype_, device=self.device_
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> TorchExactGP:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        check_xy(x, y)
        self._torch_setup()
        p = self.params
        self.x_train_ = x
        self.y_train_ = y
        xt = torch.as_tensor(x, dtype=self.tdtype_, device=self.device_)
        k = _rbf(xt, xt, self.inv_ls_t_, p.signal_var)
        k.diagonal().add_(p.noise_var)
        scale = float(k.diagonal().mean())
        eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
        added = self.jitter
        while True:  # adaptive jitter, as linalg.cholesky_jittered
            lower, info = torch.linalg.cholesky_ex(k + (added * scale) * eye)
            if int(info) == 0:
                break
            if added >= self.max_jitter:
                raise np.linalg.LinAlgError(
                    "kernel matrix not positive definite even with max_jitter; "
                    "remove duplicate inputs or raise the noise variance"
                )
            added = max(added * 10.0, 1e-12)
        self.jitter_ = added
        self.L_t_ = lower
        self.beta_t_ = torch.linalg.solve_triangular(
            lower, torch.as_tensor(y, dtype=self.tdtype_, device=self.device_), upper=False
        )
        self.x_t_ = xt
        return self

    @property
    def n_train(self) -> int:
        return self.x_train_.shape[0] if hasattr(self, "x_train_") else 0

    def reserve(self, max_queries: int) -> None:
        """Run one prediction so kernels are loaded and the caching allocator is primed."""
        probe = np.zeros((max(max_queries, 1), self.x_train_.shape[1]), dtype=np.dtype(self.dtype))
        self.predict_into(
            probe,
            np.empty((probe.shape[0], self.beta_t_.shape[1]), probe.dtype),
            np.empty(probe.shape[0], probe.dtype),
        )

    def predict_into(
        self, xq: np.ndarray, out_mean: np.ndarray, out_var: np.ndarray, include_noise: bool = True
    ) -> None:
        m = xq.shape[0]
        if m == 0:
            return
        p = self.params
        q = torch.as_tensor(xq, dtype=self.tdtype_).to(self.device_)
        ks = _rbf(q, self.x_t_, self.inv_ls_t_, p.signal_var)
        v = torch.linalg.solve_triangular(self.L_t_, ks.T, upper=False)  # R&W Alg. 2.1 line 5
        mean = v.T @ self.beta_t_
        var = (p.signal_var + (p.noise_var if include_noise else 0.0)) - v.square().sum(0)
        out_mean[:m] = mean.cpu().numpy()
        out_var[:m] = var.clamp_min(0.0).cpu().numpy()

    def predict(self, xq: np.ndarray, include_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return allocating_predict(self, xq, self.x_train_.shape[1], self.beta_t_.shape[1], include_noise)

    def loo_residuals(self) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form leave-one-out residuals and variances (R&W eq. 5.12)."""
        k_inv = torch.cholesky_inverse(self.L_t_)
        alpha = torch.cholesky_solve(
            torch.as_tensor(self.y_train_, dtype=self.tdtype_, device=self.device_), self.L_t_
        )
        diag = k_inv.diagonal()
        return (alpha / diag[:, None]).cpu().numpy(), (1.0 / diag).cpu().numpy()

    def state(self) -> dict[str, np.ndarray]:
        return {
            "x_train": self.x_train_,
            "y_train": self.y_train_,
            "L": self.L_t_.cpu().numpy(),
            "beta": self.beta_t_.cpu().numpy(),
            "jitter": np.array(self.jitter_),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> TorchExactGP:
        self._torch_setup()
        self.x_train_ = np.asarray(state["x_train"], dtype=np.float64)
        self.y_train_ = np.asarray(state["y_train"], dtype=np.float64)
        self.x_t_ = torch.as_tensor(self.x_train_, dtype=self.tdtype_, device=self.device_)
        self.L_t_ = torch.as_tensor(state["L"], dtype=self.tdtype_, device=self.device_)
        self.beta_t_ = torch.as_tensor(state["beta"], dtype=self.tdtype_, device=self.device_)
        self.jitter_ = float(state["jitter"])
        return self

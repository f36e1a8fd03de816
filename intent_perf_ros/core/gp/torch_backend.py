"""Exact GP in torch: CUDA when available (large N, large batches), else CPU.

Same math and interface as ``ExactGP`` (R&W Alg. 2.1, cached L and beta = L^-1 Y). Imported only
when ``PredictorConfig.backend == "torch"`` so numpy-only deployments never load torch. ``reserve``
allocates every tensor ``predict_into`` needs for up to that many queries (on CUDA also pinned host
buffers for the transfers), and each step writes into them with ``out=`` or in place: steady-state
predictions allocate no tensor (checked with torch's memory profiler). On one query it is
launch-bound on a GPU, so it pays for big N and big batches only.
"""

from __future__ import annotations

import numpy as np
import torch

from intent_perf_ros.core.gp.exact import allocating_predict, check_xy
from intent_perf_ros.core.gp.kernels import RBFParams


def _rbf(a: torch.Tensor, b: torch.Tensor, inv_ls: torch.Tensor, signal_var: float) -> torch.Tensor:
    """The kernel matrix of a fit (allocating; prediction uses the buffers of ``reserve``)."""
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
        self.max_queries_ = 0  # the buffers depend on the training set: allocated again by reserve()
        return self

    @property
    def n_train(self) -> int:
        return self.x_train_.shape[0] if hasattr(self, "x_train_") else 0

    def reserve(self, max_queries: int) -> None:
        """Allocate the buffers for up to ``max_queries`` queries and run one prediction (kernels loaded)."""
        self._allocate(max(max_queries, 1))
        probe = np.zeros((self.max_queries_, self.x_train_.shape[1]), dtype=np.dtype(self.dtype))
        p = self.beta_t_.shape[1]
        self.predict_into(probe, np.empty((len(probe), p), probe.dtype), np.empty(len(probe), probe.dtype))

    def _allocate(self, m: int) -> None:
        n, d, p = self.x_train_.shape[0], self.x_train_.shape[1], self.beta_t_.shape[1]
        opts = {"dtype": self.tdtype_, "device": self.device_}
        # Kernel by ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b on lengthscale-scaled inputs, as cdist does for
        # large inputs: one matrix product into a buffer, where cdist returns a new tensor.
        # A Python number in an in-place op becomes a new 0-dim tensor at every call; a Scalar argument
        # (alpha, clamp bounds) does not. So log(sf2) is folded into the training norms, exp then gives
        # sf2 * exp(-d^2 / 2) directly, and constants enter as ``alpha`` of a 0-dim tensor of 1.
        self.log_sf2_ = float(np.log(self.params.signal_var))
        self.xs_t_ = self.x_t_ * self.inv_ls_t_
        self.half_xsq_t_ = 0.5 * self.xs_t_.square().sum(1, keepdim=True) - self.log_sf2_  # (n, 1)
        self._one = torch.ones((), **opts)
        self._q = torch.empty((m, d), **opts)
        self._qsq = torch.empty(m, **opts)
        # (k, n) views of flat storage stay contiguous for any k <= m; transposed, they are the column-major
        # (n, k) right-hand side and result that the triangular solve (LAPACK trsm) works on without a copy
        self._ks_flat = torch.empty(n * m, **opts)
        self._v_flat = torch.empty(n * m, **opts)
        self._mean = torch.empty((m, p), **opts)
        self._var = torch.empty(m, **opts)
        pin = self.device_.type == "cuda"
        self._q_host = self._q if not pin else torch.empty((m, d), dtype=self.tdtype_, pin_memory=True)
        self._mean_host = self._mean if not pin else torch.empty((m, p), dtype=self.tdtype_, pin_memory=True)
        self._var_host = self._var if not pin else torch.empty(m, dtype=self.tdtype_, pin_memory=True)
        self._q_np, self._mean_np, self._var_np = self._q_host.numpy(), self._mean_host.numpy(), self._var_host.numpy()
        self.max_queries_ = m

    def predict_into(
        self, xq: np.ndarray, out_mean: np.ndarray, out_var: np.ndarray, include_noise: bool = True
    ) -> None:
        m = xq.shape[0]
        if m == 0:
            return
        if m > getattr(self, "max_queries_", 0):
            self._allocate(m)  # as ExactGP: the buffers grow (allocating once) for more queries than reserved
        p, n = self.params, self.x_train_.shape[0]
        self._q_np[:m] = xq
        q = self._q[:m]
        if self._q_host is not self._q:
            q.copy_(self._q_host[:m], non_blocking=True)
        q.mul_(self.inv_ls_t_)
        qsq = self._qsq[:m]
        torch.linalg.vector_norm(q, dim=1, out=qsq)
        qsq.square_()
        ks = self._ks_flat[: n * m].view(m, n)  # K(Xq, X)
        torch.mm(q, self.xs_t_.T, out=ks)
        ks.sub_(self.half_xsq_t_.T).sub_(qsq[:, None], alpha=0.5).clamp_max_(self.log_sf2_).exp_()
        v = self._v_flat[: n * m].view(m, n)
        torch.linalg.solve_triangular(self.L_t_, ks.T, upper=False, out=v.T)  # R&W Alg. 2.1 line 5
        mean, var = self._mean[:m], self._var[:m]
        torch.mm(v, self.beta_t_, out=mean)
        torch.linalg.vector_norm(v, dim=1, out=var)
        var.square_().neg_().add_(self._one, alpha=p.signal_var + (p.noise_var if include_noise else 0.0))
        var.clamp_min_(0.0)
        if self._mean_host is not self._mean:
            self._mean_host[:m].copy_(mean, non_blocking=True)
            self._var_host[:m].copy_(var, non_blocking=True)
            torch.cuda.current_stream(self.device_).synchronize()
        out_mean[:m] = self._mean_np[:m]
        out_var[:m] = self._var_np[:m]

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
        self.max_queries_ = 0
        return self

"""Online exact GP over a bounded, first-in-first-out window of training points.

Adding k points appends a block to the Cholesky factor (O(N^2 k)); dropping the oldest r points
is a rank-r update of the trailing block (O(N^2 r)); the factor is recomputed from scratch only
when the hyperparameters change (``set_params``) or an update loses positive definiteness.

Block append (Osborne 2010, §B.1): for K' = [[K, k], [k^T, kappa]],
    L' = [[L, 0], [B^T, C]],  B = L \\ k,  C = chol(kappa - B^T B),  beta' = [beta; C \\ (y - B^T beta)].
Drop the first r points: with L = [[L11, 0], [L21, L22]], K22 = L21 L21^T + L22 L22^T, so the new
factor is L22 updated by the columns of L21 (rank-1 Cholesky updates, Golub & Van Loan §6.5.4).
Each update is a sequence of Givens rotations of [L22 | x]; since Y2 = L22 beta2 + x beta1_j, the
same rotations carry beta = L^-1 Y along, so no O(N^2 P) re-solve is needed.

Storage: the factor lives in a flat buffer of capacity^2 with leading dimension n (compact
Fortran order), so ``L_`` is always a contiguous view that BLAS takes without a copy.
"""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core.gp.exact import ExactGP, allocating_predict_mean, check_xy
from intent_perf_ros.core.gp.kernels import RBFParams, gp_loops, rbf_cross_into
from intent_perf_ros.core.gp.linalg import trsm_lower_inplace

# The two updates are loops of ``loops`` (numba; compiled ahead of time by make), for the model dtype:
# ``drop_first_into(lflat, n, r, ld_out, beta, x, w)`` removes the first r points from the factor (stored
# with leading dimension n) and from beta, in place, storing the result with leading dimension ld_out;
# ``append_into(lflat, n, ld_in, k, kcross, kappa, beta, y_new, b)`` appends k points and returns False
# when the Schur complement is not positive definite.


class OnlineGP(ExactGP):
    """Exact GP whose training set is a FIFO window of at most ``capacity`` points."""

    def __init__(
        self,
        params: RBFParams,
        capacity: int = 1000,
        jitter: float = 1e-8,
        max_jitter: float = 1e-2,
        dtype: str = "float64",
    ) -> None:
        super().__init__(params, jitter=jitter, max_jitter=max_jitter, dtype=dtype, predict_with="solve")
        self.capacity = capacity

    def fit(self, x: np.ndarray, y: np.ndarray) -> OnlineGP:
        """Full refit on the newest ``capacity`` rows; (re)allocates the capacity-sized buffers."""
        x = np.asarray(x, dtype=np.float64)[-self.capacity :]
        y = np.asarray(y, dtype=np.float64)[-self.capacity :]
        check_xy(x, y)
        self._allocate(x.shape[1], y.shape[1])
        if x.shape[0]:
            exact = ExactGP(self.params, self.jitter, self.max_jitter, self.dtype, predict_with="solve").fit(
                x, y
            )
            self._take(x, y, exact.L_, exact.beta_, exact.jitter_)
        self._set_views()
        return self

    def set_state(self, state: dict[str, np.ndarray]) -> OnlineGP:
        """Take over a model fitted elsewhere (``state()`` of an OnlineGP or ExactGP with these
        hyperparameters) without refactoring: O(N^2) copies and the weights' solve, where ``fit`` is
        O(N^3). The buffers are reused when their sizes match. Counted as a refit."""
        x = np.asarray(state["x_train"], dtype=np.float64)
        y = np.asarray(state["y_train"], dtype=np.float64)
        check_xy(x, y)
        n = x.shape[0]
        if n > self.capacity or state["L"].shape != (n, n) or state["beta"].shape != y.shape:
            raise ValueError(f"state of {n} points does not fit capacity {self.capacity} or its L/beta shapes differ")
        if getattr(self, "_x", None) is not None and self._x.shape[1] == x.shape[1] and self._y.shape[1] == y.shape[1]:
            self.refits_ += 1
        else:
            self._allocate(x.shape[1], y.shape[1])
        self._take(x, y, state["L"], state["beta"], float(state["jitter"]))
        self._set_views()
        return self

    def _allocate(self, d: int, p: int) -> None:
        dt = np.dtype(self.dtype)
        cap = self.capacity
        self._x = np.empty((cap, d))
        self._y = np.empty((cap, p))
        self._scaled = np.empty((cap, d), dtype=dt)
        self._beta = np.empty((cap, p), dtype=dt)
        self._alpha = np.empty(cap * p, dtype=dt)  # K^-1 Y, Fortran (n, p) view, for mean-only queries
        # Written once now, so that the memory of the full window is committed here (the OS maps pages
        # on first write): RSS is flat from the first learned window on, and learning never page-faults
        # while the factor grows towards its capacity.
        self._lflat = np.empty(cap * cap, dtype=dt)
        self._lflat.fill(0.0)
        self._scratch_x = np.empty(cap, dtype=dt)
        self._scratch_w = np.empty(p, dtype=dt)
        self._n = 0
        self.refits_ = getattr(self, "refits_", 0) + 1
        self.incremental_updates_ = getattr(self, "incremental_updates_", 0)
        self.jitter_ = self.jitter
        if not hasattr(self, "_buffer"):
            self._buffer = np.empty(0, dtype=dt)

    def _take(self, x: np.ndarray, y: np.ndarray, lower: np.ndarray, beta: np.ndarray, jitter: float) -> None:
        n = x.shape[0]
        self._lflat[: n * n] = lower.ravel(order="F")
        self._beta[:n] = beta
        self._x[:n] = x
        self._y[:n] = y
        self.jitter_ = jitter
        self._n = n

    def _set_views(self) -> None:
        n = self._n
        self.inv_lengthscales_ = (1.0 / self.params.lengthscales).astype(self._lflat.dtype)
        np.multiply(self._x[:n], self.inv_lengthscales_, out=self._scaled[:n])
        self.L_ = self._lflat[: n * n].reshape((n, n), order="F")
        self.beta_ = self._beta[:n]
        self.x_train_ = self._x[:n]
        self.y_train_ = self._y[:n]
        self.train_scaled_ = self._scaled[:n]
        # alpha = K^-1 Y = L^-T beta (R&W Alg. 2.1 line 3) for mean-only queries: one O(N^2 P)
        # triangular solve per update, in the learning path rather than the prediction path
        p = self._beta.shape[1]
        self._alpha_f = self._alpha[: n * p].reshape((n, p), order="F")
        self._alpha_f[:] = self._beta[:n]
        if n:
            trsm_lower_inplace(self.L_, self._alpha_f, transpose=True)

    @property
    def n_train(self) -> int:
        return getattr(self, "_n", 0)

    def _capacity(self) -> int:
        return self.capacity

    def predict_mean_into(self, xq: np.ndarray, out_mean: np.ndarray) -> None:
        """Posterior mean only (M, P), in place: k_*^T alpha (R&W Alg. 2.1 line 4).

        With alpha kept current by every update, a query costs O(N (d + P)) instead of the O(N^2)
        solve that the variance (``predict_into``) needs. Allocation-free; ``xq`` validated as for
        ``predict_into``.
        """
        m, n = xq.shape[0], self._n
        if m == 0:
            return
        if self._buffer.size < m * n:
            self._buffer = np.empty(m * n, dtype=self._buffer.dtype)
        ks = self._buffer[: m * n].reshape(m, n)
        rbf_cross_into(xq, self.inv_lengthscales_, self.train_scaled_, self.params.signal_var, ks)
        np.dot(ks, self._alpha_f, out=out_mean)

    def predict_mean(self, xq: np.ndarray) -> np.ndarray:
        """Allocating wrapper around ``predict_mean_into`` (validates the queries)."""
        return allocating_predict_mean(self, xq, self.x_train_.shape[1], self.beta_.shape[1])

    def set_params(self, params: RBFParams) -> None:
        """New hyperparameters invalidate the factor: the one case that needs a refit."""
        self.params = params
        self.fit(self.x_train_.copy(), self.y_train_.copy())

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Append rows (dropping the oldest beyond ``capacity``) with incremental factor updates."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        check_xy(x, y)
        if x.shape[0] == 0:
            return
        if not hasattr(self, "_lflat") or self.n_train == 0:
            self.fit(x, y)
            return
        x, y = x[-self.capacity :], y[-self.capacity :]
        k = x.shape[0]
        overflow = self._n + k - self.capacity
        ld = self._n
        if overflow > 0:
            # The drop relayouts in place, forward, so only to a leading dimension <= the current one; up
            # to that, the size after the append (the append's own relayout then has nothing to do).
            # Asking for more (a chunk that crosses the capacity: k > overflow) overwrote columns not yet
            # moved, and the place GP predicted from a corrupted factor from then on.
            ld = min(self._n - overflow + k, self._n)
            gp_loops(self._lflat.dtype).drop_first_into(self._lflat, self._n, overflow, ld, self._beta,
                                                        self._scratch_x, self._scratch_w)
            self._x[: self._n - overflow] = self._x[overflow : self._n].copy()
            self._y[: self._n - overflow] = self._y[overflow : self._n].copy()
            self._scaled[: self._n - overflow] = self._scaled[overflow : self._n].copy()
            self._n -= overflow
        n = self._n
        p = self.params
        dt = self._lflat.dtype
        kcross = np.empty((k, n), dtype=dt)
        xq = np.ascontiguousarray(x, dtype=dt)
        rbf_cross_into(xq, self.inv_lengthscales_, self._scaled[:n], p.signal_var, kcross)
        kappa = np.empty((k, k), dtype=dt)
        rbf_cross_into(
            xq, self.inv_lengthscales_, np.ascontiguousarray(x * self.inv_lengthscales_, dtype=dt), p.signal_var, kappa
        )
        kappa[np.diag_indices(k)] += p.noise_var + self.jitter_ * (p.signal_var + p.noise_var)
        ok = gp_loops(dt).append_into(
            self._lflat, n, ld, k, kcross, kappa, self._beta, y.astype(dt), np.empty((k, n), dtype=dt)
        )
        self._x[n : n + k] = x
        self._y[n : n + k] = y
        self._n = n + k
        if ok:
            self.incremental_updates_ += 1
            self._set_views()
        else:  # rounding made the Schur complement indefinite: refit with adaptive jitter
            self.fit(self._x[: self._n].copy(), self._y[: self._n].copy())


def compile_online_kernels(dtype: str = "float64") -> None:
    """Run the update paths once on a tiny model so the first real ``add`` does not pay first-call costs
    (with the JIT: the compilation, or loading it from numba's cache)."""
    rng = np.random.default_rng(0)
    model = OnlineGP(RBFParams(np.ones(2), 1.0, 0.1), capacity=3, dtype=dtype)
    model.fit(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
    model.add(rng.normal(size=(1, 2)), rng.normal(size=(1, 2)))
    model.reserve(2)  # and the predict paths on the views the online model hands to numba
    model.predict_mean_into(np.zeros((1, 2), dtype=np.dtype(dtype)), np.empty((1, 2), dtype=np.dtype(dtype)))

"""Sparse MPC quadratic program, built once; each control step changes only vectors and marked values of A.

Variables z = [x_0 .. x_H (5 each), u_0 .. u_{H-1} (2 each), s_1 .. s_H (one slack per step)], the
"sparse" (simultaneous) formulation of OSQP's MPC example: dynamics are equality rows, so A_k enters the
constraint matrix directly and changing it is a value update of a fixed sparsity pattern.

    minimise   sum_k w_k |p_k - r_k|^2 + q_om omega_k^2 + r_a a_k^2 + r_al alpha_k^2 + rho_s s_k^2 + W s_k
    subject to x_0 = measured state
               x_{k+1} - A_k x_k - B u_k = c_k                         (linearised unicycle, model.py)
               v_lo,k <= v_k <= v_hi,k,  |omega_k| <= om_hi,k         (k = 1..H)
               |a_k| <= a_max, |alpha_k| <= alpha_max, s_k >= 0
               n_kj . p_k + s_k >= n_kj . c_kj + r_kj   (j = 1..C)     (human half-planes, constraints.py)

Rows are grouped by kind and step so that ``shift_maps`` can move a solution one step forward for warm
starting (OSQP keeps the last iterate as warm start; shifting it aligns it with the new time origin).
"""

from __future__ import annotations

import numpy as np
import osqp
import scipy.sparse as sp

from intent_perf_ros.core.mpc.model import IOM, ITH, IV, IX, IY, NU, NX

OSQP_INFTY = 1e30


class MPCProblem:
    """Index layout, fixed matrices and the OSQP solver of the MPC QP; hot-path updates write in place."""

    def __init__(self, horizon: int, dt: float, slots: int, settings: dict) -> None:
        if slots < 0:
            raise ValueError(f"obstacle slots per step must be >= 0, got {slots}")
        H, C = horizon, slots
        self.horizon, self.slots, self.dt = H, C, dt
        self.n_state = NX * (H + 1)
        self.u0 = self.n_state  # first input variable
        self.s0 = self.u0 + NU * H  # first slack variable
        self.n = self.s0 + H
        # Rows: dynamics (NX(H+1)), velocity bounds (2H), input bounds (2H), slack >= 0 (H), humans (HC).
        self.r_vel = self.n_state
        self.r_inp = self.r_vel + 2 * H
        self.r_slk = self.r_inp + 2 * H
        self.r_hum = self.r_slk + H
        self.m = self.r_hum + H * C

        rows: list[int] = []
        cols: list[int] = []
        tag_list: list[int] = []  # >0: a changing entry (its position in ax, 1-based), 0: a fixed entry
        vals: list[float] = []

        def add(r: int, c: int, v: float, tag: int = 0) -> None:
            rows.append(r)
            cols.append(c)
            vals.append(v)
            tag_list.append(tag)

        def xi(k: int, i: int) -> int:
            return NX * k + i

        for i in range(NX):
            add(i, xi(0, i), 1.0)
        n_changing = 0
        for k in range(H):
            base = NX * (k + 1)
            for i in range(NX):
                add(base + i, xi(k + 1, i), 1.0)
                add(base + i, xi(k, i), -1.0)
            add(base + ITH, xi(k, IOM), -dt)
            add(base + IV, self.u0 + NU * k, -dt)
            add(base + IOM, self.u0 + NU * k + 1, -dt)
            # The four linearisation entries, in model.UnicycleLinearisation.a_entries order (negated there).
            for r, c in ((IX, ITH), (IX, IV), (IY, ITH), (IY, IV)):
                n_changing += 1
                add(base + r, xi(k, c), 0.0, n_changing)
        for k in range(H):
            add(self.r_vel + 2 * k, xi(k + 1, IV), 1.0)
            add(self.r_vel + 2 * k + 1, xi(k + 1, IOM), 1.0)
            add(self.r_inp + 2 * k, self.u0 + NU * k, 1.0)
            add(self.r_inp + 2 * k + 1, self.u0 + NU * k + 1, 1.0)
            add(self.r_slk + k, self.s0 + k, 1.0)
        for k in range(H):
            for j in range(C):
                r = self.r_hum + C * k + j
                n_changing += 1
                add(r, xi(k + 1, IX), 0.0, n_changing)
                n_changing += 1
                add(r, xi(k + 1, IY), 0.0, n_changing)
                add(r, self.s0 + k, 1.0)
        # Locate every changing entry in the CSC data array: build the matrix once with the entry number as
        # its value (never zero, never summed), so the CSC ordering can be read back.
        order = sp.csc_matrix(
            (np.arange(1, len(rows) + 1, dtype=np.float64), (rows, cols)), shape=(self.m, self.n)
        )
        order.sort_indices()
        entry_of_pos = order.data.astype(np.int64) - 1
        tags = np.asarray(tag_list)[entry_of_pos]
        changing_pos = np.flatnonzero(tags > 0)
        self.ax_idx = changing_pos[np.argsort(tags[changing_pos])].astype(np.int64)
        self.ax = np.zeros(n_changing)  # values written each step, in the order they were added above
        self.ax_dyn = self.ax[: 4 * H].reshape(H, 4)  # view: negated linearisation entries
        self.ax_hum = self.ax[4 * H :].reshape(H, C, 2)  # view: half-plane normals
        a_mat = sp.csc_matrix(
            (np.asarray(vals)[entry_of_pos], order.indices, order.indptr), shape=(self.m, self.n)
        )

        self.p_diag = np.zeros(self.n)
        self.q = np.zeros(self.n)
        self.lo = np.full(self.m, -OSQP_INFTY)
        self.hi = np.full(self.m, OSQP_INFTY)
        self.lo[: self.r_vel] = 0.0
        self.hi[: self.r_vel] = 0.0
        self.lo[self.r_slk : self.r_hum] = 0.0
        self.a_matrix = a_mat  # kept for tests and reference solvers (values refreshed by ``a_current``)
        self._settings = settings
        self.solver: osqp.OSQP | None = None
        self._ext = None
        self._build_shift_maps()

    # ----------------------------------------------------------------------------------- setup and update
    def setup(self) -> None:
        """Factorise with the current P, q, A, l, u (the only time the problem is handed to OSQP whole)."""
        # Keep the full diagonal in the pattern even where a weight is zero, so Px updates stay valid.
        P = sp.csc_matrix(
            (self.p_diag.copy(), np.arange(self.n), np.arange(self.n + 1)), shape=(self.n, self.n)
        )
        self.solver = osqp.OSQP()
        self.solver.setup(P, self.q, self.a_current(), self.lo, self.hi, **self._settings)
        # The public update()/solve() of osqp 1.1 copy l/u through np.maximum and build a SimpleNamespace of
        # the info on every call; the extension object underneath takes our preallocated arrays directly.
        self._ext = self.solver._solver

    def a_current(self) -> sp.csc_matrix:
        """A with the current changing values (allocates: setup and tests only)."""
        a = self.a_matrix.copy()
        a.data[self.ax_idx] = self.ax
        return a

    def update_step(self) -> bool:
        """Push q, l, u and the changing A values written in place this step; False if OSQP refused them."""
        bad = self._ext.update_data_vec(q=self.q, l=self.lo, u=self.hi)
        bad |= self._ext.update_data_mat(P_x=None, P_i=None, A_x=self.ax, A_i=self.ax_idx)
        return not bad

    def solve(self) -> tuple[int, int]:
        """Solve; returns (status_val, iterations). The primal solution is then in ``solution()``."""
        self._ext.solve()
        info = self._ext.info
        return info.status_val, info.iter

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the last solve; osqp's binding returns fresh copies."""
        sol = self._ext.solution
        return sol.x, sol.y

    def warm_start(self, x: np.ndarray, y: np.ndarray) -> None:
        self._ext.warm_start(x, y)

    def set_limits(self, time_limit_s: float, max_iter: int) -> None:
        self.solver.update_settings(time_limit=time_limit_s, max_iter=max_iter)

    # ---------------------------------------------------------------------------------------- warm start
    def _build_shift_maps(self) -> None:
        """Index maps that move each variable/row of step k+1 to step k (the last step is repeated)."""
        H, C = self.horizon, self.slots
        xs = np.arange(self.n)
        for k in range(H + 1):
            src = min(k + 1, H)
            xs[NX * k : NX * (k + 1)] = np.arange(NX * src, NX * (src + 1))
        for k in range(H):
            src = min(k + 1, H - 1)
            xs[self.u0 + NU * k : self.u0 + NU * (k + 1)] = np.arange(
                self.u0 + NU * src, self.u0 + NU * (src + 1)
            )
            xs[self.s0 + k] = self.s0 + src
        ys = np.arange(self.m)
        for k in range(H):
            src = min(k + 1, H - 1)
            ys[NX * (k + 1) : NX * (k + 2)] = np.arange(NX * (src + 1), NX * (src + 2))
            for base, width in ((self.r_vel, 2), (self.r_inp, 2), (self.r_slk, 1), (self.r_hum, C)):
                ys[base + width * k : base + width * (k + 1)] = np.arange(
                    base + width * src, base + width * (src + 1)
                )
        self.x_shift = xs
        self.y_shift = ys

    # --------------------------------------------------------------------------------------------- views
    def states(self, z: np.ndarray) -> np.ndarray:
        return z[: self.n_state].reshape(self.horizon + 1, NX)

    def inputs(self, z: np.ndarray) -> np.ndarray:
        return z[self.u0 : self.s0].reshape(self.horizon, NU)

    def slacks(self, z: np.ndarray) -> np.ndarray:
        return z[self.s0 :]

    def position_q(self) -> np.ndarray:
        """View of q on the position variables of x_0..x_H, shape (H+1, 2)."""
        return self.q[: self.n_state].reshape(self.horizon + 1, NX)[:, IX : IY + 1]

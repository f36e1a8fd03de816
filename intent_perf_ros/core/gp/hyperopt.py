"""Type-II maximum likelihood: tune RBF hyperparameters by maximising the log marginal likelihood.

log p(Y|X) = -1/2 tr(Y^T K^-1 Y) - P/2 log|K| - NP/2 log 2pi                      (R&W eq. 5.8)
d/dtheta   =  1/2 tr((alpha alpha^T - P K^-1) dK/dtheta)                          (R&W eq. 5.9)

Optimised over log-parameters with L-BFGS-B inside bounds, from a few starts; the data may be
split into independent groups (e.g. scenes whose coordinates are unrelated), whose likelihoods add.
This runs offline or in a background thread, never in the prediction path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.optimize

from intent_perf_ros.core.gp.kernels import RBFParams, rbf_with_grad


def neg_lml_and_grad(
    theta: np.ndarray, groups: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood and its gradient w.r.t. log-parameters, summed over groups."""
    params = RBFParams.from_log(theta)
    total = 0.0
    grad = np.zeros_like(theta)
    for x, y in groups:
        n, n_out = y.shape
        k, dk_dl = rbf_with_grad(x, params.lengthscales, params.signal_var)
        kernel_part = k.copy()
        k[np.diag_indices_from(k)] += params.noise_var + 1e-10 * params.signal_var
        try:
            factor = scipy.linalg.cho_factor(k, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return 1e25, np.zeros_like(theta)  # infeasible corner; L-BFGS-B backs off
        alpha = scipy.linalg.cho_solve(factor, y, check_finite=False)
        log_det = 2.0 * np.sum(np.log(np.diag(factor[0])))
        total += 0.5 * np.sum(y * alpha) + 0.5 * n_out * log_det + 0.5 * n * n_out * np.log(2.0 * np.pi)
        # W = alpha alpha^T - P K^-1 ; gradient entry = 1/2 sum(W * dK)
        w = alpha @ alpha.T - n_out * scipy.linalg.cho_solve(factor, np.eye(n), check_finite=False)
        for d in range(dk_dl.shape[0]):
            grad[d] -= 0.5 * np.sum(w * dk_dl[d])
        grad[-2] -= 0.5 * np.sum(w * kernel_part)  # dK/dlog sf2 = K_rbf
        grad[-1] -= 0.5 * params.noise_var * np.trace(w)  # dK/dlog sn2 = sn2 I
    return float(total), grad


def fit_hyperparameters(
    groups: Sequence[tuple[np.ndarray, np.ndarray]],
    n_restarts: int = 2,
    bounds: Sequence[tuple[float, float]] | None = None,
    seed: int = 0,
    max_iter: int = 200,
) -> tuple[RBFParams, float]:
    """Best hyperparameters over ``1 + n_restarts`` L-BFGS-B runs and their log marginal likelihood.

    ``groups`` are (X, Y) pairs; Y columns should be standardised (unit variance) so the default
    bounds (lengthscale in [1e-2, 1e3] x feature spread, sf2 in [1e-3, 1e2], sn2 in [1e-4, 1e1])
    make sense.
    """
    if not groups:
        raise ValueError("need at least one (X, Y) group to fit hyperparameters")
    dim = groups[0][0].shape[1]
    spread = np.std(np.concatenate([x for x, _ in groups]), axis=0) + 1e-6
    if bounds is None:
        bounds = [(np.log(1e-2 * s), np.log(1e3 * s)) for s in spread]
        bounds += [(np.log(1e-3), np.log(1e2)), (np.log(1e-4), np.log(1e1))]
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    start = np.concatenate([np.log(spread), [np.log(0.5), np.log(0.5)]])
    rng = np.random.default_rng(seed)
    best_theta, best_value = None, np.inf
    for attempt in range(1 + n_restarts):
        theta0 = start if attempt == 0 else rng.uniform(lo, hi)
        theta0 = np.clip(theta0, lo, hi)
        result = scipy.optimize.minimize(
            neg_lml_and_grad,
            theta0,
            args=(groups,),
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lo, hi, strict=True)),
            options={"maxiter": max_iter},
        )
        if result.fun < best_value:
            best_theta, best_value = result.x, float(result.fun)
    if best_theta is None or dim + 2 != best_theta.size:
        raise RuntimeError("hyperparameter optimisation failed on every start; check the data for duplicates")
    return RBFParams.from_log(best_theta), -best_value

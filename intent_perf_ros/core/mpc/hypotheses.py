"""Intent hypotheses: several predicted trajectories per human, so every plausible intent is avoided."""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core import aot

_kernels = aot.load(aot.MPC_KERNELS)


def expand_hypotheses(
    pred_mean: np.ndarray,
    pred_var: np.ndarray,
    current_xy: np.ndarray,
    current_vxy: np.ndarray,
    goals: np.ndarray,
    goal_probs: np.ndarray | None,
    top_k: int,
    pred_dt: float,
    out_mean: np.ndarray,
    out_var: np.ndarray,
    min_prob: float = 0.05,
    min_speed: float = 0.5,
) -> int:
    """Write up to M*top_k trajectories into ``out_mean``/``out_var`` (N, Hp, 2); returns how many.

    Per human: first the GP prediction (``pred_mean``/``pred_var``; it is also what the "wandering" column,
    the last of ``goal_probs``, stands for), then one goal-directed alternative for each of its most probable
    goals, in decreasing probability, while the goal's probability is >= ``min_prob`` and fewer than
    ``top_k`` trajectories were written for that human. A goal-directed trajectory walks straight to the
    goal at max(|current velocity|, ``min_speed``) m/s and stops there; it borrows the GP's variance (the
    uncertainty of *when* the human is where grows the same way). With ``goal_probs`` None, only the GP.
    """
    M, hp = pred_mean.shape[0], pred_mean.shape[1] if pred_mean.ndim == 3 else -1
    if pred_mean.ndim != 3 or pred_mean.shape[2] != 2:
        raise ValueError(f"pred_mean must have shape (M, Hp, 2), got {pred_mean.shape}")
    if pred_var.shape != pred_mean.shape:
        raise ValueError(f"pred_var must have the shape of pred_mean {pred_mean.shape}, got {pred_var.shape}")
    if current_xy.shape != (M, 2) or current_vxy.shape != (M, 2):
        raise ValueError(
            f"current_xy and current_vxy must have shape ({M}, 2), got {current_xy.shape}, "
            f"{current_vxy.shape}"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not pred_dt > 0.0:
        raise ValueError(f"pred_dt must be positive seconds, got {pred_dt}")
    K = goals.shape[0]
    if goal_probs is not None and goal_probs.shape != (M, K + 1):
        raise ValueError(
            f"goal_probs must have shape (M, K+1) = ({M}, {K + 1}) (last column: wandering), "
            f"got {goal_probs.shape}"
        )
    if out_mean.ndim != 3 or out_mean.shape[1:] != (hp, 2) or out_var.shape != out_mean.shape:
        raise ValueError(
            f"out_mean/out_var must both have shape (N, {hp}, 2), got {out_mean.shape}, {out_var.shape}"
        )
    probs = goal_probs if goal_probs is not None else _NO_PROBS
    return int(_kernels.expand_hypotheses_into(pred_mean, pred_var, current_xy, current_vxy, goals, probs,
                                               goal_probs is not None, top_k, pred_dt, out_mean, out_var, min_prob,
                                               min_speed))


def warmup() -> None:
    """Touch the compiled kernel once (at node start-up, never in a callback)."""
    out = np.zeros((3, 2, 2))
    expand_hypotheses(np.zeros((1, 2, 2)), np.ones((1, 2, 2)), np.zeros((1, 2)), np.ones((1, 2)),
                      np.array([[5.0, 0.0]]), np.array([[0.9, 0.1]]), 2, 0.4, out, out.copy())


_NO_PROBS = np.zeros((0, 1))

"""Bayesian selection of a robot behaviour from its observed outcomes (a Gaussian multi-armed bandit).

Each behaviour's reward r is modelled as Normal with unknown mean and variance under a conjugate
Normal-inverse-gamma prior NIG(mu0, kappa0, alpha0, beta0) (Murphy 2007, "Conjugate Bayesian
analysis of the Gaussian distribution", eqs. 85-89). After n rewards with mean m and sum of squared
deviations S:
  kappa_n = kappa0 + n,  mu_n = (kappa0 mu0 + n m) / kappa_n,  alpha_n = alpha0 + n / 2,
  beta_n = beta0 + S / 2 + kappa0 n (m - mu0)^2 / (2 kappa_n),
and the posterior of the mean is Student-t with 2 alpha_n degrees of freedom, location mu_n and
scale sqrt(beta_n / (alpha_n kappa_n)). The updates are done one reward at a time (Welford form).

Selection:
  "ucb":      score = mu_n + c sqrt(2 ln t) * scale_n (a Bayes-UCB-style bonus growing slowly with
              the number of decisions t, shrinking with each behaviour's own evidence).
  "thompson": draw sigma^2 ~ InvGamma(alpha_n, beta_n), then mu ~ N(mu_n, sigma^2 / kappa_n) for every
              behaviour, fresh on every call (Thompson 1933); the score is the draw and the bonus
              is draw - mu_n.
``discount`` < 1 forgets old evidence geometrically (non-stationary crowds): before each update
every behaviour's statistics are shrunk towards the prior by that factor.
"""
from __future__ import annotations

import math

import numpy as np

BEHAVIOURS: tuple[str, ...] = ("proceed", "slow", "yield", "detour_left", "detour_right")
METHODS = ("ucb", "thompson")


def outcome_reward(progress_m: float, clearance_m: float, human_deviation_m: float, *,
                   safe_clearance_m: float = 0.5, collision_clearance_m: float = 0.2,
                   w_progress: float = 1.0, w_clearance: float = 2.0, w_deviation: float = 1.0,
                   collision_penalty: float = 10.0) -> float:
    """Reward of one decision period: progress, minus a clearance shortfall and the human's deviation.

    r = w_progress * progress_m
        - w_clearance * max(0, safe_clearance_m - clearance_m) / safe_clearance_m
        - w_deviation * human_deviation_m
        - collision_penalty   if clearance_m < collision_clearance_m
    progress_m: reduction of the robot's distance to its goal over the period (m, may be negative);
    clearance_m: minimum robot-human distance over the period (m); human_deviation_m: how far the
    human's observed path left the path predicted before the decision (m, >= 0). With the defaults
    0.5 m of progress is worth as much as a clearance 12.5% below the safe distance.
    """
    values = (progress_m, clearance_m, human_deviation_m)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"outcome values must be finite, got {values}")
    if clearance_m < 0 or human_deviation_m < 0:
        raise ValueError(f"clearance_m and human_deviation_m are distances (>= 0), got {clearance_m}, "
                         f"{human_deviation_m}")
    shortfall = max(0.0, safe_clearance_m - clearance_m) / safe_clearance_m
    reward = w_progress * progress_m - w_clearance * shortfall - w_deviation * human_deviation_m
    if clearance_m < collision_clearance_m:
        reward -= collision_penalty
    return float(reward)


class BehaviourSelector:
    """Choose among ``behaviours`` by UCB or Thompson sampling on a Normal-inverse-gamma reward model.

    Learned state (per behaviour): ``n_`` rewards seen (discounted), ``mean_`` their mean, ``ss_``
    sum of squared deviations, and ``decisions_`` the number of select() calls.
    """

    def __init__(self, method: str = "thompson", seed: int | None = 0,
                 behaviours: tuple[str, ...] = BEHAVIOURS,
                 prior_mean: float = 0.0, prior_kappa: float = 1.0, prior_alpha: float = 2.0,
                 prior_beta: float = 1.0, ucb_c: float = 1.0, discount: float = 1.0) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if len(behaviours) < 1 or len(set(behaviours)) != len(behaviours):
            raise ValueError(f"behaviours must be unique names, got {behaviours}")
        if not (prior_kappa > 0 and prior_alpha > 0 and prior_beta > 0 and ucb_c >= 0 and 0 < discount <= 1):
            raise ValueError("need prior_kappa, prior_alpha, prior_beta > 0, ucb_c >= 0 and "
                             "0 < discount <= 1")
        self.method = method
        self.seed = seed
        self.behaviours = tuple(behaviours)
        self.prior_mean = prior_mean
        self.prior_kappa = prior_kappa
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.ucb_c = ucb_c
        self.discount = discount
        self._rng = np.random.default_rng(seed)
        b = len(self.behaviours)
        self.n_ = np.zeros(b)
        self.mean_ = np.zeros(b)
        self.ss_ = np.zeros(b)
        self.decisions_ = 0

    def posterior(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mu_n, kappa_n, alpha_n, beta_n) for every behaviour (Murphy 2007, eqs. 86-89)."""
        kappa = self.prior_kappa + self.n_
        mu = (self.prior_kappa * self.prior_mean + self.n_ * self.mean_) / kappa
        alpha = self.prior_alpha + 0.5 * self.n_
        beta = (self.prior_beta + 0.5 * self.ss_
                + self.prior_kappa * self.n_ * (self.mean_ - self.prior_mean) ** 2 / (2.0 * kappa))
        return mu, kappa, alpha, beta

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(score, exploration bonus) per behaviour; Thompson draws fresh samples on every call."""
        mu, kappa, alpha, beta = self.posterior()
        if self.method == "ucb":
            scale = np.sqrt(beta / (alpha * kappa))
            bonus = self.ucb_c * math.sqrt(2.0 * math.log(self.decisions_ + 2.0)) * scale
            return mu + bonus, bonus
        var = beta / self._rng.gamma(alpha)  # InvGamma(alpha, beta) = beta / Gamma(alpha, 1)
        draw = mu + np.sqrt(var / kappa) * self._rng.standard_normal(mu.shape[0])
        return draw, draw - mu

    def select(self) -> tuple[int, str, float, float]:
        """(index, name, score, exploration bonus) of the behaviour to run for the next period."""
        score, bonus = self.scores()
        best = int(np.argmax(score))
        self.decisions_ += 1
        return best, self.behaviours[best], float(score[best]), float(bonus[best])

    def update(self, index: int, reward: float) -> None:
        """Add one observed reward of behaviour ``index`` (Welford's running mean and squares)."""
        if not 0 <= index < len(self.behaviours):
            raise ValueError(f"index must be in [0, {len(self.behaviours)}), got {index}")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        if self.discount < 1.0:
            self.n_ *= self.discount
            self.ss_ *= self.discount
        n = self.n_[index] + 1.0
        delta = reward - self.mean_[index]
        self.mean_[index] += delta / n
        # W delta^2 / (W + 1) with W the previous (possibly discounted) count: weighted Welford.
        self.ss_[index] += delta * (reward - self.mean_[index])
        self.n_[index] = n

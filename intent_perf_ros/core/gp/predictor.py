"""Trajectory predictor: constant velocity plus GP-learned residuals, with calibrated variances.

Model (all in the pedestrian's heading-aligned frame, see ``features``):
    r = f_motion(motion features) + f_place(place features) + x^T W + noise,   r = future - constant velocity
* ``f_motion`` is fitted offline on many places (exact GP, or sparse above ``sparse_threshold``
  windows), hyperparameters by maximum marginal likelihood.
* ``f_place`` is an online exact GP over a FIFO window of windows completed in *this* place
  (``add_windows``), learning what the motion model gets wrong here; it starts empty. Its
  hyperparameters, trust and stride are chosen by replaying the online protocol on the training places.
* ``x^T W`` is the online ridge corrector on the recent velocity changes (``corrector``), fitted to
  what the two GPs leave in this place, ridge (or none) chosen by prequential error.
Both GPs have zero prior mean, so where neither has seen similar data the prediction is constant
velocity; each mean is further shrunk per output by a factor validated on training places only.
Variance: (1 + a * speed + b * unsteadiness)^2 (``features.gain_features``) times either the
motion model's predictive variance or a constant - whichever has the higher likelihood on
leave-one-place-out residuals, i.e. in places the model was not fitted on - (with
``place_shrinks_variance`` also shrunk by the place model's relative posterior variance
var_place / (sf2 + sn2)), scaled per horizon step by a factor that makes the 2-D 95% ellipse cover
95% of those residuals, and rescaled online by how this place's completed windows scored.
Before ``fit`` the motion part is absent and the variance is a prior that grows with the horizon.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from intent_perf_ros.core.cache import cached_hyperparameters
from intent_perf_ros.core.gp.backend_select import BACKENDS, choose_backend
from intent_perf_ros.core.gp.corrector import VelocityCorrector
from intent_perf_ros.core.gp.exact import ExactGP
from intent_perf_ros.core.gp.features import (
    MOTION_LAGS,
    N_PLACE,
    compute_features,
    gain_features,
    residual_targets,
    split_windows,
    variance_gain,
    velocity_changes,
)
from intent_perf_ros.core.gp.kernels import RBFParams, all_finite, gp_loops
from intent_perf_ros.core.gp.online import OnlineGP, compile_online_kernels
from intent_perf_ros.core.gp.retune import (
    PLACE_GRID,
    RETUNE_EVERY,
    RETUNE_FIRST,
    PlaceRetune,
    PlaceSnapshot,
    on_grid,
    retune_place,
    simulate_online,
)
from intent_perf_ros.core.gp.sparse import SparseGP

LOG = logging.getLogger(__name__)
CHI2_2_95 = 5.991464547107979  # 95% quantile of chi-square with 2 degrees of freedom
# Prior std of constant-velocity error at horizon t seconds, per axis: 0.11 m * t^1.4. Fitted by eye to
# the pooled ETH/UCY residual spread (0.03 m at 0.4 s, 0.2 m at 1.6 s, 0.55 m at 3.2 s, 1 m at 4.8 s).
PRIOR_STD_SCALE = 0.11
PRIOR_STD_POWER = 1.4
# Place-model hyperparameters when no grouped, timed data are given to tune them: 4 m in position,
# 0.5 in heading (cos, sin: about 30 degrees), 0.5 m/s in speed, half of the standardised residual
# variance explainable by place.
DEFAULT_PLACE_PARAMS = RBFParams(np.array([4.0, 4.0, 0.5, 0.5, 0.5]), 0.5, 0.5)


@dataclass
class PredictorConfig:
    """Settings of ``TrajectoryPredictor`` (defaults tuned for ETH/UCY at 2.5 Hz)."""

    obs_steps: int = 8
    pred_steps: int = 12
    step_dt: float = 0.4
    backend: str = "auto"  # "numpy"/"numba" (numba + BLAS), "torch" (CUDA when available), "auto": see backend_select
    dtype: str = "float64"  # of the GP arrays; "float32" runs the float32 twins of the compiled loops (gp.loops)
    max_train: int = 1500  # exact motion GP trains on at most this many windows (random subset)
    sparse_threshold: int = 4000  # above this many windows the motion GP is sparse
    n_inducing: int = 300
    max_sparse_train: int = 20000  # windows used to fit the sparse GP (random subset)
    max_humans: int = 64
    online_capacity: int = 1000  # FIFO window of the place GP (mean-only queries: cost linear in it)
    use_place_model: bool = True
    motion_lags: tuple[int, ...] = MOTION_LAGS  # past velocities v_{t-lag} used as motion features
    place_shrinks_variance: bool = False  # let local data shrink the variance (tends to overconfidence)
    tune_place: bool = True  # choose place-GP settings by simulated online use when fit() gets groups+frames
    place_sim_cuts: int = 24  # times per training place at which the online protocol is replayed (12 before session 6)
    # motion-GP factors below this are set to 0: on ETH/UCY the leave-one-place-out factors are
    # <= 0.13 and such a small mean made HOTEL 0.2%/0.5% worse than constant velocity
    motion_min_shrink: float = 0.2
    shrink_rule: str = "worst_place"  # motion GP: "worst_place" = min over validation places; or "pooled"
    place_shrink_rule: str = "pooled"  # place GP, validated by simulated online use: same choices
    online_variance_prior: float = 50.0  # pseudo-windows before this place's errors rescale the variance
    online_novelty: float = 0.0  # >0: add a window online only if its latent variance exceeds this x sf2
    # once full, the place GP learns only windows starting on every stride-th step, so that its capacity
    # spans more time in a busy place (windows a step apart overlap in 19 of 20 positions): one of
    # these, chosen with its hyperparameters by simulated online use
    place_strides: tuple[int, ...] = (1, 2, 4)
    # online ridge correction on the velocity changes v_{t-lag} - v_t (corrector.py); () = off
    corrector_lags: tuple[int, ...] = (1, 2, 3)
    corrector_speed_terms: bool = True  # the velocity changes times the current speed as inputs too
    corrector_ridges: tuple[float, ...] = (3.0, 10.0, 30.0)  # candidates, chosen online by prequential error
    # BLAS threads while fitting: its matrices are small (<= 500 for hyperparameters, 300 inducing
    # points), so threads mostly contend; on 2 shared cores the default fit took 121 s with 2, 20 s with 1
    fit_threads: int = 1
    hyperopt_points: int = 500
    hyperopt_restarts: int = 2
    calibration_points: int = 2000
    jitter: float = 1e-8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pred_steps < 1 or self.step_dt <= 0:
            raise ValueError("need pred_steps >= 1 and step_dt > 0")
        for name in ("motion_lags", "corrector_lags"):
            lags = getattr(self, name)
            if any(lag < 1 for lag in lags) or self.obs_steps < max(lags, default=0) + 2:
                raise ValueError(f"{name} {lags} need lags >= 1 and obs_steps >= max lag + 2 (got {self.obs_steps})")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for rule in (self.shrink_rule, self.place_shrink_rule):
            if rule not in ("worst_place", "pooled"):
                raise ValueError(f"shrink rules are 'worst_place' or 'pooled', got {rule!r}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if not self.place_strides or any(int(k) != k or k < 1 for k in self.place_strides):
            raise ValueError(f"place_strides must be whole numbers of steps >= 1, got {self.place_strides}")


def _shrinkage(target: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-column least-squares factor in [0, 1] for target ~ lambda * predicted (James-Stein style)."""
    num = np.sum(target * predicted, axis=0)
    den = np.sum(predicted * predicted, axis=0) + 1e-12
    return np.clip(num / den, 0.0, 1.0)


def prior_column_std(pred_steps: int, step_dt: float) -> np.ndarray:
    """Per-output std (along, cross for each step) of the unfitted constant-velocity model."""
    t = step_dt * np.arange(1, pred_steps + 1)
    return np.repeat(PRIOR_STD_SCALE * t**PRIOR_STD_POWER, 2)


class TrajectoryPredictor:
    """Predicts future positions and per-axis variances of many pedestrians in one call."""

    def __init__(self, config: PredictorConfig | None = None) -> None:
        self.config = config or PredictorConfig()
        cfg = self.config
        self.col_scale_ = prior_column_std(cfg.pred_steps, cfg.step_dt)
        self.col_var_ = self.col_scale_**2
        self.d2_reference_ = np.full(cfg.pred_steps, 2.0)  # E[chi2_2]: the prior is not calibrated
        self._reset_variance_adaptation()
        self.speed_gain_ = 0.0
        self.unsteady_gain_ = 0.0
        self.use_motion_variance_ = True
        self.motion_shrink_ = np.ones(2 * cfg.pred_steps)
        self.place_shrink_ = np.ones(2 * cfg.pred_steps)
        self.motion_model_: ExactGP | SparseGP | None = None
        self.place_params_ = DEFAULT_PLACE_PARAMS
        self.place_stride_ = 1
        self.place_model_: OnlineGP | None = None
        self.corrector_ = (
            VelocityCorrector(self._corrector_inputs(), 2 * cfg.pred_steps, cfg.corrector_ridges, cfg.dtype)
            if cfg.corrector_lags else None
        )
        self.n_windows_fitted_ = 0
        self.refits_ = 0
        self.place_failures_ = 0
        self._reserved = 0
        self._window_log: np.ndarray | None = None  # ring of the newest learned windows (persistence)
        self._window_head = self._window_count = 0
        self.place_retunes_ = 0
        self.place_rows_dropped_ = 0  # learned while a re-tuning ran, beyond what its adoption re-adds
        self._place_generation = 0
        self._reset_place_times()

    def _corrector_inputs(self) -> int:
        cfg = self.config
        return (4 if cfg.corrector_speed_terms else 2) * len(cfg.corrector_lags)

    # -- learning --------------------------------------------------------------------------------
    def fit(
        self, windows: np.ndarray, groups: np.ndarray | None = None, frames: np.ndarray | None = None
    ) -> TrajectoryPredictor:
        """Fit the motion GP (and tune hyperparameters) on (K, obs + pred, 2) windows.

        ``groups`` (K,) optionally labels windows by place (e.g. recording): the motion GP's mean is
        then validated across places. ``frames`` (K,) optionally gives each window's start time in
        steps; with both, the place GP's hyperparameters and shrink factors are chosen by replaying
        the online protocol within each place (``_tune_place``). The place GP is emptied.
        """
        with threadpool_limits(limits=self.config.fit_threads):
            return self._fit(windows, groups, frames)

    def _fit(
        self, windows: np.ndarray, groups: np.ndarray | None, frames: np.ndarray | None
    ) -> TrajectoryPredictor:
        cfg = self.config
        hist, fut = split_windows(windows, cfg.obs_steps, cfg.pred_steps)
        if hist.shape[0] < 10:
            raise ValueError(f"need at least 10 windows to fit, got {hist.shape[0]}")
        # only a fit needs scipy.optimize (about 20 MB): a node that loads a stored model never imports it
        from intent_perf_ros.core.gp.hyperopt import fit_hyperparameters

        motion, place, rot = compute_features(hist, cfg.step_dt, cfg.motion_lags)
        resid = residual_targets(hist, fut, rot)
        self.col_scale_ = resid.std(axis=0) + 1e-6
        z = resid / self.col_scale_
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(hist.shape[0])
        sub = order[: cfg.hyperopt_points]
        # content-keyed: a refit on the same windows and settings (another fold evaluated again, a
        # predictor setting that does not touch this fit) skips the L-BFGS-B restarts
        self.motion_params_, self.motion_lml_ = cached_hyperparameters(
            [(motion[sub], z[sub])],
            {"n_restarts": cfg.hyperopt_restarts, "seed": cfg.seed},
            fit_hyperparameters,
        )
        self.motion_model_ = self._make_motion_model(motion, z, order)
        gain_x = np.stack(gain_features(hist, cfg.step_dt), axis=1)
        self._calibrate(*self._held_out_residuals(motion, z, order, gain_x))
        self.motion_shrink_ = np.ones(z.shape[1])
        self.place_shrink_ = np.ones(z.shape[1])
        self.place_params_ = DEFAULT_PLACE_PARAMS
        self.place_stride_ = 1
        if groups is not None:
            groups = np.asarray(groups)
            self.motion_shrink_, lopo = self._validate_motion(motion, z, groups, gain_x, rng)
            if lopo is not None:  # deployment is in a new place: calibrate on out-of-place residuals
                self._calibrate(*lopo, allow_constant=True)
            if cfg.tune_place and frames is not None:
                self._tune_place(place, motion, z, groups, np.asarray(frames), rng)
        self.place_model_ = None
        self.n_windows_fitted_ = hist.shape[0]
        self.refits_ += 1
        if self._reserved:
            self.warmup()
        return self

    def _make_motion_model(self, motion: np.ndarray, z: np.ndarray, order: np.ndarray) -> ExactGP | SparseGP:
        cfg = self.config
        if motion.shape[0] > cfg.sparse_threshold:
            # keep windows back for calibration: the sparse GP has no closed-form leave-one-out
            train = order[
                : min(
                    cfg.max_sparse_train, motion.shape[0] - min(cfg.calibration_points, motion.shape[0] // 5)
                )
            ]
            model = SparseGP(
                self.motion_params_,
                n_inducing=cfg.n_inducing,
                jitter=cfg.jitter,
                dtype=cfg.dtype,
                seed=cfg.seed,
            )
        else:
            train = order[: cfg.max_train]
            model = self._exact_model(self.motion_params_)
        self._motion_train_idx = np.sort(train)
        return model.fit(motion[self._motion_train_idx], z[self._motion_train_idx])

    def _exact_model(self, params: RBFParams):
        cfg = self.config
        # torch only when asked for, or on "auto" with CUDA above the measured crossover (never imported otherwise).
        if choose_backend(cfg.backend, cfg.max_train, cfg.max_humans) == "torch":
            from intent_perf_ros.core.gp.torch_backend import TorchExactGP

            return TorchExactGP(params, jitter=cfg.jitter, dtype=cfg.dtype)
        return ExactGP(params, jitter=cfg.jitter, dtype=cfg.dtype)

    def _held_out_residuals(
        self, motion: np.ndarray, z: np.ndarray, order: np.ndarray, gain_x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(residual, GP variance, gain features) of windows the motion GP did not train on; if there
        are none, closed-form leave-one-out residuals of the exact GP (R&W eq. 5.12)."""
        held = np.setdiff1d(order, self._motion_train_idx)[: self.config.calibration_points]
        if held.size >= 50:
            mean, var = self.motion_model_.predict(motion[held])
            return z[held] - mean, var, gain_x[held]
        err, var = self.motion_model_.loo_residuals()
        return err, var, gain_x[self._motion_train_idx]

    def _calibrate(
        self, err: np.ndarray, var: np.ndarray, gain_x: np.ndarray, allow_constant: bool = False
    ) -> None:
        """Variance model: GP variance (or, if ``allow_constant``, possibly none) times the squared
        gain (1 + a * speed + b * unsteadiness)^2 times a per-step factor that puts 95% of the
        residuals ``err`` inside the 2-D 95% ellipse.

        (a, b) maximise the Gaussian likelihood over a grid (closed form per (a, b): the best common
        scale is the mean of sq / g^2, then the NLL is log(scale) + mean log g^2 + mean log var up to
        constants); with ``allow_constant`` the constant variance competes with the GP's by the same
        likelihood. The motion GP's variance saturates at its prior away from its data, so on
        out-of-place residuals the gain alone can fit better (ETH/UCY: it does in every fold).
        """
        candidates = [(True, var)] + ([(False, np.ones_like(var))] if allow_constant else [])
        best = np.inf
        for use_gp, v in candidates:
            sq = err**2 / v[:, None]
            log_v = float(np.mean(np.log(v)))
            for a in np.linspace(0.0, 3.0, 13):
                for b in np.linspace(0.0, 30.0, 31):
                    g2 = variance_gain(gain_x[:, 0], gain_x[:, 1], a, b)
                    nll = np.log(np.mean(sq / g2[:, None])) + np.mean(np.log(g2)) + log_v
                    if nll < best:
                        best, self.use_motion_variance_ = nll, use_gp
                        self.speed_gain_, self.unsteady_gain_ = float(a), float(b)
        v = var if self.use_motion_variance_ else np.ones_like(var)
        g2 = variance_gain(gain_x[:, 0], gain_x[:, 1], self.speed_gain_, self.unsteady_gain_)
        sq = err**2 / (v * g2)[:, None]
        step_sq = sq[:, 0::2] + sq[:, 1::2]  # (n, H) Mahalanobis^2 in the aligned frame
        factor = np.quantile(step_sq, 0.95, axis=0) / CHI2_2_95
        self.calibration_ = factor
        self.col_var_ = self.col_scale_**2 * np.repeat(factor, 2)
        self.d2_reference_ = np.mean(step_sq / factor, axis=0)  # mean Mahalanobis^2 per step, calibrated
        self._reset_variance_adaptation()

    @staticmethod
    def _combine_shrinkage(
        targets: list[np.ndarray], preds: list[np.ndarray], width: int, rule: str
    ) -> np.ndarray:
        """Pooled least-squares shrinkage, or ("worst_place") the smallest over the validation places:
        the model is trusted only as far as it helped in every place it was tried on."""
        if not preds:
            return np.ones(width)
        if rule == "pooled":
            return _shrinkage(np.concatenate(targets), np.concatenate(preds))
        return np.min([_shrinkage(t, p) for t, p in zip(targets, preds, strict=True)], axis=0)

    def _validate_motion(
        self, motion: np.ndarray, z: np.ndarray, groups: np.ndarray, gain_x: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """Shrink the motion GP's mean by how well it transfers to places it was not trained on.

        Leave one place out: fit on the others, predict the held place, and take the per-output
        least-squares factor in [0, 1]. A model that does not transfer is scaled towards constant
        velocity rather than trusted (cross-scene transfer is the weak point on ETH/UCY); a factor
        below ``motion_min_shrink`` is taken as no transfer at all (0). Also returns the pooled
        out-of-place (residual after the shrunk mean, GP variance, gain features) for ``_calibrate``,
        or None without validation places.
        """
        cfg = self.config
        targets, preds, variances, tested = [], [], [], []
        for g in np.unique(groups):
            held = np.flatnonzero(groups == g)
            rest = np.flatnonzero(groups != g)
            if held.size < 50 or rest.size < 50:
                continue
            train = rng.choice(rest, size=min(cfg.max_train // 2, rest.size), replace=False)
            test = rng.choice(held, size=min(300, held.size), replace=False)
            model = ExactGP(self.motion_params_, jitter=cfg.jitter).fit(motion[train], z[train])
            mean, var = model.predict(motion[test])
            targets.append(z[test])
            preds.append(mean)
            variances.append(var)
            tested.append(test)
        shrink = self._combine_shrinkage(targets, preds, z.shape[1], cfg.shrink_rule)
        shrink[shrink < cfg.motion_min_shrink] = 0.0
        if not tested:
            return shrink, None
        err = np.concatenate(targets) - shrink * np.concatenate(preds)
        return shrink, (err, np.concatenate(variances), gain_x[np.concatenate(tested)])

    def _tune_place(
        self,
        place: np.ndarray,
        motion: np.ndarray,
        z: np.ndarray,
        groups: np.ndarray,
        frames: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        """Choose place-GP hyperparameters and shrink factors by the simulated online protocol.

        Candidates: ``PLACE_GRID`` (position and velocity lengthscales, noise share) at each of
        ``place_strides`` (the place GP learns the windows starting every stride steps). For each, the
        per-output shrink factor lambda (``_combine_shrinkage``) is applied to the simulated means and
        the candidate with the smallest squared error sum_places ||r - lambda * f_place||^2 wins.
        Marginal likelihood is not used here: it rewards explaining the windows a GP was given,
        while what matters online is predicting the *next* windows of the place.
        """
        resid = z - self.motion_shrink_ * self.motion_model_.predict(motion)[0]
        seed = int(rng.integers(2**31))
        best = np.inf
        cfg = self.config
        for stride in cfg.place_strides:
            for params in PLACE_GRID:
                targets, preds = simulate_online(params, place, resid, groups, frames, np.random.default_rng(seed),
                                                 cfg.online_capacity, cfg.place_sim_cuts,
                                                 cfg.obs_steps + cfg.pred_steps, cfg.jitter, stride)
                if not targets:
                    return
                shrink = self._combine_shrinkage(targets, preds, z.shape[1], cfg.place_shrink_rule)
                err = sum(float(np.sum((t - shrink * p) ** 2)) for t, p in zip(targets, preds, strict=True))
                if err < best:
                    best, self.place_params_, self.place_shrink_, self.place_stride_ = err, params, shrink, stride

    def add_windows(self, windows: np.ndarray, end_steps: np.ndarray | float | None = None) -> None:
        """Learn from completed windows of this place: the place GP (FIFO-bounded, incremental factor
        updates), the corrector and the variance adaptation.

        ``end_steps``: when each window's last position was observed, in steps of ``step_dt`` (one
        number for all, or one per window); windows without it are learned but not replayed when the
        place GP is re-tuned online.
        """
        cfg = self.config
        hist, fut = split_windows(windows, cfg.obs_steps, cfg.pred_steps)
        if hist.shape[0] == 0:
            return
        span = cfg.obs_steps + cfg.pred_steps
        starts = np.broadcast_to(np.nan if end_steps is None else np.asarray(end_steps, dtype=np.float64),
                                 hist.shape[0]) - (span - 1)
        motion, place, rot = compute_features(hist, cfg.step_dt, cfg.motion_lags)
        z = residual_targets(hist, fut, rot) / self.col_scale_
        motion_mean, motion_var = self._motion_prediction(motion)
        # each completed window is first predicted as it would be now (variance adaptation, corrector)
        corrector = self.corrector_
        needs_mean = corrector is not None or cfg.online_variance_prior > 0
        current = self._gp_mean(place, z.shape, motion_mean) if needs_mean else None
        if corrector is not None:
            changes = velocity_changes(hist, cfg.step_dt, cfg.corrector_lags, rot, cfg.corrector_speed_terms)
            corrected = current + corrector.predict(changes)
        else:
            corrected = current
        self._adapt_variance(z, corrected, motion_var,
                             variance_gain(*gain_features(hist, cfg.step_dt), self.speed_gain_, self.unsteady_gain_))
        if corrector is not None:
            corrector.learn(changes, z - current)
        if not cfg.use_place_model:
            return
        if motion_mean is not None:
            z = z - self.motion_shrink_ * motion_mean
        model = self.place_model_
        if self.place_stride_ > 1 and model is not None and model.n_train == cfg.online_capacity:
            learn = on_grid(starts, self.place_stride_)
            place, z, starts, windows = place[learn], z[learn], starts[learn], windows[learn]
            if place.shape[0] == 0:
                return
        if self.place_model_ is not None and self.place_model_.n_train and cfg.online_novelty > 0:
            # sparse online GP practice (Csató & Opper 2002): skip points the model already explains, so
            # the bounded window is not filled with near-duplicate overlapping windows
            _, latent = self.place_model_.predict(place, include_noise=False)
            novel = latent > cfg.online_novelty * self.place_model_.params.signal_var
            place, z, starts = place[novel], z[novel], starts[novel]
            if place.shape[0] == 0:
                return
        try:
            if self.place_model_ is None:
                self.place_model_ = OnlineGP(
                    self.place_params_, capacity=cfg.online_capacity, jitter=cfg.jitter, dtype=cfg.dtype
                )
                self.place_model_.fit(place, z)
                if self._reserved:
                    self.place_model_.reserve(self._reserved)
            else:
                self.place_model_.add(place, z)
            self._log_windows(windows)
            self._place_starts = np.concatenate([self._place_starts, starts])[-cfg.online_capacity :]
            self._place_rows_added += len(starts)
        except np.linalg.LinAlgError as exc:
            # Jitter escalation (linalg.cholesky_jittered) gave up: a half-updated factor must not
            # predict, so fall back to the last good model - the offline motion model, which online
            # learning never changes - and start learning this place again with the next windows.
            LOG.warning("online place model dropped after a failed factorisation (%s); learning it anew", exc)
            self.place_model_ = None
            self._window_count = 0
            self._reset_place_times()
            self.place_failures_ += 1

    # -- online re-tuning of the place GP (retune.py) --------------------------------------------
    def _reset_place_times(self) -> None:
        """A new place model (first window, reset, failed factorisation): its own rows, times and schedule."""
        self._place_starts = np.empty(0)  # start step of each row of the place GP (NaN: unknown)
        self._place_rows_added = 0
        self._retuned_at_rows = 0
        self._place_generation += 1

    def place_retune_due(self, first: int = RETUNE_FIRST, every: int = RETUNE_EVERY) -> bool:
        """Whether to re-tune the place GP online: it holds ``first`` windows with known times and was
        never re-tuned, or took in ``every`` more since the last snapshot (``every`` 0: never)."""
        if self.place_model_ is None or every <= 0:
            return False
        if self._retuned_at_rows == 0:
            return int(np.isfinite(self._place_starts).sum()) >= first
        return self._place_rows_added - self._retuned_at_rows >= every

    def place_snapshot(self) -> PlaceSnapshot:
        """Copies of what ``retune.retune_place`` needs (picklable: it may run in another process)."""
        cfg, model = self.config, self.place_model_
        if model is None:
            raise RuntimeError("nothing learned in this place yet: no place GP to re-tune")
        self._retuned_at_rows = self._place_rows_added
        current = next((i for i, p in enumerate(PLACE_GRID) if p.same_as(model.params)), -1)
        return PlaceSnapshot(np.array(model.x_train_), np.array(model.y_train_), self._place_starts.copy(),
                             self.place_shrink_.copy(), current, self._place_rows_added, self._place_generation,
                             cfg.online_capacity, cfg.place_sim_cuts, cfg.obs_steps + cfg.pred_steps, cfg.jitter,
                             cfg.dtype, cfg.seed)

    def adopt_place_retune(self, result: PlaceRetune, max_catch_up: int | None = None) -> bool:
        """Switch the place GP to re-tuned hyperparameters: the model fitted on the snapshot, plus the
        rows learned since (the newest ``max_catch_up`` of them: each costs a learning step's share,
        the rest are dropped and counted in ``place_rows_dropped_``). False when the choice did not
        change or the place model is no longer the one of the snapshot."""
        model = self.place_model_
        if result.state is None or model is None or result.generation != self._place_generation:
            return False
        newer = min(self._place_rows_added - result.rows_added, model.n_train)
        keep = newer if max_catch_up is None else min(newer, max_catch_up)
        rows = slice(model.n_train - keep, model.n_train)
        x_new, y_new, starts_new = model.x_train_[rows].copy(), model.y_train_[rows].copy(), self._place_starts[rows]
        model.params = PLACE_GRID[result.choice]
        model.set_state(result.state)
        if keep:
            model.add(x_new, y_new)
        self._place_starts = np.concatenate([result.start_steps, starts_new])[-model.n_train :]
        self.place_rows_dropped_ += newer - keep
        self.place_retunes_ += 1
        return True

    def retune_place_now(self) -> bool:
        """``retune_place`` in this thread, then adopt it (``eval-trajectories``; a node runs it in a
        child process, ``core.gp.background``)."""
        return self.adopt_place_retune(retune_place(self.place_snapshot()))

    def _log_windows(self, windows: np.ndarray) -> None:
        """Keep the newest ``online_capacity`` learned windows, the place GP's raw material."""
        cap = self.config.online_capacity
        if self._window_log is None:
            self._window_log = np.empty((cap, *windows.shape[1:]))
        newest = windows[-cap:]
        self._window_log[(self._window_head + np.arange(len(newest))) % cap] = newest
        self._window_head = (self._window_head + len(newest)) % cap
        self._window_count = min(self._window_count + len(windows), cap)

    def learned_windows(self) -> np.ndarray:
        """The windows the place model learned, oldest first (at most ``online_capacity``).

        Learning them again with ``add_windows`` on a fresh predictor with the same offline model
        rebuilds the same place GP (its FIFO holds the same points); the variance adaptation and the
        corrector then count only these windows. This is what a node persists to start warm at a known site.
        """
        if self._window_log is None or self._window_count == 0:
            return np.empty((0, self.config.obs_steps + self.config.pred_steps, 2))
        order = (self._window_head - self._window_count + np.arange(self._window_count)) % len(self._window_log)
        return self._window_log[order]

    def reset_online(self) -> None:
        """Forget what was learned online (e.g. the robot moved to another place)."""
        self.place_model_ = None
        self._window_count = 0
        self._reset_place_times()
        self._reset_variance_adaptation()
        if self.corrector_ is not None:
            self.corrector_.reset()

    def _reset_variance_adaptation(self) -> None:
        self._online_d2 = np.zeros(self.config.pred_steps)
        self._online_count = 0
        self.col_var_eff_ = self.col_var_.copy()

    def _motion_prediction(self, motion: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The offline model's mean at these windows, and its variance only where the variance
        adaptation uses it: the variance is the O(m^2)-per-window part of a prediction."""
        model = self.motion_model_
        if model is None:
            return None, None
        if self.use_motion_variance_ and self.config.online_variance_prior > 0:
            return model.predict(motion)
        mean_only = getattr(model, "predict_mean", None)  # as in ``predict``: the models with a mean path
        if mean_only is not None:
            return mean_only(motion), None
        return model.predict(motion)[0], None

    def _gp_mean(self, place: np.ndarray, shape: tuple[int, int], motion_mean: np.ndarray | None) -> np.ndarray:
        """The two GPs' shrunk mean (standardised, aligned) at windows with these features."""
        mean = self.motion_shrink_ * motion_mean if motion_mean is not None else np.zeros(shape)
        if self.place_model_ is not None and self.place_model_.n_train:
            # mean only: O(N) per window with the place GP's weights, where its variance is O(N^2)
            mean = mean + self.place_shrink_ * self.place_model_.predict_mean(place)
        return mean

    def _adapt_variance(self, z: np.ndarray, mean: np.ndarray | None, motion_var: np.ndarray | None,
                        gain: np.ndarray) -> None:
        """Rescale the variance per step by how this place's completed windows scored (causal).

        ``mean`` is what the current model predicts for each completed window; its squared Mahalanobis
        distance per step, relative to the training reference, updates a running mean with
        ``online_variance_prior`` pseudo-windows at 1 (shrinkage towards the offline calibration).
        A place noisier than the training places widens the ellipses, a calmer one narrows them.
        """
        cfg = self.config
        if cfg.online_variance_prior <= 0:
            return
        var = motion_var if motion_var is not None else np.ones(z.shape[0])
        d2 = (z - mean) ** 2 / ((var * gain)[:, None] * (self.col_var_ / self.col_scale_**2))
        step = d2[:, 0::2] + d2[:, 1::2]
        self._online_d2 += np.sum(step / self.d2_reference_, axis=0)
        self._online_count += z.shape[0]
        prior = cfg.online_variance_prior
        scale = (prior + self._online_d2) / (prior + self._online_count)
        np.multiply(self.col_var_, np.repeat(scale, 2), out=self.col_var_eff_)

    # -- prediction ------------------------------------------------------------------------------
    def warmup(self) -> None:
        """Preallocate every buffer for ``max_humans`` queries and run each path once (first-call costs;
        with the JIT, the numba compilation)."""
        cfg = self.config
        m = cfg.max_humans
        dt = np.dtype(cfg.dtype)
        self._lags = np.asarray(cfg.motion_lags, dtype=np.int64)
        self._corrector_lags = np.asarray(cfg.corrector_lags, dtype=np.int64)
        self._changes = np.zeros((m, self._corrector_inputs()), dtype=dt)
        self._motion = np.zeros((m, 1 + 2 * len(cfg.motion_lags)), dtype=dt)
        self._place = np.zeros((m, N_PLACE), dtype=dt)
        self._rot = np.zeros((m, 2))
        p = 2 * cfg.pred_steps
        self._mean_a = np.zeros((m, p), dtype=dt)
        self._var_a = np.zeros(m, dtype=dt)
        self._mean_b = np.zeros((m, p), dtype=dt)
        self._var_b = np.zeros(m, dtype=dt)
        self._correction = np.zeros((m, p), dtype=dt)
        self._reserved = m
        for model in (self.motion_model_, self.place_model_):
            if model is not None:
                model.reserve(m)
        loops = gp_loops(cfg.dtype)
        loops.combine_into(
            m,
            self._mean_a,
            self._var_a,
            self.motion_shrink_,
            self._mean_b,
            self._var_b,
            self.place_shrink_,
            0.0,
        )  # with the JIT: compiled (or loaded from numba's cache) now, not in the first call
        compile_online_kernels(cfg.dtype)
        loops.velocity_changes_into(np.zeros((1, cfg.obs_steps, 2)), 0, cfg.step_dt, self._corrector_lags,
                                    self._rot, self._changes)
        # one full batch and one single query (the two BLAS paths of ``ExactGP.predict_into``): the
        # first real call would otherwise pay first-call BLAS and page-touch costs
        hist = np.zeros((m, cfg.obs_steps, 2))
        hist[:, :, 0] = np.arange(cfg.obs_steps) * 0.5
        hist[:, :, 1] = np.arange(m)[:, None] * 0.1
        out_mean, out_var = np.empty((m, cfg.pred_steps, 2)), np.empty((m, cfg.pred_steps, 2))
        self.predict(hist, out_mean, out_var)
        self.predict(hist[:1], out_mean, out_var)

    def predict(self, history: np.ndarray, out_mean: np.ndarray, out_var: np.ndarray) -> None:
        """Write absolute future positions (M, H, 2) and per-axis variances (M, H, 2) in place.

        ``history`` is (M, obs_steps, 2) float64 positions, oldest first, ``step_dt`` apart.
        """
        cfg = self.config
        if not self._reserved:
            raise RuntimeError("call warmup() once before predict(): it compiles and preallocates")
        if history.ndim != 3 or history.shape[1] != cfg.obs_steps or history.shape[2] != 2:
            raise ValueError(f"history must be (M, {cfg.obs_steps}, 2), got {history.shape}")
        m = history.shape[0]
        if m == 0:
            return
        if history.dtype != np.float64 or not history.flags.c_contiguous:
            history = np.ascontiguousarray(history, dtype=np.float64)
        if m > self._reserved:
            raise ValueError(
                f"{m} humans exceed max_humans={self._reserved}; raise PredictorConfig.max_humans"
            )
        if out_mean.shape[0] < m or out_var.shape[0] < m:
            raise ValueError(f"out_mean/out_var must hold ({m}, {cfg.pred_steps}, 2)")
        if out_mean.dtype != np.float64 or out_var.dtype != np.float64 or out_mean.ndim != 3 or out_var.ndim != 3:
            raise TypeError("out_mean/out_var must be float64 (M, pred_steps, 2) arrays")  # compiled loops check none
        if not all_finite(history, m):
            raise ValueError("history contains NaN or inf; drop those humans before predicting")
        loops = gp_loops(cfg.dtype)
        loops.features_into(history, m, cfg.step_dt, self._lags, self._motion, self._place, self._rot)
        mean_a, var_a = self._mean_a[:m], self._var_a[:m]
        if self.motion_model_ is not None:
            mean_only = getattr(self.motion_model_, "predict_mean_into", None)
            if not self.use_motion_variance_ and mean_only is not None:
                # The calibration replaced the GP's variance by a constant: do not compute it (with 300
                # inducing points it is most of the cost of a batch).
                mean_only(self._motion[:m], mean_a)
                var_a.fill(1.0)
            else:
                self.motion_model_.predict_into(self._motion[:m], mean_a, var_a)
                if not self.use_motion_variance_:
                    var_a.fill(1.0)
        else:
            mean_a.fill(0.0)
            var_a.fill(1.0)
        place = self.place_model_
        if place is not None and place.n_train and cfg.place_shrinks_variance:
            place.predict_into(self._place[:m], self._mean_b[:m], self._var_b[:m])
            prm = place.params
            shrink = 1.0 / (prm.signal_var + prm.noise_var)
        elif place is not None and place.n_train:
            place.predict_mean_into(self._place[:m], self._mean_b[:m])  # its variance is not used
            shrink = 0.0
        else:
            self._mean_b[:m] = 0.0
            shrink = 0.0
        loops.combine_into(
            m, mean_a, var_a, self.motion_shrink_, self._mean_b, self._var_b, self.place_shrink_, shrink
        )
        if self.corrector_ is not None and self.corrector_.active:
            loops.velocity_changes_into(history, m, cfg.step_dt, self._corrector_lags, self._rot, self._changes)
            self.corrector_.add_into(self._changes[:m], mean_a, self._correction[:m])
        loops.compose_into(
            history,
            m,
            self._rot,
            mean_a,
            var_a,
            self.col_scale_,
            self.col_var_eff_,
            self.speed_gain_,
            self.unsteady_gain_,
            cfg.step_dt,
            out_mean,
            out_var,
        )

    # -- monitoring and persistence --------------------------------------------------------------
    def stats(self) -> dict:
        """Figures worth monitoring."""
        place = self.place_model_
        return {
            "fitted": self.motion_model_ is not None,
            "backend": type(self.motion_model_).__name__
            if self.motion_model_ is not None
            else "constant_velocity",
            "sparse": isinstance(self.motion_model_, SparseGP),
            "n_train": self.motion_model_.n_train if self.motion_model_ is not None else 0,
            "n_windows_fitted": self.n_windows_fitted_,
            "n_online": place.n_train if place is not None else 0,
            "refits": self.refits_ + (place.refits_ if place is not None else 0),
            "incremental_updates": place.incremental_updates_ if place is not None else 0,
            "place_failures": self.place_failures_,
            "place_retunes": self.place_retunes_,
            "place_rows_dropped": self.place_rows_dropped_,
            "place_stride": self.place_stride_,
            "corrector_ridge": self.corrector_.ridge if self.corrector_ is not None else 0.0,
            "corrector_windows": self.corrector_.n_windows_ if self.corrector_ is not None else 0,
            "max_humans": self._reserved,
        }

    def config_dict(self) -> dict:
        return asdict(self.config)

    def save(self, directory: str, data_digest: str = "") -> str:
        """Store this model in a diskcache store under ``directory``; returns the content-derived key."""
        from intent_perf_ros.core.gp.store import save_predictor

        return save_predictor(self, directory, data_digest)

    @classmethod
    def load(cls, directory: str, config: PredictorConfig, data_digest: str = "") -> TrajectoryPredictor:
        """Load the model stored for ``config``.

        Raises ``KeyError`` if absent and ``store.StoreError`` if corrupt or stale.
        """
        from intent_perf_ros.core.gp.store import load_predictor

        return load_predictor(directory, config, data_digest)


def default_predictor(
    cfg: PredictorConfig, cache_dir: str | None, data_dir: str | Path | None = None
) -> TrajectoryPredictor:
    """The predictor a node starts with (call ``warmup()`` on it before predicting).

    1. a valid stored model for these settings and this data in ``cache_dir``: load it;
    2. else, if the ETH/UCY files exist: fit on all scenes (each file its own place) and store it;
       a corrupt or stale stored entry is reported with a warning and rebuilt this way;
    3. else the unfitted constant-velocity predictor (still learns online via ``add_windows``).
    """
    from intent_perf_ros.core.gp.store import StoreError, data_digest, load_predictor, save_predictor
    from intent_perf_ros.datasets import eth_ucy

    directory = Path(data_dir) if data_dir is not None else eth_ucy.default_data_dir()
    names = [n for files in eth_ucy.SCENE_FILES.values() for n in files] + list(eth_ucy.EXTRA_TRAIN_FILES)
    names = [n for n in names if (directory / n).is_file()]
    if not names:
        LOG.warning("no ETH/UCY files in %s: starting with the constant-velocity predictor", directory)
        return TrajectoryPredictor(cfg)
    digest = data_digest(directory, names)
    if cache_dir is not None:
        try:
            pred = load_predictor(cache_dir, cfg, digest)
            LOG.info("loaded GP predictor from %s", cache_dir)
            return pred
        except KeyError:
            LOG.info("no stored GP predictor for these settings in %s; fitting", cache_dir)
        except StoreError as exc:
            LOG.warning("%s", exc)
    parts = [eth_ucy.windows(eth_ucy.load_file(directory / n)) for n in names]
    xy = np.concatenate([part.xy for part in parts])
    groups = np.concatenate([np.full(len(part.xy), i) for i, part in enumerate(parts)])
    frames = np.concatenate([part.start_frame // eth_ucy.FRAME_STEP for part in parts])
    pred = TrajectoryPredictor(cfg).fit(xy, groups, frames)
    if cache_dir is not None:
        save_predictor(pred, cache_dir, digest)
    return pred

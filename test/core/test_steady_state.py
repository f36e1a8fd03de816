"""The steady-state rule: after warm-up, each node's core path allocates no per-message buffers.

Each check runs the same sequence of calls a node's callback makes, on preallocated arrays, under
tracemalloc. A per-message numpy buffer of the output's size would show in ``peak_bytes``; memory
kept per message would show in ``retained_bytes``. The bounds sit below the size of one output
buffer, so they fail if a buffer is allocated per call, and above numpy's small call bookkeeping.
"""
import numpy as np

from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker
from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor
from intent_perf_ros.core.memory import measure_allocations
from intent_perf_ros.core.mpc.controller import MPCConfig, MPCController
from intent_perf_ros.core.tracks import TrackHistory
from intent_perf_ros.core.validation import HumanSanitizer

M = 20  # humans per message


def test_gp_inference_core_path_allocates_nothing_per_message():
    cfg = PredictorConfig(max_humans=M, hyperopt_restarts=0, hyperopt_points=100, calibration_points=100)
    rng = np.random.default_rng(0)
    steps = cfg.obs_steps + cfg.pred_steps
    velocity = rng.normal(0.0, 1.0, (120, 1, 2)) + np.cumsum(rng.normal(0.0, 0.05, (120, steps, 2)), axis=1)
    windows = rng.uniform(-5, 5, (120, 1, 2)) + np.cumsum(velocity * cfg.step_dt, axis=1)
    predictor = TrajectoryPredictor(cfg).fit(windows, groups=np.arange(120) % 3)  # the fitted GP path
    predictor.warmup()
    tracks = TrackHistory(capacity=M, obs_steps=cfg.obs_steps, step_dt=cfg.step_dt)
    tracks.warmup()
    sanitizer = HumanSanitizer(M)
    sanitizer.warmup()
    ids, xy, vxy = np.arange(M), np.zeros((M, 2)), np.ones((M, 2))
    history = np.zeros((M, cfg.obs_steps, 2))
    mean, var = np.zeros((M, cfg.pred_steps, 2)), np.zeros((M, cfg.pred_steps, 2))
    clock = [0.0]

    def callback() -> None:
        clock[0] += 0.1
        xy[:, 0] = clock[0]
        n, _, _ = sanitizer.apply(ids, xy, vxy, M)
        tracks.observe(clock[0], ids, xy, n)
        tracks.history(vxy, n, history)
        predictor.predict(history[:n], mean[:n], var[:n])

    report = measure_allocations(callback, calls=200, warmup=50)
    assert report.peak_bytes < mean.nbytes, report
    assert report.retained_bytes < 1024, report


def test_belief_core_path_allocates_nothing_per_message():
    tracker = BeliefTracker(BeliefConfig(goals=np.array([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0]]),
                                         mode="particle", particles=500, capacity=M))
    tracker.warmup()
    ids, xy, vxy = np.arange(M), np.zeros((M, 2)), np.ones((M, 2))
    clock = [0.0]

    def callback() -> None:
        clock[0] += 0.1
        xy[:, 0] = clock[0]
        tracker.update(clock[0], ids, xy, vxy)

    report = measure_allocations(callback, calls=200, warmup=20)
    # numba's argument handling holds ~2.3 KB during a call; one per-message weight array would be
    # M * particles * 8 = 80 KB.
    assert report.peak_bytes < 8 * 1024, report
    assert report.retained_bytes < 1024, report


def test_mpc_step_allocates_nothing_per_cycle_but_osqps_solution_copies():
    controller = MPCController(MPCConfig(horizon=20))
    controller.warmup()
    state, goal = np.array([0.0, 0.0, 0.0, 0.5, 0.0]), np.array([8.0, 1.0])
    mean = np.tile(np.array([4.0, 0.5]), (5, 12, 1)) + np.linspace(0, 1, 12)[None, :, None]
    var = np.full((5, 12, 2), 0.05)

    def cycle() -> None:
        controller.step(state, goal, mean, var, 0.4)

    report = measure_allocations(cycle, calls=200, warmup=20)
    # osqp's binding copies the primal and dual solution out of every solve (x: 7 * H doubles, y larger):
    # that is the one allocation per cycle; nothing is kept.
    primal_and_dual = (controller.qp.n + controller.qp.m) * 8
    assert report.peak_bytes < 2 * primal_and_dual + 4096, report
    assert report.retained_bytes < 8 * 1024, report

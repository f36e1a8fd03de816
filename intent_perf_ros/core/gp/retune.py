"""Choosing the place GP's hyperparameters by simulated online use, offline and online.

Offline, ``TrajectoryPredictor._tune_place`` replays the online protocol inside each training place
and picks the ``PLACE_GRID`` candidate that predicted the places' next windows best. Online, the
same replay runs on the windows the robot has learned in *this* place (``retune_place``): all of
them completed in the past, so the choice is causal. It is meant to run away from the prediction
path - in a child process of the node (``core.gp.background``), synchronously in
``eval-trajectories`` - and returns the refitted place GP's state, so adopting it costs the
node a copy instead of an O(N^3) refit (50-60 ms at 1000 windows, measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from intent_perf_ros.core.gp.exact import ExactGP
from intent_perf_ros.core.gp.kernels import RBFParams
from intent_perf_ros.core.gp.online import OnlineGP

# Candidates for the place GP (position lengthscale m, heading lengthscale, noise share of the unit
# standardised variance; speed lengthscale 0.5 m/s).
PLACE_GRID = tuple(
    RBFParams(np.array([lp, lp, lh, lh, 0.5]), 1.0 - noise, noise)
    for lp in (2.0, 4.0)
    for lh in (0.3, 0.6)
    for noise in (0.5, 0.75)
)
TESTS_PER_CUT = 50  # windows predicted at each simulated time
# Online schedule: first re-tuning once the place GP holds this many windows with known times, then
# after every RETUNE_EVERY more it took in (ETH/UCY: eval-trajectories --retune-every)
RETUNE_FIRST = 300
RETUNE_EVERY = 500


def on_grid(start_steps: np.ndarray, stride: int) -> np.ndarray:
    """Which windows the place GP learns at this stride: those starting on a multiple of ``stride``
    steps (and those of unknown start time)."""
    return ~np.isfinite(start_steps) | (np.floor(start_steps + 0.5) % stride == 0)


def simulate_online(
    params: RBFParams,
    place: np.ndarray,
    resid: np.ndarray,
    groups: np.ndarray,
    start_steps: np.ndarray,
    rng: np.random.Generator,
    capacity: int,
    cuts: int,
    span: int,
    jitter: float,
    stride: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Replay the online protocol inside each place: (targets, place-GP means) per place.

    At ``cuts`` random times s per place the place GP holds the newest ``capacity`` windows it
    learned among those that *ended* before s (end = start + span - 1 steps) and predicts up to
    ``TESTS_PER_CUT`` windows starting in [s, s + span), as ``add_windows`` would have it on the
    robot: it learns every window until it is full, then only those starting on a multiple of
    ``stride`` steps. The cut times and test windows do not depend on ``stride``.
    """
    targets, preds = [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort(start_steps[idx], kind="stable")]
        start = start_steps[idx]
        end = start + span - 1
        learned = np.ones(idx.size, dtype=bool)
        learned[capacity:] = on_grid(start[capacity:], stride)  # sorted by start, hence by end
        times = np.unique(start[start >= start[0] + 2 * span])
        if idx.size < 100 or times.size == 0:
            continue
        times = rng.choice(times, size=min(cuts, times.size), replace=False)
        tg, pr = [], []
        for s in times:
            pool = idx[(end < s) & learned][-capacity:]
            test = idx[(start >= s) & (start < s + span)][:TESTS_PER_CUT]
            if pool.size < 10 or test.size == 0:
                continue
            model = ExactGP(params, jitter=jitter, predict_with="solve").fit(place[pool], resid[pool])
            tg.append(resid[test])
            pr.append(model.predict(place[test])[0])
        if tg:
            targets.append(np.concatenate(tg))
            preds.append(np.concatenate(pr))
    return targets, preds


@dataclass
class PlaceSnapshot:
    """What the place GP holds (features, standardised residual targets, window start times in steps)
    and what re-tuning needs to replay it; picklable, to go to a child process."""

    x: np.ndarray
    y: np.ndarray
    start_steps: np.ndarray
    shrink: np.ndarray  # the place model's per-output trust, kept: only the hyperparameters are re-chosen
    current: int  # index of the place model's hyperparameters in PLACE_GRID, -1 if none of them
    rows_added: int  # rows the place model had taken in when the snapshot was made
    generation: int  # of the place model: a reset place starts a new one, and older results do not apply
    capacity: int
    cuts: int
    span: int
    jitter: float
    dtype: str
    seed: int


@dataclass
class PlaceRetune:
    """The choice, the refitted place GP's ``state()`` when the choice changed (else None) with the start
    times of its rows, how many windows the simulation predicted, and the snapshot it came from."""

    choice: int
    state: dict[str, np.ndarray] | None
    start_steps: np.ndarray
    rows_added: int
    generation: int
    tested: int


def choose_place_params(snapshot: PlaceSnapshot) -> tuple[int, int]:
    """Index into PLACE_GRID of the candidate with the smallest simulated squared error after the
    snapshot's shrinkage, and the number of windows it was scored on (0: too few, keep the current)."""
    s = snapshot
    finite = np.isfinite(s.start_steps)  # windows restored from the store carry no time
    place, resid, start = s.x[finite], s.y[finite], s.start_steps[finite]
    groups = np.zeros(len(start), dtype=np.int64)
    best, choice, tested = np.inf, s.current, 0
    for index, params in enumerate(PLACE_GRID):
        targets, preds = simulate_online(params, place, resid, groups, start, np.random.default_rng(s.seed),
                                         s.capacity, s.cuts, s.span, s.jitter)
        if not targets:
            return s.current, 0
        err = sum(float(np.sum((t - s.shrink * p) ** 2)) for t, p in zip(targets, preds, strict=True))
        if err < best:
            best, choice, tested = err, index, sum(len(t) for t in targets)
    return choice, tested


def retune_place(snapshot: PlaceSnapshot) -> PlaceRetune:
    """Re-choose the place GP's hyperparameters on its own windows and, if they change, refit it."""
    choice, tested = choose_place_params(snapshot)
    state = None
    if choice != snapshot.current and choice >= 0:
        model = OnlineGP(PLACE_GRID[choice], capacity=snapshot.capacity, jitter=snapshot.jitter, dtype=snapshot.dtype)
        state = model.fit(snapshot.x, snapshot.y).state()
    return PlaceRetune(choice, state, snapshot.start_steps, snapshot.rows_added, snapshot.generation, tested)

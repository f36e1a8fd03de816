"""Goal sets: named positions from parameters, or exits learned from where tracks begin and end.

The belief always carries one extra hypothesis after the K goals, "wandering" (none of these),
so a human heading somewhere unknown is not forced onto the nearest named goal.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

WANDERING = "wandering"


def validate_goals(goals: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Goals as a C-contiguous float64 (K, 2) array with K >= 1 and finite entries."""
    arr = np.ascontiguousarray(goals, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise ValueError(f"goals must have shape (K, 2) with K >= 1 (x, y in metres), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("goals contain NaN or infinity; give finite x, y positions in metres")
    return arr


def hypothesis_labels(n_goals: int, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """K goal labels (``goal0``... when none are given) followed by ``"wandering"``."""
    if labels is None:
        return (*(f"goal{k}" for k in range(n_goals)), WANDERING)
    labels = tuple(str(x) for x in labels)
    if len(labels) != n_goals:
        raise ValueError(f"{len(labels)} labels for {n_goals} goals; give one label per goal row")
    if WANDERING in labels:
        raise ValueError(f"{WANDERING!r} is reserved for the none-of-these hypothesis; rename that goal")
    if len(set(labels)) != n_goals:
        raise ValueError(f"goal labels must be unique, got {labels}")
    return (*labels, WANDERING)


class EndpointGoalLearner:
    """Learn goals as clusters of track endpoints (average-linkage agglomerative clustering).

    Average linkage with a distance cut (Sokal and Michener 1958) needs no number of clusters in
    advance: endpoints closer on average than ``radius_m`` form one exit. Clusters with fewer than
    ``min_support`` endpoints are dropped (a one-off is not a place people go), and at most
    ``max_goals`` of the best supported are kept.

    Learned state: ``goals_`` (K, 2) cluster means, ``support_`` (K,) endpoints per goal,
    ``prior_`` (K,) the share of endpoints per goal.
    """

    def __init__(self, radius_m: float = 2.0, min_support: int = 3, max_goals: int = 12) -> None:
        self.radius_m = radius_m
        self.min_support = min_support
        self.max_goals = max_goals

    def fit(self, points: np.ndarray) -> EndpointGoalLearner:
        pts = np.ascontiguousarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
            raise ValueError(f"points must be a finite (N, 2) array of endpoints in metres, got {pts.shape}")
        if self.radius_m <= 0 or self.min_support < 1 or self.max_goals < 1:
            raise ValueError("need radius_m > 0, min_support >= 1 and max_goals >= 1")
        if pts.shape[0] < self.min_support:
            raise ValueError(f"{pts.shape[0]} endpoints cannot form a goal of min_support={self.min_support}")
        if pts.shape[0] == 1:
            labels = np.ones(1, dtype=np.int64)
        else:
            # Imported here: learning goals is offline work, and a node should not pay scipy.cluster's memory.
            from scipy.cluster.hierarchy import fcluster, linkage

            labels = fcluster(linkage(pts, method="average"), t=self.radius_m, criterion="distance")
        ids, counts = np.unique(labels, return_counts=True)
        keep = counts >= self.min_support
        if not np.any(keep):
            raise ValueError(f"no cluster of radius {self.radius_m} m has {self.min_support} endpoints; "
                             "lower min_support or raise radius_m")
        ids, counts = ids[keep], counts[keep]
        order = np.argsort(-counts, kind="stable")[: self.max_goals]
        ids, counts = ids[order], counts[order]
        self.goals_ = np.stack([pts[labels == i].mean(axis=0) for i in ids])
        self.support_ = counts.astype(np.int64)
        self.prior_ = self.support_ / self.support_.sum()
        return self


def track_endpoints(tracks_xy: Iterable[np.ndarray], both_ends: bool = True, min_travel_m: float = 1.0
                    ) -> np.ndarray:
    """Endpoints of tracks that travelled at least ``min_travel_m`` (start and end when ``both_ends``).

    In an open scene the places people enter are also places people leave for, so both ends of a
    track count as exits by default.
    """
    pts = []
    for xy in tracks_xy:
        if xy.shape[0] < 2 or np.hypot(*(xy[-1] - xy[0])) < min_travel_m:
            continue
        pts.append(xy[-1])
        if both_ends:
            pts.append(xy[0])
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


class OriginDestinationPrior:
    """Prior over goals given where a track started: smoothed counts of origin -> destination flows.

    Each training track (start, end) is assigned to the goal nearest each end; the prior of a new
    track that starts within ``near_m`` of goal i is the Dirichlet posterior mean
        p(k | i) = (C[i, k] + alpha K q_k) / (sum_j C[i, j] + alpha K),
    q the share of endpoints per goal (the marginal prior), and q itself for a track appearing far
    from every goal (mid-scene). People who enter through one door mostly leave through a few others,
    which a map of flows captures and the marginal shares do not.

    Learned state: ``counts_`` (K, K) flows, ``marginal_`` (K,).
    """

    def __init__(self, alpha: float = 1.0, near_m: float = 3.0) -> None:
        self.alpha = alpha
        self.near_m = near_m

    def fit(self, goals: np.ndarray, starts: np.ndarray, ends: np.ndarray, marginal: np.ndarray
            ) -> OriginDestinationPrior:
        goals = validate_goals(goals)
        if starts.shape != ends.shape or starts.ndim != 2 or starts.shape[1] != 2:
            raise ValueError(f"starts and ends must both be (N, 2), got {starts.shape} and {ends.shape}")
        k = goals.shape[0]
        if marginal.shape != (k,):
            raise ValueError(f"marginal must have one share per goal ({k}), got {marginal.shape}")
        self.goals_ = goals
        self.marginal_ = np.asarray(marginal, dtype=np.float64) / np.sum(marginal)
        self.counts_ = np.zeros((k, k))
        if starts.shape[0]:
            np.add.at(self.counts_, (self._nearest(starts)[0], self._nearest(ends)[0]), 1.0)
        return self

    def _nearest(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.hypot(pts[:, None, 0] - self.goals_[None, :, 0], pts[:, None, 1] - self.goals_[None, :, 1])
        idx = d.argmin(axis=1)
        return idx, d[np.arange(pts.shape[0]), idx]

    def predict(self, start: np.ndarray) -> np.ndarray:
        """Prior (K,) for a track whose first observed position is ``start`` (2,)."""
        idx, dist = self._nearest(np.asarray(start, dtype=np.float64).reshape(1, 2))
        if dist[0] > self.near_m:
            return self.marginal_.copy()
        row = self.counts_[idx[0]]
        k = row.shape[0]
        return (row + self.alpha * k * self.marginal_) / (row.sum() + self.alpha * k)


class GoalFlowField:
    """Per-goal direction of travel learned from tracks: how people heading to goal k move at each place.

    Straight lines to a goal ignore walls, obstacles and habitual paths. For every training track
    labelled with its goal k, each step's unit direction of motion is added to the grid cell it
    starts in and the 8 neighbouring cells (a box kernel, ``cell_m`` metres per cell). The motion
    models then steer towards the direction of S + shrink * u, S the summed unit vectors of the
    cell and u the straight-line unit vector to the goal: shrinkage towards the straight line, which
    wins where the data are thin (``shrink`` pseudo-observations) and everywhere outside the grid.

    Learned state: ``field_`` (K, nx, ny, 2) summed unit vectors, ``origin_`` (2,) the corner of
    cell (0, 0), ``cell_m``.
    """

    def __init__(self, cell_m: float = 1.0, shrink: float = 2.0, margin_m: float = 2.0) -> None:
        self.cell_m = cell_m
        self.shrink = shrink
        self.margin_m = margin_m

    def fit(self, goals: np.ndarray, tracks_xy: Sequence[np.ndarray], goal_of_track: np.ndarray,
            min_step_m: float = 0.05) -> GoalFlowField:
        goals = validate_goals(goals)
        if len(tracks_xy) != len(goal_of_track):
            raise ValueError(f"{len(tracks_xy)} tracks but {len(goal_of_track)} goal labels; "
                             "give one label per track")
        if self.cell_m <= 0 or self.shrink < 0:
            raise ValueError("need cell_m > 0 and shrink >= 0")
        k = goals.shape[0]
        pts = np.vstack([goals, *[xy for xy in tracks_xy if len(xy)]])
        self.origin_ = pts.min(axis=0) - self.margin_m
        shape = np.ceil((pts.max(axis=0) + self.margin_m - self.origin_) / self.cell_m).astype(int) + 1
        self.field_ = np.zeros((k, shape[0], shape[1], 2))
        for xy, goal in zip(tracks_xy, goal_of_track, strict=True):
            if not 0 <= goal < k:
                raise ValueError(f"goal label {goal} outside [0, {k})")
            step = np.diff(xy, axis=0)
            norm = np.hypot(step[:, 0], step[:, 1])
            keep = norm >= min_step_m
            if not np.any(keep):
                continue
            unit = step[keep] / norm[keep, None]
            cells = np.floor((xy[:-1][keep] - self.origin_) / self.cell_m).astype(int)
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    ix = np.clip(cells[:, 0] + dx, 0, shape[0] - 1)
                    iy = np.clip(cells[:, 1] + dy, 0, shape[1] - 1)
                    np.add.at(self.field_[goal], (ix, iy), unit)
        return self

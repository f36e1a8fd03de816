"""ETH/UCY pedestrian trajectories and the standard 8 -> 12 evaluation windows.

Files are tab separated ``frame  pedestrian_id  x  y`` with annotations every 10 frames (0.4 s).
The standard protocol (Alahi et al. 2016, Gupta et al. 2018, Schöller et al. 2020) slides a
20-frame window over every start frame and keeps the pedestrians present in all 20 frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STEP_DT = 0.4
FRAME_STEP = 10
OBS_STEPS = 8
PRED_STEPS = 12
WINDOW = OBS_STEPS + PRED_STEPS

SCENE_FILES: dict[str, tuple[str, ...]] = {
    "eth": ("biwi_eth.txt",),
    "hotel": ("biwi_hotel.txt",),
    "univ": ("students001.txt", "students003.txt"),
    "zara1": ("crowds_zara01.txt",),
    "zara2": ("crowds_zara02.txt",),
}
EXTRA_TRAIN_FILES: tuple[str, ...] = ("crowds_zara03.txt", "uni_examples.txt")
SCENES: tuple[str, ...] = tuple(SCENE_FILES)


def default_data_dir() -> Path:
    """``$INTENT_PERF_ETH_UCY`` if set, else ``shared/data/eth_ucy`` beside the repository."""
    env = os.environ.get("INTENT_PERF_ETH_UCY")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "eth_ucy"


@dataclass(frozen=True)
class Track:
    """One pedestrian's annotated positions, frames ascending."""

    pedestrian_id: int
    frames: np.ndarray  # (T,) int64
    xy: np.ndarray  # (T, 2) float64


@dataclass(frozen=True)
class Windows:
    """Evaluation windows of one file: ``xy[w]`` is 20 positions, 0.4 s apart."""

    xy: np.ndarray  # (W, 20, 2)
    start_frame: np.ndarray  # (W,) frame of the first position
    pedestrian_id: np.ndarray  # (W,)


def load_file(path: Path | str) -> np.ndarray:
    """Rows ``(frame, pedestrian_id, x, y)`` as float64, sorted by frame then id."""
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if rows.shape[1] != 4:
        raise ValueError(f"{path}: expected 4 tab-separated columns (frame, id, x, y), got {rows.shape[1]}")
    order = np.lexsort((rows[:, 1], rows[:, 0]))
    return rows[order]


def tracks(rows: np.ndarray) -> list[Track]:
    """Split rows into per-pedestrian tracks."""
    result = []
    for pid in np.unique(rows[:, 1]):
        mine = rows[rows[:, 1] == pid]
        result.append(Track(int(pid), mine[:, 0].astype(np.int64), mine[:, 2:4].copy()))
    return result


def windows(rows: np.ndarray, length: int = WINDOW) -> Windows:
    """All windows of ``length`` consecutive annotated frames of pedestrians present in all."""
    index = {(int(f), int(p)): i for i, (f, p) in enumerate(rows[:, :2])}
    out_xy, out_start, out_pid = [], [], []
    for start in np.unique(rows[:, 0]).astype(np.int64):
        span = [int(start) + FRAME_STEP * k for k in range(length)]
        for pid in rows[rows[:, 0] == start, 1].astype(np.int64):
            at = [index.get((f, int(pid))) for f in span]
            if None in at:
                continue
            out_xy.append(rows[at, 2:4])
            out_start.append(start)
            out_pid.append(pid)
    if not out_xy:
        return Windows(np.empty((0, length, 2)), np.empty(0, np.int64), np.empty(0, np.int64))
    return Windows(np.stack(out_xy), np.asarray(out_start), np.asarray(out_pid))


def scene_windows(scene: str, data_dir: Path | None = None) -> Windows:
    """Evaluation windows of one of the five scenes, files concatenated."""
    if scene not in SCENE_FILES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
    parts = [windows(load_file((data_dir or default_data_dir()) / name)) for name in SCENE_FILES[scene]]
    return _concat(parts)


def training_windows(held_out: str, data_dir: Path | None = None) -> Windows:
    """Leave-one-scene-out training windows: every other scene plus the extra files."""
    directory = data_dir or default_data_dir()
    names = [n for s, files in SCENE_FILES.items() if s != held_out for n in files]
    return _concat([windows(load_file(directory / n)) for n in (*names, *EXTRA_TRAIN_FILES)])


def _concat(parts: list[Windows]) -> Windows:
    return Windows(
        np.concatenate([p.xy for p in parts]),
        np.concatenate([p.start_frame for p in parts]),
        np.concatenate([p.pedestrian_id for p in parts]),
    )

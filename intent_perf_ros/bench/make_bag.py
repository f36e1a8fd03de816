"""``intent-perf make-bag``: a rosbag2 of the package's input topics, to bench on or play on a robot.

Two sources: the synthetic scenario (the same world the demo drives) or an ETH/UCY scene resampled
to the tracker rate. Besides ``/humans/tracked``, ``/odom``, ``/goal_pose`` and ``/clock`` the bag
holds ``/ground_truth/humans`` (noise-free positions) so the bench can score predictions; the
replayer never publishes it. The bag is open loop: the recorded robot drives a scripted straight
line to its goal (synthetic) or stands still (ETH/UCY), whatever the stack commands on replay.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from intent_perf_ros.bench.bags import GROUND_TRUTH_TOPIC, STORAGES, read_bag, typestore, write_messages
from intent_perf_ros.core.scenario import ScenarioConfig, SyntheticScenario
from intent_perf_ros.datasets import eth_ucy

DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000  # fixed, so one seed always gives the same bytes
ROBOT_SPEED = 0.8  # [m/s] of the scripted robot in synthetic bags
FRAME = "map"

Frame = tuple[np.ndarray, np.ndarray, np.ndarray]  # ids (n,), xy (n, 2), vxy (n, 2)


class _Messages:
    """rosbags message objects of our input types (classes looked up once)."""

    def __init__(self) -> None:
        t = typestore().types
        self.Time, self.Header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        self.Humans, self.Human = t["intent_perf_ros/msg/TrackedHumans"], t["intent_perf_ros/msg/HumanState"]
        self.g = {
            name: t[f"geometry_msgs/msg/{name}"]
            for name in (
                "Point",
                "Quaternion",
                "Pose",
                "PoseStamped",
                "PoseWithCovariance",
                "Twist",
                "TwistWithCovariance",
                "Vector3",
            )
        }
        self.Odometry, self.Clock = t["nav_msgs/msg/Odometry"], t["rosgraph_msgs/msg/Clock"]

    def header(self, ns: int) -> object:
        sec, nanosec = divmod(ns, 1_000_000_000)
        return self.Header(stamp=self.Time(sec=sec, nanosec=nanosec), frame_id=FRAME)

    def humans(self, ns: int, ids: np.ndarray, xy: np.ndarray, vxy: np.ndarray) -> object:
        return self.Humans(
            header=self.header(ns),
            humans=[
                self.Human(id=int(i), x=float(p[0]), y=float(p[1]), vx=float(v[0]), vy=float(v[1]))
                for i, p, v in zip(ids, xy, vxy, strict=True)
            ],
        )

    def pose(self, x: float, y: float, yaw: float) -> object:
        g = self.g
        return g["Pose"](
            position=g["Point"](x=x, y=y, z=0.0),
            orientation=g["Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)),
        )

    def odometry(self, ns: int, x: float, y: float, yaw: float, v: float) -> object:
        g, zero = self.g, np.zeros(36)
        twist = g["Twist"](linear=g["Vector3"](x=v, y=0.0, z=0.0), angular=g["Vector3"](x=0.0, y=0.0, z=0.0))
        return self.Odometry(
            header=self.header(ns),
            child_frame_id="base_link",
            pose=g["PoseWithCovariance"](pose=self.pose(x, y, yaw), covariance=zero),
            twist=g["TwistWithCovariance"](twist=twist, covariance=zero),
        )

    def goal(self, ns: int, x: float, y: float) -> object:
        return self.g["PoseStamped"](header=self.header(ns), pose=self.pose(x, y, 0.0))

    def clock(self, ns: int) -> object:
        sec, nanosec = divmod(ns, 1_000_000_000)
        return self.Clock(clock=self.Time(sec=sec, nanosec=nanosec))


def _stream(
    frames: Iterator[tuple[float, Frame]],
    robot: Iterator[tuple[float, float, float, float]],
    goal: tuple[float, float],
    start_ns: int,
    noise_std: float,
    seed: int,
) -> Iterator[tuple[str, object, int]]:
    """Per tick: /clock, /odom, /humans/tracked (with optional noise), ground truth; goal at 1 Hz."""
    m = _Messages()
    rng = np.random.default_rng(seed + 1)
    next_goal_s = 0.0
    for (t, (ids, xy, vxy)), (rx, ry, ryaw, rv) in zip(frames, robot, strict=False):
        ns = start_ns + round(t * 1e9)
        yield "/clock", m.clock(ns), ns
        if t >= next_goal_s:
            yield "/goal_pose", m.goal(ns, *goal), ns
            next_goal_s += 1.0
        yield "/odom", m.odometry(ns, rx, ry, ryaw, rv), ns
        seen = xy + rng.normal(0.0, noise_std, xy.shape) if noise_std > 0 else xy
        yield "/humans/tracked", m.humans(ns, ids, seen, vxy), ns
        yield GROUND_TRUTH_TOPIC, m.humans(ns, ids, xy, vxy), ns


def synthetic_frames(
    humans: int, rate_hz: float, duration_s: float, seed: int
) -> Iterator[tuple[float, Frame]]:
    """The demo's scenario (crossing human included), sampled at ``rate_hz``."""
    scenario = SyntheticScenario(ScenarioConfig(humans=humans, seed=seed, crossing_human=True))
    dt = 1.0 / rate_hz
    for k in range(round(duration_s * rate_hz)):
        yield k * dt, (scenario.ids.copy(), scenario.xy.copy(), scenario.vxy.copy())
        scenario.step(dt)


def scripted_robot(
    start: tuple[float, float], goal: tuple[float, float], rate_hz: float
) -> Iterator[tuple[float, float, float, float]]:
    """Straight line from start to goal at ROBOT_SPEED, then standing at the goal."""
    start_xy, goal_xy = np.asarray(start, float), np.asarray(goal, float)
    length = float(np.linalg.norm(goal_xy - start_xy))
    yaw = math.atan2(*(goal_xy - start_xy)[::-1])
    k = 0
    while True:
        s = min(k / rate_hz * ROBOT_SPEED, length)
        x, y = start_xy + (goal_xy - start_xy) * (s / length if length else 0.0)
        yield float(x), float(y), yaw, ROBOT_SPEED if s < length else 0.0
        k += 1


def eth_ucy_frames(path: Path, rate_hz: float, duration_s: float | None) -> Iterator[tuple[float, Frame]]:
    """An ETH/UCY file's annotations (every 0.4 s) linearly interpolated to ``rate_hz``.

    A pedestrian is present from its first to its last annotation; its velocity is the slope of
    the interpolating segment (what a tracker's constant-velocity filter would report).
    """
    rows = eth_ucy.load_file(path)
    frame_dt = eth_ucy.STEP_DT / eth_ucy.FRAME_STEP
    tracks = [
        (tr.pedestrian_id, tr.frames * frame_dt, tr.xy) for tr in eth_ucy.tracks(rows) if len(tr.frames) >= 2
    ]
    t0, t1 = rows[0, 0] * frame_dt, rows[-1, 0] * frame_dt
    if duration_s is not None:
        t1 = min(t1, t0 + duration_s)
    for k in range(int((t1 - t0) * rate_hz) + 1):
        t = t0 + k / rate_hz
        ids, xy, vxy = [], [], []
        for pid, times, pos in tracks:
            if not times[0] <= t <= times[-1]:
                continue
            j = min(max(int(np.searchsorted(times, t, side="right")) - 1, 0), len(times) - 2)
            w = (t - times[j]) / (times[j + 1] - times[j])
            ids.append(pid)
            xy.append(pos[j] + w * (pos[j + 1] - pos[j]))
            vxy.append((pos[j + 1] - pos[j]) / (times[j + 1] - times[j]))
        yield (
            t - t0,
            (np.asarray(ids, np.int64), np.asarray(xy).reshape(-1, 2), np.asarray(vxy).reshape(-1, 2)),
        )


def make_bag(
    out: Path,
    storage: str = "mcap",
    *,
    synthetic: bool = True,
    humans: int = 10,
    rate_hz: float = 30.0,
    duration_s: float | None = 60.0,
    seed: int = 0,
    eth_ucy_file: Path | None = None,
    noise_std: float = 0.0,
    start_ns: int = DEFAULT_START_NS,
) -> int:
    """Write the bag; returns the number of messages. The generator settings go to custom_data."""
    if rate_hz <= 0:
        raise ValueError(f"--rate-hz must be positive, got {rate_hz}")
    if synthetic:
        if duration_s is None or duration_s <= 0:
            raise ValueError("--duration must be positive for a synthetic bag")
        config = ScenarioConfig()
        frames = synthetic_frames(humans, rate_hz, duration_s, seed)
        robot = scripted_robot(config.robot_start, config.robot_goal, rate_hz)
        goal = config.robot_goal
        source = {"source": "synthetic", "humans": humans, "seed": seed}
    else:
        if eth_ucy_file is None or not Path(eth_ucy_file).exists():
            raise FileNotFoundError(
                f"ETH/UCY file {eth_ucy_file} not found; files are in {eth_ucy.default_data_dir()}"
            )
        centre = eth_ucy.load_file(eth_ucy_file)[:, 2:4].mean(axis=0)
        frames = eth_ucy_frames(Path(eth_ucy_file), rate_hz, duration_s)
        robot = iter(lambda: (float(centre[0]), float(centre[1]), 0.0, 0.0), None)
        goal = (float(centre[0]), float(centre[1]))
        source = {"source": "eth_ucy", "file": Path(eth_ucy_file).name}
    settings = {
        **source,
        "rate_hz": rate_hz,
        "duration_s": duration_s,
        "noise_std": noise_std,
        "ground_truth_topic": GROUND_TRUTH_TOPIC,
    }
    return write_messages(
        out,
        _stream(frames, robot, goal, start_ns, noise_std, seed),
        storage,
        {"intent_perf.make_bag": json.dumps(settings)},
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="intent-perf make-bag", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", action="store_true", help="the built-in synthetic scenario")
    src.add_argument("--eth-ucy", type=Path, metavar="FILE", help="an ETH/UCY annotation file (frame id x y)")
    p.add_argument("--out", type=Path, required=True, help="new bag directory (must not exist)")
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    p.add_argument("--humans", type=int, default=10, help="synthetic: number of humans (default 10)")
    p.add_argument("--rate-hz", type=float, default=30.0, help="tracker/odometry rate (default 30)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds (default: 60 synthetic, the whole file for ETH/UCY)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--noise-std",
        type=float,
        default=0.0,
        help="[m] Gaussian noise on tracked positions; ground truth stays exact (default 0)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    duration = args.duration if args.duration is not None or args.eth_ucy else 60.0
    count = make_bag(
        args.out,
        args.storage,
        synthetic=args.synthetic,
        humans=args.humans,
        rate_hz=args.rate_hz,
        duration_s=duration,
        seed=args.seed,
        eth_ucy_file=args.eth_ucy,
        noise_std=args.noise_std,
    )
    bag = read_bag(args.out)
    counts = ", ".join(f"{t} {n}" for t, n in bag.counts().items())
    print(
        f"wrote {args.out} ({bag.storage}, {count} messages, {bag.duration_s:.1f} s): {counts}, "
        f"{GROUND_TRUTH_TOPIC} {len(bag.ground_truth)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

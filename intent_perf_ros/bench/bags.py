"""rosbag2 directories in and out, without rosbag2: the ``rosbags`` library, our types registered.

Why not rosbag2_py: it is not installable from PyPI. ``rosbags`` writes the same on-disk format
(metadata version 9, mcap or sqlite3 storage) with the message definitions and RIHS01 type hashes
that rosidl generates, so ``ros2 bag play`` on a robot accepts our bags, and we read the robot's.

Messages stay serialised (CDR bytes) from the bag to the wire: the replayer publishes them raw and
only rewrites the header stamp in place (:func:`restamp`), which keeps replay cheap enough for
``--rate max``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from ruamel.yaml import YAML

PACKAGE = "intent_perf_ros"
HUMANS_TYPE = f"{PACKAGE}/msg/TrackedHumans"
# The package's input topics (absolute, as rosbag2 records them) and their types.
INPUT_TOPICS: dict[str, str] = {
    "/humans/tracked": HUMANS_TYPE,
    "/odom": "nav_msgs/msg/Odometry",
    "/goal_pose": "geometry_msgs/msg/PoseStamped",
    "/clock": "rosgraph_msgs/msg/Clock",
}
# True human positions (noise-free), never replayed: what the bench scores predictions against.
GROUND_TRUTH_TOPIC = "/ground_truth/humans"
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# Types whose CDR payload begins with a stamp (a Header or a Time): the replayer can restamp them.
_STAMP_FIRST = ("std_msgs/msg/Header", "builtin_interfaces/msg/Time")
_CDR_HEADER = 4  # encapsulation kind (2 bytes) + options (2 bytes) precede the payload


def _qos(reliability: QosReliability, depth: int = 10) -> Qos:
    zero = QosTime(0, 0)
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        reliability,
        QosDurability.VOLATILE,
        zero,
        zero,
        QosLiveliness.AUTOMATIC,
        zero,
        False,
    )


# Offered QoS recorded per topic, as a tracker/odometry driver and a goal tool would offer them;
# ``ros2 bag play`` offers the same when it plays the bag.
TOPIC_QOS: dict[str, Qos] = {
    "/humans/tracked": _qos(QosReliability.RELIABLE),
    "/odom": _qos(QosReliability.RELIABLE),
    "/goal_pose": _qos(QosReliability.RELIABLE),
    "/clock": _qos(QosReliability.BEST_EFFORT, depth=1),
    GROUND_TRUTH_TOPIC: _qos(QosReliability.RELIABLE),
}


def msg_dir() -> Path:
    """Our ``msg/*.msg``: the source tree's, else the installed share directory's."""
    source = Path(__file__).resolve().parents[2] / "msg"
    if source.is_dir():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / "msg"


@cache
def typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus ours, registered from the .msg text (as rosidl sees it)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


def stamp_first(msgtype: str) -> bool:
    """Whether a message of this type starts with a stamp, so :func:`restamp` can rewrite it."""
    fields = typestore().get_msgdef(msgtype).fields
    return bool(fields) and fields[0][1][0].name == "NAME" and fields[0][1][1] in _STAMP_FIRST


def read_stamp(data: bytes | bytearray | memoryview) -> int:
    """Header stamp [ns] of a serialised stamp-first message."""
    sec, nanosec = struct.unpack_from("<iI" if data[1] else ">iI", data, _CDR_HEADER)
    return sec * 1_000_000_000 + nanosec


def restamp(data: bytearray, stamp_ns: int) -> None:
    """Overwrite the header stamp of a serialised stamp-first message in place."""
    struct.pack_into("<iI" if data[1] else ">iI", data, _CDR_HEADER, *divmod(stamp_ns, 1_000_000_000))


@dataclass
class BagWriter:
    """Writes our input topics (and ground truth) to a new rosbag2 directory, metadata version 9."""

    path: Path
    storage: str = "mcap"
    _writer: Writer = field(init=False)
    _connections: dict = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"unknown storage {self.storage!r}; choose one of {', '.join(STORAGES)}")
        if Path(self.path).exists():
            raise FileExistsError(
                f"{self.path} exists; rosbag2 never overwrites a bag: remove it or pick another --out"
            )
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[self.storage])

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self._writer.close()
        else:
            self._writer.abort()

    def set_custom_data(self, key: str, value: str) -> None:
        self._writer.set_custom_data(key, value)

    def write(self, topic: str, msg: object, timestamp_ns: int) -> None:
        """Serialise ``msg`` (a rosbags message object of the topic's type) and write it."""
        connection = self._connections.get(topic)
        if connection is None:
            msgtype = msg.__msgtype__
            connection = self._writer.add_connection(
                topic,
                msgtype,
                typestore=typestore(),
                offered_qos_profiles=[TOPIC_QOS.get(topic, TOPIC_QOS["/odom"])],
            )
            self._connections[topic] = connection
        self._writer.write(connection, timestamp_ns, typestore().serialize_cdr(msg, connection.msgtype))


@dataclass(frozen=True)
class RawMessage:
    """One recorded message, still serialised; ``topic`` is the package topic it is replayed on."""

    topic: str
    msgtype: str
    timestamp_ns: int  # when it was recorded (rosbag2's receive time)
    data: bytes


@dataclass
class Bag:
    """What the bench needs of a bag: the input messages in order, and ground truth if recorded."""

    path: Path
    storage: str
    inputs: list[RawMessage]
    ground_truth: list[RawMessage]
    topic_map: dict[str, str]  # bag topic -> package topic
    custom_data: dict[str, str]

    @property
    def duration_s(self) -> float:
        if not self.inputs:
            return 0.0
        return (self.inputs[-1].timestamp_ns - self.inputs[0].timestamp_ns) * 1e-9

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.inputs:
            out[m.topic] = out.get(m.topic, 0) + 1
        return out

    def deserialize(self, message: RawMessage) -> object:
        return typestore().deserialize_cdr(message.data, message.msgtype)


def parse_topic_map(text: str | None) -> dict[str, str]:
    """``BAG_TOPIC=PACKAGE_TOPIC[,...]`` -> dict, e.g. ``/people/tracked=/humans/tracked``."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ValueError(
                f"topic mapping {item!r} is not BAG_TOPIC=PACKAGE_TOPIC (e.g. /people=/humans/tracked)"
            )
        target = target if target.startswith("/") else f"/{target}"
        if target not in {*INPUT_TOPICS, GROUND_TRUTH_TOPIC}:
            raise ValueError(
                f"topic mapping {item!r}: {target} is not one of the package's input topics "
                f"({', '.join([*INPUT_TOPICS, GROUND_TRUTH_TOPIC])})"
            )
        mapping[source if source.startswith("/") else f"/{source}"] = target
    return mapping


def _choose_topics(connections: list, mapping: dict[str, str]) -> dict[str, str]:
    """Bag topic -> package topic: the explicit mapping, else same name, else the only topic of the type."""
    by_topic = {c.topic: c.msgtype for c in connections}
    missing = set(mapping) - set(by_topic)
    if missing:
        raise ValueError(f"mapped topics {sorted(missing)} are not in the bag; it has {sorted(by_topic)}")
    chosen = dict(mapping)
    wanted = {**INPUT_TOPICS, GROUND_TRUTH_TOPIC: HUMANS_TYPE}
    for target, msgtype in wanted.items():
        if target in chosen.values():
            continue
        if by_topic.get(target) == msgtype:
            chosen[target] = target
            continue
        same_type = [t for t, mt in by_topic.items() if mt == msgtype and t not in chosen]
        if target in INPUT_TOPICS and len(same_type) == 1 and target != "/goal_pose":
            chosen[same_type[0]] = target
    for source, target in chosen.items():
        if by_topic[source] != wanted[target]:
            raise ValueError(
                f"bag topic {source} has type {by_topic[source]}, but {target} needs {wanted[target]}"
            )
        if not stamp_first(by_topic[source]):
            raise ValueError(f"{source}: type {by_topic[source]} does not start with a header stamp")
    if "/humans/tracked" not in chosen.values():
        raise ValueError(
            f"no {HUMANS_TYPE} topic to replay in the bag (topics: {by_topic}); "
            "record one, or name it with --topic-map BAG_TOPIC=/humans/tracked"
        )
    return chosen


def metadata(path: Path | str) -> dict:
    """The ``rosbag2_bagfile_information`` of a bag's metadata.yaml."""
    return YAML(typ="safe").load(Path(path, "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def read_bag(path: Path | str, topic_map: dict[str, str] | None = None) -> Bag:
    """Load a rosbag2 directory (mcap or sqlite3) into memory, keeping the package's topics only."""
    path = Path(path)
    if not (path / "metadata.yaml").exists():
        raise FileNotFoundError(
            f"{path} is not a rosbag2 directory (no metadata.yaml); "
            "make one with `intent-perf make-bag --synthetic --out DIR`"
        )
    with Reader(path) as reader:
        chosen = _choose_topics(reader.connections, topic_map or {})
        connections = [c for c in reader.connections if c.topic in chosen]
        inputs, truth = [], []
        for connection, timestamp, data in reader.messages(connections=connections):
            target = chosen[connection.topic]
            raw = RawMessage(target, connection.msgtype, timestamp, bytes(data))
            (truth if target == GROUND_TRUTH_TOPIC else inputs).append(raw)
    info = metadata(path)
    return Bag(path, info["storage_identifier"], inputs, truth, chosen, dict(info.get("custom_data") or {}))


def write_messages(
    path: Path | str,
    messages: Iterable[tuple[str, object, int]],
    storage: str = "mcap",
    custom_data: dict[str, str] | None = None,
) -> int:
    """Write ``(topic, msg, timestamp_ns)`` in order to a new bag; returns the number written."""
    count = 0
    with BagWriter(Path(path), storage) as writer:
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, value)
        for topic, msg, timestamp in messages:
            writer.write(topic, msg, timestamp)
            count += 1
    return count


def iter_humans(bag: Bag, messages: list[RawMessage]) -> Iterator[tuple[int, object]]:
    """``(header stamp ns, TrackedHumans)`` of serialised humans messages."""
    for m in messages:
        msg = bag.deserialize(m)
        yield msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, msg

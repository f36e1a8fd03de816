"""make-bag writes rosbag2 bags that read back unchanged and carry rosbag2's metadata and type hashes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from intent_perf_ros.bench import bags, make_bag
from intent_perf_ros.bench.bags import GROUND_TRUTH_TOPIC, INPUT_TOPICS


def rosidl_hash(msgtype: str) -> str:
    """The RIHS01 hash rosidl generated for a type (its type description file, installed in the venv)."""
    package, _, name = msgtype.split("/")
    text = Path(sys.prefix, "share", package, "msg", f"{name}.json").read_text()
    return next(h["hash_string"] for h in json.loads(text)["type_hashes"] if h["type_name"] == msgtype)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_same_messages_and_stamps(tmp_path, storage):
    frames = list(make_bag.synthetic_frames(humans=4, rate_hz=20.0, duration_s=1.0, seed=3))
    written = list(
        make_bag._stream(
            iter(frames),
            make_bag.scripted_robot((0, 0), (5, 0), 20.0),
            (5.0, 0.0),
            make_bag.DEFAULT_START_NS,
            noise_std=0.0,
            seed=3,
        )
    )
    bags.write_messages(tmp_path / "bag", written, storage)

    bag = bags.read_bag(tmp_path / "bag")
    assert bag.storage == storage
    read = [*bag.inputs, *bag.ground_truth]
    assert len(read) == len(written) == 20 * 4 + 1
    expected = sorted((t, topic, bags.typestore().serialize_cdr(m, m.__msgtype__)) for topic, m, t in written)
    assert sorted((m.timestamp_ns, m.topic, m.data) for m in read) == expected
    humans = [m for m in bag.inputs if m.topic == "/humans/tracked"]
    for (t, (ids, xy, vxy)), raw in zip(frames, humans, strict=True):
        stamp, msg = next(bags.iter_humans(bag, [raw]))
        assert stamp == raw.timestamp_ns == make_bag.DEFAULT_START_NS + round(t * 1e9)
        assert bags.read_stamp(raw.data) == stamp
        assert [h.id for h in msg.humans] == ids.tolist()
        np.testing.assert_array_equal([(h.x, h.y, h.vx, h.vy) for h in msg.humans], np.hstack([xy, vxy]))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_metadata_version_and_type_hashes_as_rosbag2_writes_them(tmp_path, storage):
    make_bag.make_bag(tmp_path / "bag", storage, humans=2, rate_hz=10.0, duration_s=1.0)
    info = bags.metadata(tmp_path / "bag")
    assert info["version"] == 9 and info["storage_identifier"] == storage
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert set(topics) == {*INPUT_TOPICS, GROUND_TRUTH_TOPIC}
    for name, entry in topics.items():
        meta = entry["topic_metadata"]
        assert meta["serialization_format"] == "cdr"
        assert meta["type_description_hash"] == rosidl_hash(meta["type"]), name
        assert meta["offered_qos_profiles"][0]["history"] == "keep_last"
    assert topics["/humans/tracked"]["message_count"] == 10
    assert sum(t["message_count"] for t in topics.values()) == info["message_count"]


def test_restamp_rewrites_only_the_stamp():
    m = make_bag._Messages()
    data = bytearray(
        bags.typestore().serialize_cdr(
            m.humans(5, np.array([7]), np.ones((1, 2)), np.zeros((1, 2))), bags.HUMANS_TYPE
        )
    )
    before = bytes(data)
    bags.restamp(data, 1_234_567_890_123_456_789)
    assert bags.read_stamp(data) == 1_234_567_890_123_456_789
    assert data[12:] == before[12:]
    msg = bags.typestore().deserialize_cdr(bytes(data), bags.HUMANS_TYPE)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_234_567_890, 123_456_789)
    assert msg.humans[0].id == 7 and msg.header.frame_id == "map"


def test_users_bag_with_other_topic_names(tmp_path):
    m = make_bag._Messages()
    one = np.ones((1, 2))
    messages = [
        ("/people/tracked", m.humans(10, np.array([1]), one, one), 10),
        ("/robot/odom", m.odometry(10, 0.0, 0.0, 0.0, 0.0), 10),
        ("/people/truth", m.humans(10, np.array([1]), one, one), 10),
    ]
    bags.write_messages(tmp_path / "user", messages)
    # By type, the only TrackedHumans topic would be ambiguous (two of them): the mapping decides.
    with pytest.raises(ValueError, match="--topic-map"):
        bags.read_bag(tmp_path / "user")
    mapping = bags.parse_topic_map("/people/tracked=humans/tracked, /people/truth=/ground_truth/humans")
    bag = bags.read_bag(tmp_path / "user", mapping)
    assert [x.topic for x in bag.inputs] == ["/humans/tracked", "/odom"]  # odometry found by its type
    assert len(bag.ground_truth) == 1
    with pytest.raises(ValueError, match="not in the bag"):
        bags.read_bag(tmp_path / "user", {"/nope": "/humans/tracked"})
    with pytest.raises(ValueError, match="needs"):
        bags.read_bag(tmp_path / "user", {"/robot/odom": "/humans/tracked"})
    with pytest.raises(ValueError, match="BAG_TOPIC=PACKAGE_TOPIC"):
        bags.parse_topic_map("/people")


def test_eth_ucy_bag_resamples_annotations(tmp_path):
    data = tmp_path / "scene.txt"
    # Two pedestrians, annotated every 10 frames (0.4 s); pedestrian 2 appears later.
    data.write_text("0\t1\t0.0\t0.0\n10\t1\t0.4\t0.0\n20\t1\t0.8\t0.0\n10\t2\t5.0\t5.0\n20\t2\t5.0\t5.4\n")
    make_bag.make_bag(tmp_path / "bag", synthetic=False, eth_ucy_file=data, rate_hz=10.0, duration_s=None)
    bag = bags.read_bag(tmp_path / "bag")
    frames = [msg for _, msg in bags.iter_humans(bag, bag.ground_truth)]
    assert len(frames) == 9  # 0.0 .. 0.8 s at 10 Hz
    assert [h.id for h in frames[2].humans] == [1]
    first = frames[2].humans[0]
    assert (first.x, first.vx) == pytest.approx((0.2, 1.0))
    assert [h.id for h in frames[6].humans] == [1, 2]
    assert frames[6].humans[1].vy == pytest.approx(1.0)


def test_existing_output_is_refused(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError, match="--out"):
        make_bag.make_bag(tmp_path / "bag", duration_s=1.0)

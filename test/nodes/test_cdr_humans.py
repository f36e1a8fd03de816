"""TrackedHumans read from its serialized bytes equals rclpy's deserialisation; bad bytes are refused.

The reference is rclpy's own serialisation (the rmw's CDR), for frame ids of every length mod 8 (the
padding before the humans), negative stamps, no humans and more humans than the buffers hold.
"""
import struct

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message, serialize_message

from intent_perf_ros.core.cdr import CDR_HEADER_FIELDS, CDR_MALFORMED, CDR_OK, CDR_UNSUPPORTED
from intent_perf_ros.core.validation import read_tracked_humans
from intent_perf_ros.msg import HumanState, IntentPredictionArray, TrackedHumans
from intent_perf_ros.nodes.gp_inference_node import GpInferenceNode

CAPACITY = 16


def message(n: int, frame: str, sec: int, rng: np.random.Generator) -> TrackedHumans:
    msg = TrackedHumans(humans=[HumanState(id=int(rng.integers(0, 2**32)), x=float(rng.normal()), y=float(rng.normal()),
                                           vx=float(rng.normal()), vy=float(rng.normal())) for _ in range(n)])
    msg.header.frame_id = frame
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, int(rng.integers(0, 10**9))
    return msg


def read(data: bytes):
    buffers = (np.zeros(CAPACITY, np.int64), np.zeros((CAPACITY, 2)), np.zeros((CAPACITY, 2)),
               np.zeros(CDR_HEADER_FIELDS, np.int64))
    return read_tracked_humans(np.frombuffer(data, np.uint8).copy(), *buffers), buffers


@pytest.mark.parametrize("n", [0, 1, 5, CAPACITY, CAPACITY + 9])
def test_the_bytes_read_equal_rclpy_deserialisation(n: int) -> None:
    rng = np.random.default_rng(n)
    for frame in ("", "m", "map", "odom", "base_li", "map_frame", "a_longer_frame_id_17"):
        for sec in (0, 1_700_000_000, -3):
            msg = message(n, frame, sec, rng)
            data = serialize_message(msg)
            status, (ids, xy, vxy, header) = read(data)
            assert status == CDR_OK
            sec_read, nanosec, at, length, count = header
            assert (sec_read, nanosec, count) == (sec, msg.header.stamp.nanosec, n)
            assert data[at : at + length].decode() == frame
            k = min(n, CAPACITY)
            np.testing.assert_array_equal(ids[:k], [h.id for h in msg.humans[:k]])
            np.testing.assert_array_equal(xy[:k], np.reshape([(h.x, h.y) for h in msg.humans[:k]], (k, 2)))
            np.testing.assert_array_equal(vxy[:k], np.reshape([(h.vx, h.vy) for h in msg.humans[:k]], (k, 2)))


def test_every_truncation_is_malformed_and_other_representations_unsupported() -> None:
    data = serialize_message(message(3, "map", 5, np.random.default_rng(0)))
    assert read(data)[0] == CDR_OK
    assert [read(data[:size])[0] for size in range(4, len(data))] == [CDR_MALFORMED] * (len(data) - 4)
    assert read(data[:3])[0] == CDR_UNSUPPORTED
    for encapsulation in (b"\x00\x00", b"\x00\x11", b"\x00\x07"):  # CDR big endian, XCDR2 little endian
        assert read(encapsulation + data[2:])[0] == CDR_UNSUPPORTED
    # a frame id or a sequence length pointing far past the end
    huge = bytearray(data)
    huge[12:16] = (2**31).to_bytes(4, "little")
    assert read(bytes(huge))[0] == CDR_MALFORMED
    huge = bytearray(data)
    huge[20:24] = (2**32 - 1).to_bytes(4, "little")
    assert read(bytes(huge))[0] == CDR_MALFORMED


def big_endian(msg: TrackedHumans) -> bytes:
    """The message as big-endian plain CDR (encapsulation 00 00), written by hand from the OMG rules."""
    out = bytearray(b"\x00\x00\x00\x00")

    def align(n: int) -> None:
        out.extend(b"\x00" * (-(len(out) - 4) % n))

    out += struct.pack(">iI", msg.header.stamp.sec, msg.header.stamp.nanosec)
    frame = msg.header.frame_id.encode() + b"\x00"
    out += struct.pack(">I", len(frame)) + frame
    align(4)
    out += struct.pack(">I", len(msg.humans))
    for h in msg.humans:
        align(4)
        out += struct.pack(">I", h.id)
        align(8)
        out += struct.pack(">4d", h.x, h.y, h.vx, h.vy)
    return bytes(out)


def test_a_big_endian_message_takes_the_deserialising_path_with_the_same_result(ros, tmp_path) -> None:
    msg = message(5, "map", 1000, np.random.default_rng(3))
    data = big_endian(msg)
    assert read(data)[0] == CDR_UNSUPPORTED and deserialize_message(data, TrackedHumans) == msg
    published = []
    for data_in in (data, serialize_message(msg)):  # a node each: big endian, then the usual little endian
        gp = ros.add(GpInferenceNode(parameter_overrides=[
            Parameter("model_cache_dir", value=str(tmp_path / "models")),
            Parameter("dataset_dir", value=str(tmp_path / "no_data")),
            Parameter("max_stamp_age_s", value=1e10),
        ]))
        gp.publisher.publish = lambda out: published.append(deserialize_message(serialize_message(out),
                                                                                IntentPredictionArray))
        gp.on_humans_cdr(data_in)
    assert len(published) == 2 and published[0] == published[1] and len(published[0].ids) == 5

"""IntentPredictionArray messages for tests, built from per-human arrays (the flat layout of
``nodes/flat_fields.py``): one builder instead of each test filling the flat fields by hand."""
import array

import numpy as np

from intent_perf_ros.msg import IntentPredictionArray


def predictions_message(stamp: tuple[int, int], ids, state, mean, variance, step_dt: float = 0.4,
                        **fields) -> IntentPredictionArray:
    """ids (n,), state (n, 4) = x, y, vx, vy, mean and variance (n, H, 2); ``stamp`` = (sec, nanosec);
    ``fields``: other message fields (shard_index, shard_count)."""
    mean = np.asarray(mean, dtype=np.float64)
    msg = IntentPredictionArray(step_dt=step_dt, horizon_steps=mean.shape[1], **fields)
    (msg.header.stamp.sec, msg.header.stamp.nanosec), msg.header.frame_id = stamp, "map"
    msg.ids = array.array("I", [int(i) for i in ids])
    msg.state = array.array("d", np.asarray(state, dtype=np.float64).ravel())
    msg.mean = array.array("d", mean.ravel())
    msg.variance = array.array("d", np.asarray(variance, dtype=np.float64).ravel())
    return msg


def standing_human(stamp: tuple[int, int], xy, steps: int = 12, step_dt: float = 0.4,
                   variance: float = 0.01) -> IntentPredictionArray:
    """One human (id 1) predicted to stand at ``xy`` for ``steps`` steps."""
    return predictions_message(stamp, [1], [[xy[0], xy[1], 0.0, 0.0]], np.tile(np.asarray(xy, float), (1, steps, 1)),
                               np.full((1, steps, 2), variance), step_dt)

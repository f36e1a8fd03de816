"""gp_inference_node: tracked humans in, GP trajectory predictions (mean and variance) out."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from std_msgs.msg import Header

from intent_perf_ros.core.cdr import CDR_HEADER_FIELDS, CDR_MALFORMED, CDR_UNSUPPORTED
from intent_perf_ros.core.degradation import NODE_LEVELS, DegradationLadder
from intent_perf_ros.core.gp.background import BackgroundRetune
from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor, default_predictor
from intent_perf_ros.core.gp.retune import RETUNE_EVERY, RETUNE_FIRST
from intent_perf_ros.core.gp.store import StoreError, load_place_windows, save_place_windows
from intent_perf_ros.core.shared_models import RedisModelStore, SharedModelError, load_shared_predictor, share_predictor
from intent_perf_ros.core.tracks import TrackHistory
from intent_perf_ros.core.validation import HumanSanitizer, StampCheck, read_tracked_humans
from intent_perf_ros.msg import IntentPredictionArray, TrackedHumans
from intent_perf_ros.nodes.common import DERIVED_QOS, SENSOR_QOS, NodeStatistics, run, stamp_to_ns, stamp_to_s
from intent_perf_ros.nodes.flat_fields import FieldPool, prediction_layout

HUMANS_TOPIC = "humans/tracked"
PREDICTIONS_TOPIC = "intent/predictions"
NO_ONLINE_LEARNING, CONSTANT_VELOCITY = 1, 2  # degradation levels (core.degradation.NODE_LEVELS)
UNSURE_VARIANCE = 4.0  # [m^2] per axis: a 2 m standard deviation when a prediction had to be repaired
LEARN_DELAY_S = 0.005  # after publishing: the belief and MPC callbacks of an observation take 1-4 ms


def default_cache_dir() -> Path:
    """Where trained models are stored between runs (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "intent_perf_ros" / "models"


class GpInferenceNode(Node):
    """Keeps a short history per tracked human and predicts everyone's future in one batched call."""

    def __init__(self, **node_options) -> None:
        super().__init__("gp_inference_node", **node_options)
        self.frame_id: str = self.declare_parameter("frame_id", "map").value
        self.max_humans: int = self.declare_parameter("max_humans", 64).value
        self.max_message_humans: int = self.declare_parameter("max_message_humans", 256).value
        obs_steps: int = self.declare_parameter("obs_steps", 8).value
        pred_steps: int = self.declare_parameter("pred_steps", 12).value
        self.step_dt: float = self.declare_parameter("step_dt", 0.4).value
        backend: str = self.declare_parameter("backend", "auto").value
        cache_dir: str = self.declare_parameter("model_cache_dir", "").value or str(default_cache_dir())
        dataset_dir: str = self.declare_parameter("dataset_dir", "").value
        shared_models_url: str = self.declare_parameter("shared_models_url", "").value
        track_timeout_s: float = self.declare_parameter("track_timeout_s", 2.0).value
        max_future_s: float = self.declare_parameter("max_stamp_future_s", 0.5).value
        max_age_s: float = self.declare_parameter("max_stamp_age_s", 2.0).value
        max_speed: float = self.declare_parameter("max_human_speed", 4.0).value
        self.online_learning: bool = self.declare_parameter("online_learning", True).value
        learn_period_s: float = self.declare_parameter("learn_period_s", 0.25).value
        self.learn_max_windows: int = self.declare_parameter("learn_max_windows", 4).value
        # Persisting what was learned online at a named site ("" = not persisted): a restarted node
        # starts with this place's GP instead of learning it again.
        place_site: str = self.declare_parameter("place_site", "").value
        place_save_period_s: float = self.declare_parameter("place_save_period_s", 30.0).value
        # Re-choosing the place GP's hyperparameters on this place's own windows, in a child process
        # (core.gp.background): first after place_retune_first learned windows, then every
        # place_retune_every more (0: never).
        self.place_retune_first: int = self.declare_parameter("place_retune_first", RETUNE_FIRST).value
        self.place_retune_every: int = self.declare_parameter("place_retune_every", RETUNE_EVERY).value
        stats_period_s: float = self.declare_parameter("stats_period_s", 1.0).value
        budget_ms: float = self.declare_parameter("cycle_budget_ms", 8.0).value
        # Sharding: this process predicts only the humans whose id hashes to shard_index (core.sharding).
        self.shard_index: int = self.declare_parameter("shard_index", 0).value
        self.shard_count: int = self.declare_parameter("shard_count", 1).value

        config = PredictorConfig(obs_steps=obs_steps, pred_steps=pred_steps, step_dt=self.step_dt,
                                 backend=backend, max_humans=self.max_humans)
        # Model load or fit, numba compilation and buffer allocation all happen here, not in a callback.
        self.predictor = self._load_predictor(config, cache_dir, dataset_dir or None, shared_models_url)
        self.predictor.warmup()
        self._cache_dir = cache_dir
        self._place_site = f"{place_site}/shard{self.shard_index}of{self.shard_count}" \
            if place_site and self.online_learning else ""
        self._windows_saved = 0
        # Last resort of the degradation ladder: constant velocity with the prior variance, warmed up too.
        self.cv_predictor = TrajectoryPredictor(config)
        self.cv_predictor.warmup()
        self.tracks = TrackHistory(capacity=self.max_humans, obs_steps=obs_steps, step_dt=self.step_dt,
                                   window=obs_steps + pred_steps, timeout_s=track_timeout_s, max_speed=max_speed)
        self.tracks.warmup()
        self.sanitizer = HumanSanitizer(self.max_humans, self.shard_index, self.shard_count)
        self.sanitizer.warmup()
        self.stamps = StampCheck(max_future_s, max_age_s)
        m = self.max_message_humans
        self._ids = np.zeros(m, dtype=np.int64)
        self._xy = np.zeros((m, 2))
        self._vxy = np.zeros((m, 2))
        self._history = np.zeros((self.max_humans, obs_steps, 2))
        self._mean = np.zeros((self.max_humans, pred_steps, 2))
        self._var = np.zeros((self.max_humans, pred_steps, 2))
        self._pred_steps = pred_steps
        self._cdr = np.empty(64 + 40 * m, dtype=np.uint8)  # a message's bytes (grows for longer frame ids)
        self._cdr_header = np.zeros(CDR_HEADER_FIELDS, dtype=np.int64)
        self._frame_bytes = self.frame_id.encode()
        self._header = Header(frame_id=self.frame_id)
        self._windows_learned = self._windows_skipped = 0
        self._last_stamp_s = 0.0
        self.retuner = BackgroundRetune() if self.online_learning and self.place_retune_every > 0 else None
        self._retune_failures_seen = self._retunes_run = 0
        if self._place_site:
            self._restore_place()
        self._message = IntentPredictionArray(step_dt=self.step_dt, horizon_steps=pred_steps,
                                              shard_index=self.shard_index, shard_count=self.shard_count)
        self._fields = FieldPool(prediction_layout(pred_steps), self.max_humans)

        self.stats = NodeStatistics(self, stats_period_s, self._extra_stats,
                                    DegradationLadder(NODE_LEVELS["gp_inference_node"], budget_ms))
        self.publisher = self.create_publisher(IntentPredictionArray, PREDICTIONS_TOPIC, DERIVED_QOS)
        self.create_subscription(TrackedHumans, HUMANS_TOPIC, self.stats.guarded(self.on_humans_cdr), SENSOR_QOS,
                                 raw=True)
        # Learning runs in the slack after a prediction: publishing arms a one-shot timer (at most
        # once per learn_period_s) that fires LEARN_DELAY_S later, when the belief and MPC nodes have
        # had the CPU for this observation and the next one is still far off. A free-running timer
        # could fire just before an observation and hold it back by a whole learning step.
        self._learn_period_s = learn_period_s
        self._next_learn = time.monotonic() + learn_period_s
        self._learn_timer = self.create_timer(LEARN_DELAY_S, self.stats.guarded(self.learn))
        self._learn_timer.cancel()
        if self._place_site and place_save_period_s > 0:
            self.create_timer(place_save_period_s, self.stats.guarded(self.save_place))
        self.get_logger().info(f"ready: {self.predictor.stats()}")

    def _load_predictor(self, config: PredictorConfig, cache_dir: str, dataset_dir: str | None,
                        shared_models_url: str) -> TrajectoryPredictor:
        """The fleet's shared model if Redis has one for these settings, else the local store / a fit
        (shared afterwards). Redis trouble is logged and never stops the node."""
        if not shared_models_url:
            return default_predictor(config, cache_dir, dataset_dir)
        try:
            store = RedisModelStore(shared_models_url)
            shared = load_shared_predictor(store, config)
            if shared is not None:
                self.get_logger().info(f"GP model loaded from the fleet store {shared_models_url}")
                return shared
        except SharedModelError as exc:
            self.get_logger().warning(f"fleet model store unavailable ({exc}); using the local one")
            return default_predictor(config, cache_dir, dataset_dir)
        predictor = default_predictor(config, cache_dir, dataset_dir)
        if predictor.stats()["fitted"]:
            try:
                share_predictor(predictor, store)
            except SharedModelError as exc:
                self.get_logger().warning(f"could not share the GP model: {exc}")
        return predictor

    def on_humans_cdr(self, data: bytes) -> None:
        """The subscription's callback (raw): the humans are read from the message's CDR bytes by one
        compiled call (``input_kernels.read_tracked_humans``) instead of rclpy building a Python object
        per human and a loop copying them out. Another representation than little-endian plain CDR
        is deserialised the usual way."""
        start = time.perf_counter_ns()
        size = len(data)
        if size > self._cdr.size:
            self._cdr = np.empty(2 * size, dtype=np.uint8)
        self._cdr.data[:size] = data
        status = read_tracked_humans(self._cdr[:size], self._ids, self._xy, self._vxy, self._cdr_header)
        if status == CDR_UNSUPPORTED:
            self.on_humans(deserialize_message(data, TrackedHumans))
            return
        self.stats.received(HUMANS_TOPIC)
        if status == CDR_MALFORMED:
            self.stats.dropped += 1
            self.stats.warn(f"dropping TrackedHumans: {size} serialized bytes that do not hold the message")
            return
        sec, nanosec, frame_at, frame_len, count = self._cdr_header.tolist()
        header = self._header
        if data[frame_at : frame_at + frame_len] != self._frame_bytes:
            header = Header(frame_id=data[frame_at : frame_at + frame_len].decode(errors="replace"))
        header.stamp.sec, header.stamp.nanosec = sec, nanosec
        self._predict_and_publish(header, count, start)

    def on_humans(self, msg: TrackedHumans) -> None:
        """The same from a deserialised message."""
        start = time.perf_counter_ns()
        self.stats.received(HUMANS_TOPIC)
        humans = msg.humans
        for i in range(min(len(humans), self.max_message_humans)):
            h = humans[i]
            self._ids[i] = h.id
            self._xy[i, 0], self._xy[i, 1], self._vxy[i, 0], self._vxy[i, 1] = h.x, h.y, h.vx, h.vy
        self._predict_and_publish(msg.header, len(humans), start)

    def _predict_and_publish(self, header: Header, count: int, start: int) -> None:
        """Check, predict and publish the first ``count`` (at most max_message_humans) humans, already
        copied into the input buffers."""
        if header.frame_id != self.frame_id:
            self.stats.dropped += 1
            self.stats.warn(f"dropping TrackedHumans in frame '{header.frame_id}': expected '{self.frame_id}'")
            return
        verdict, stamp_s = self.stamps.check(stamp_to_s(header.stamp), self.get_clock().now().nanoseconds * 1e-9)
        if verdict == StampCheck.REPAIRED:
            self.stats.repaired += 1
            header.stamp.sec, header.stamp.nanosec = divmod(int(stamp_s * 1e9), 1_000_000_000)
        elif verdict != StampCheck.OK:
            self.stats.dropped += 1
            self.stats.warn(f"dropping TrackedHumans: {StampCheck.REASONS[verdict]}")
            return
        n = min(count, self.max_message_humans)
        n, dropped, repaired = self.sanitizer.apply(self._ids, self._xy, self._vxy, n)
        dropped += count - min(count, self.max_message_humans)
        if dropped or repaired:
            self.stats.dropped += dropped
            self.stats.repaired += repaired
            self.stats.warn(
                f"bad humans in input: {dropped} dropped, {repaired} repaired (non-finite values, duplicate ids "
                f"or more than {self.max_humans})")
        self._last_stamp_s = stamp_s
        if n:
            self.tracks.observe(stamp_s, self._ids, self._xy, n)
            self.tracks.history(self._vxy, n, self._history)
            predictor = self.cv_predictor if self.stats.ladder.level >= CONSTANT_VELOCITY else self.predictor
            predictor.predict(self._history[:n], self._mean[:n], self._var[:n])
            if not (np.isfinite(self._mean[:n]).all() and np.isfinite(self._var[:n]).all()):
                self._repair_predictions(n)
        self.publisher.publish(self._to_message(header, n))
        self.stats.sent(PREDICTIONS_TOPIC, stamp_to_ns(header.stamp))
        self.stats.callback_done(start)
        if self.online_learning and time.monotonic() >= self._next_learn:
            self._next_learn = time.monotonic() + self._learn_period_s
            self._learn_timer.reset()

    def _repair_predictions(self, n: int) -> None:
        """Never publish NaN: a human whose prediction is not finite is predicted to stand still with a
        wide spread (what the MPC avoids most conservatively); counted as an error."""
        bad = ~(np.isfinite(self._mean[:n]).all(axis=(1, 2)) & np.isfinite(self._var[:n]).all(axis=(1, 2)))
        self._mean[:n][bad] = self._xy[:n][bad][:, None, :]
        self._var[:n][bad] = UNSURE_VARIANCE
        self.stats.errors += 1
        self.stats.warn(f"non-finite GP prediction for {int(bad.sum())} humans replaced by a standing prediction")

    def _to_message(self, header, n: int) -> IntentPredictionArray:
        """Fill the preallocated message from the first ``n`` rows of the prediction buffers."""
        _, views = self._fields.buffers(n)
        views["ids"][:] = self._ids[:n]
        views["state"][:, :2] = self._xy[:n]
        views["state"][:, 2:] = self._vxy[:n]
        views["mean"][:] = self._mean[:n]
        views["variance"][:] = self._var[:n]
        out = self._message
        out.header = header
        self._fields.assign(out, n)
        return out

    def learn(self) -> None:
        """Online learning from windows completed since the last call, at most ``learn_max_windows``.

        The timer shares the executor with ``on_humans``, so an observation that arrives meanwhile
        waits for it: each window costs an O(N^2) update of the place GP (17-29 ms per 50 windows at
        its 1000-window capacity, measured), and 100 humans complete 500 windows in 2 s. Small bounded
        chunks keep that wait to a couple of ms; consecutive windows of a human overlap in 19 of 20
        steps, so an evenly spaced subset loses little.
        """
        self._learn_timer.cancel()  # one-shot: armed again by a later prediction
        windows = self.tracks.take_windows()
        if not len(windows) or self.stats.ladder.level >= NO_ONLINE_LEARNING:
            self._windows_skipped += len(windows)
            return
        if len(windows) > self.learn_max_windows:
            keep = np.linspace(0, len(windows) - 1, self.learn_max_windows).round().astype(np.intp)
            self._windows_skipped += len(windows) - len(keep)
            windows = windows[keep]
        # they completed since the last tick (learn_period_s, under one step): stamped with the latest observation
        self.predictor.add_windows(windows, self._last_stamp_s / self.step_dt)
        self._windows_learned += len(windows)
        if self.retuner is not None:
            self._retune()

    def _retune(self) -> None:
        """Adopt a finished re-tuning, or start one when due (the work runs in a child process)."""
        result = self.retuner.poll()
        if result is not None:
            self._retunes_run += 1
            # catching up costs like learning: at most one tick's share of the windows learned meanwhile
            if self.predictor.adopt_place_retune(result, max_catch_up=self.learn_max_windows):
                self.get_logger().info(f"place GP re-tuned on {result.tested} windows of this place: "
                                       f"candidate {result.choice}")
        elif self.retuner.failures > self._retune_failures_seen:
            self._retune_failures_seen = self.retuner.failures
            self.stats.errors += 1
            self.stats.warn(f"place GP re-tuning failed, keeping its settings: {self.retuner.last_error}")
        if not self.retuner.busy and self.predictor.place_retune_due(self.place_retune_first, self.place_retune_every):
            self.retuner.start(self.predictor.place_snapshot())

    def _restore_place(self) -> None:
        """Learn the windows stored for this site again; a missing, corrupt or stale entry starts cold."""
        try:
            windows = load_place_windows(self._cache_dir, self.predictor.config, self._place_site)
        except KeyError:
            self.get_logger().info(f"no learned windows stored for site '{self._place_site}': learning it anew")
            return
        except (StoreError, OSError) as exc:
            self.get_logger().warning(f"ignoring the stored windows of site '{self._place_site}': {exc}")
            return
        self.predictor.add_windows(windows)
        self._windows_learned = self._windows_saved = len(windows)
        self.get_logger().info(f"site '{self._place_site}': place GP rebuilt from {len(windows)} stored windows")

    def save_place(self) -> None:
        """Store the learned windows when new ones were learned since the last save (timer and shutdown)."""
        if not self._place_site or self._windows_learned == self._windows_saved:
            return
        try:
            save_place_windows(self._cache_dir, self.predictor.config, self._place_site,
                               self.predictor.learned_windows())
            self._windows_saved = self._windows_learned
        except OSError as exc:
            self.get_logger().warning(f"could not store the learned windows of site '{self._place_site}': {exc}")

    def destroy_node(self) -> None:
        if self.retuner is not None:
            self.retuner.close()
        self.save_place()
        super().destroy_node()

    def _extra_stats(self) -> dict[str, str]:
        extra = {f"gp.{k}": str(v) for k, v in self.predictor.stats().items()}
        extra.update({"tracks_active": str(len(self.tracks)), "tracks_evicted": str(self.tracks.evictions),
                      "tracks_out_of_order": str(self.tracks.out_of_order),
                      "tracks_id_jumps": str(self.tracks.jumps),
                      "windows_learned": str(self._windows_learned),
                      "windows_skipped": str(self._windows_skipped),
                      "place_retunes_run": str(self._retunes_run),
                      "place_retune_failures": str(self.retuner.failures if self.retuner is not None else 0)})
        return extra


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run(GpInferenceNode, args))


if __name__ == "__main__":
    main()

"""Optional fleet-wide sharing of fitted models through Redis (off unless a node is given a URL).

Why: robots in one building fit the same models on the same data; the first one to fit shares the
result and the others start warm. Values come from other machines, so they are treated as untrusted:
stored as numpy ``.npz`` bytes and read with ``allow_pickle=False`` (never unpickled), with the total
uncompressed size checked before anything is inflated. Keys are content-derived (the predictor's
``settings_key``: format version, every setting and the training-data digest) under the versioned
prefix ``intent_perf:v1:``. Every failure (Redis unreachable, a corrupt, oversized or stale value)
raises ``SharedModelError``, which a node catches to fall back on its local store or a fit.
A checksum only detects corruption: anyone who can write to the Redis server can replace a model
(with wrong predictions, never with code), so protect it with ACLs/TLS like any fleet service.
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile

import diskcache
import numpy as np

from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor
from intent_perf_ros.core.gp.store import StoreError, load_predictor, pack_arrays, save_predictor, settings_key

KEY_PREFIX = "intent_perf:v1:"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


class SharedModelError(RuntimeError):
    """The shared store is unreachable or holds an unusable value; fall back on the local model."""


class RedisModelStore:
    """Dictionaries of numpy arrays in Redis under ``intent_perf:v1:<key>``, as ``.npz`` bytes."""

    def __init__(self, url: str, timeout_s: float = 2.0, max_value_bytes: int = 256 << 20) -> None:
        """``url`` like ``redis://host:6379/0``; ``timeout_s`` bounds connect and each command so a
        dead server delays start-up by seconds, not forever; larger values are refused."""
        try:
            import redis  # only fleets that configure a URL pay for the client

            self._redis_error = redis.RedisError
            self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        except ValueError as exc:
            raise SharedModelError(f"bad Redis URL {url!r} ({exc}); use redis://host:port/db") from exc
        self.max_value_bytes = int(max_value_bytes)

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store ``arrays`` under ``key`` (replacing any previous value)."""
        converted = {name: np.asarray(value) for name, value in arrays.items()}
        for name, value in converted.items():
            if value.dtype.hasobject:
                raise TypeError(f"array {name!r} holds Python objects, which only pickle can store; "
                                "convert it to a numeric or string array")
        blob = pack_arrays(converted)
        if len(blob) > self.max_value_bytes:
            raise SharedModelError(f"value of {len(blob)} bytes exceeds max_value_bytes={self.max_value_bytes}")
        try:
            self._client.set(self._name(key), blob)
        except self._redis_error as exc:
            raise SharedModelError(f"cannot write {key} to Redis ({exc}); is the server up?") from exc

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key``, or None if there is none."""
        try:
            blob = self._client.get(self._name(key))
        except self._redis_error as exc:
            raise SharedModelError(f"cannot read {key} from Redis ({exc}); is the server up?") from exc
        if blob is None:
            return None
        return self._unpack(key, blob)

    def _unpack(self, key: str, blob: bytes) -> dict[str, np.ndarray]:
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                inflated = sum(info.file_size for info in archive.infolist())
            if inflated > self.max_value_bytes:
                raise SharedModelError(
                    f"shared value {key} inflates to {inflated} bytes, over max_value_bytes={self.max_value_bytes}"
                )
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except SharedModelError:
            raise
        except Exception as exc:  # not an npz, truncated, or pickled content (refused by allow_pickle=False)
            raise SharedModelError(f"shared value {key} is not a valid numpy archive ({exc}); overwrite it") from exc

    @staticmethod
    def _name(key: str) -> str:
        if not _KEY.fullmatch(key):
            raise ValueError(f"bad key {key!r}: use a content-derived key of letters, digits, '_', '.', ':' or '-'")
        return KEY_PREFIX + key


# Adapter: store.py packs a predictor only into a diskcache entry ({"meta": str, "arrays": npz bytes,
# "digest": str}). Going through a private temporary diskcache reuses its format, checksum and
# stale-settings checks unchanged; the entry crosses the network as three numpy arrays.


def share_predictor(pred: TrajectoryPredictor, store: RedisModelStore, digest: str = "") -> str:
    """Publish a fitted predictor for every robot with the same settings and data; returns its key."""
    with tempfile.TemporaryDirectory(prefix="intent_perf_share_") as tmp:
        key = save_predictor(pred, tmp, digest)
        with diskcache.Cache(tmp) as cache:
            entry = cache[key]
    store.put(
        key,
        {
            "meta": np.array(entry["meta"]),
            "arrays": np.frombuffer(entry["arrays"], dtype=np.uint8),
            "digest": np.array(entry["digest"]),
        },
    )
    return key


def load_shared_predictor(
    store: RedisModelStore, config: PredictorConfig, digest: str = ""
) -> TrajectoryPredictor | None:
    """The predictor another robot shared for ``config`` and this data, or None if none was shared.

    Call ``warmup()`` on it before predicting, as for any predictor.
    """
    key = settings_key(config, digest)
    arrays = store.get(key)
    if arrays is None:
        return None
    try:
        meta, blob, check = arrays["meta"], arrays["arrays"], arrays["digest"]
        if meta.shape or check.shape or meta.dtype.kind != "U" or check.dtype.kind != "U" or blob.dtype != np.uint8:
            raise TypeError(f"unexpected arrays {meta.dtype}{meta.shape}, {blob.dtype}, {check.dtype}{check.shape}")
        entry = {"meta": str(meta[()]), "arrays": blob.tobytes(), "digest": str(check[()])}
    except (KeyError, TypeError, IndexError) as exc:
        raise SharedModelError(f"shared value {key} is not a packed predictor ({exc}); overwrite it") from exc
    with tempfile.TemporaryDirectory(prefix="intent_perf_share_") as tmp:
        with diskcache.Cache(tmp) as cache:
            cache[key] = entry
        try:
            return load_predictor(tmp, config, digest)
        except StoreError as exc:
            raise SharedModelError(f"shared value {key}: {exc}") from exc
        except Exception as exc:  # checksummed but malformed (a foreign writer): unusable all the same
            raise SharedModelError(f"shared value {key} cannot be rebuilt ({exc!r}); overwrite it") from exc

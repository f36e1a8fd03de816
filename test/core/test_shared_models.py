"""Fleet sharing through a real redis-server on loopback: a second process starts warm from the first's model."""

from __future__ import annotations

import io
import json
import os
import pickle
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from gp_windows import predict_all, random_windows

from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor
from intent_perf_ros.core.gp.store import settings_key
from intent_perf_ros.core.shared_models import (
    KEY_PREFIX,
    RedisModelStore,
    SharedModelError,
    load_shared_predictor,
    share_predictor,
)

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not on PATH; install the Debian package: apt-get install -y redis-server",
)

SMALL = dict(max_train=200, hyperopt_points=100, hyperopt_restarts=0, calibration_points=100, max_humans=8)
DIGEST = "ab" * 32  # stands for the training-data digest (store.data_digest)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(directory: Path, deadline_s: float = 20.0) -> tuple[subprocess.Popen, str]:
    """Start redis-server; ready when it logs so (read without sleeping) and answers PING."""
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    end = time.monotonic() + deadline_s
    log = b""
    while b"Ready to accept connections" not in log:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:  # timed out or the server exited (e.g. the port was taken meanwhile)
            proc.kill()
            proc.wait()
            raise RuntimeError("redis-server did not start:\n" + log.decode(errors="replace"))
        log += chunk
    url = f"redis://127.0.0.1:{port}/0"
    assert redis.Redis.from_url(url).ping()
    return proc, url


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    proc, url = _start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def store(redis_url: str) -> RedisModelStore:
    redis.Redis.from_url(redis_url).flushdb()
    return RedisModelStore(redis_url)


SECOND_PROCESS = """
import json, sys
import numpy as np
from intent_perf_ros.core.gp.predictor import PredictorConfig
from intent_perf_ros.core.shared_models import RedisModelStore, load_shared_predictor
url, digest, path, small = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
pred = load_shared_predictor(RedisModelStore(url), PredictorConfig(**small), digest)
pred.warmup()
hist = np.load(path)["hist"]
mean, var = np.empty((len(hist), 12, 2)), np.empty((len(hist), 12, 2))
pred.predict(hist, mean, var)
np.savez(path, hist=hist, mean=mean, var=var)
print(json.dumps({"refits": pred.refits_, **pred.stats()}))
"""


def test_second_process_starts_warm_from_the_shared_model(store, redis_url, tmp_path) -> None:
    cfg = PredictorConfig(**SMALL)
    pred = TrajectoryPredictor(cfg).fit(random_windows(300, 0))
    pred.warmup()
    key = share_predictor(pred, store, DIGEST)
    assert key == settings_key(cfg, DIGEST)
    raw = redis.Redis.from_url(redis_url).get(KEY_PREFIX + key)
    assert raw[:2] == b"PK"  # a numpy .npz archive, not a pickle
    hist = random_windows(5, 1)[:, :8].copy()
    path = tmp_path / "io.npz"
    np.savez(path, hist=hist)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, redis_url, DIGEST, str(path), json.dumps(SMALL)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["fitted"] and info["refits"] == 0 and info["n_windows_fitted"] == 300  # loaded, not refitted
    got = np.load(path)
    mean, var = predict_all(pred, hist)
    np.testing.assert_array_equal(got["mean"], mean)
    np.testing.assert_array_equal(got["var"], var)


def test_missing_model_is_none_and_other_settings_miss(store) -> None:
    assert load_shared_predictor(store, PredictorConfig(**SMALL), DIGEST) is None
    pred = TrajectoryPredictor(PredictorConfig(**SMALL)).fit(random_windows(100, 0))
    share_predictor(pred, store, DIGEST)
    assert load_shared_predictor(store, PredictorConfig(**SMALL), "cd" * 32) is None  # other training data
    assert load_shared_predictor(store, PredictorConfig(**{**SMALL, "max_train": 199}), DIGEST) is None


def test_arrays_round_trip_and_objects_are_refused(store) -> None:
    arrays = {"a": np.arange(5.0), "s": np.array("text"), "m": np.eye(3, dtype=np.float32)}
    store.put("k1", arrays)
    got = store.get("k1")
    assert got.keys() == arrays.keys()
    for name, value in arrays.items():
        np.testing.assert_array_equal(got[name], value)
        assert got[name].dtype == value.dtype
    with pytest.raises(TypeError, match="pickle"):
        store.put("k2", {"o": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="bad key"):
        store.put("../k", arrays)


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["PLANT_MARK"]),))


def test_pickled_corrupt_and_oversized_values_raise(store, redis_url, tmp_path, monkeypatch) -> None:
    client = redis.Redis.from_url(redis_url)
    mark = tmp_path / "executed"
    monkeypatch.setenv("PLANT_MARK", str(mark))
    buf = io.BytesIO()
    np.save(buf, np.array([_Planted()], dtype=object), allow_pickle=True)  # an .npy carrying a pickle
    for name, blob in (("pickle", pickle.dumps(_Planted())), ("npy", buf.getvalue()), ("junk", b"PK\x03\x04xx")):
        client.set(KEY_PREFIX + name, blob)
        with pytest.raises(SharedModelError, match="not a valid numpy archive"):
            store.get(name)
    zipped = io.BytesIO()
    np.savez(zipped, o=np.array([_Planted()], dtype=object))  # an .npz whose member is a pickle
    client.set(KEY_PREFIX + "npz", zipped.getvalue())
    with pytest.raises(SharedModelError, match="not a valid numpy archive"):
        store.get("npz")
    assert not mark.exists()  # nothing was unpickled
    bomb = io.BytesIO()
    np.savez_compressed(bomb, z=np.zeros(4 << 20, dtype=np.uint8))  # 4 MiB inflating from a few kB
    client.set(KEY_PREFIX + "bomb", bomb.getvalue())
    with pytest.raises(SharedModelError, match="inflates"):
        RedisModelStore(redis_url, max_value_bytes=1 << 20).get("bomb")


def test_tampered_or_stale_predictor_raises(store, redis_url) -> None:
    cfg = PredictorConfig(**SMALL)
    key = share_predictor(TrajectoryPredictor(cfg).fit(random_windows(100, 0)), store, DIGEST)
    entry = store.get(key)
    flipped = entry["arrays"].copy()
    flipped[len(flipped) // 2] ^= 0xFF
    store.put(key, {**entry, "arrays": flipped})
    with pytest.raises(SharedModelError, match="corrupt"):
        load_shared_predictor(store, cfg, DIGEST)
    other = share_predictor(TrajectoryPredictor(PredictorConfig(**{**SMALL, "seed": 1})).fit(random_windows(100, 0)),
                            store, DIGEST)
    store.put(key, store.get(other))  # a valid model for other settings planted under this key
    with pytest.raises(SharedModelError, match="stale"):
        load_shared_predictor(store, cfg, DIGEST)
    store.put(key, {"meta": entry["meta"]})
    with pytest.raises(SharedModelError, match="not a packed predictor"):
        load_shared_predictor(store, cfg, DIGEST)


def test_unreachable_server_raises_shared_model_error() -> None:
    down = RedisModelStore(f"redis://127.0.0.1:{_free_port()}/0", timeout_s=1.0)
    with pytest.raises(SharedModelError, match="is the server up"):
        down.get("k")
    with pytest.raises(SharedModelError, match="is the server up"):
        down.put("k", {"a": np.zeros(1)})
    with pytest.raises(SharedModelError, match="bad Redis URL"):
        RedisModelStore("http://nowhere")

"""diskcache store: round trip, content-derived keys, corrupt and stale entries, default_predictor."""

from __future__ import annotations

import logging
from pathlib import Path

import diskcache
import numpy as np
import pytest
from gp_windows import predict_all, random_windows

from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor, default_predictor
from intent_perf_ros.core.gp.store import StoreError, load_place_windows, save_place_windows, settings_key
from intent_perf_ros.datasets import eth_ucy

SMALL = dict(
    max_train=200,
    hyperopt_points=100,
    hyperopt_restarts=0,
    calibration_points=100,
    max_humans=8,
    online_capacity=100,
)


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = PredictorConfig(**SMALL)
    pred = TrajectoryPredictor(cfg).fit(random_windows(300, 0))
    pred.warmup()
    key = pred.save(str(tmp_path))
    assert key == settings_key(cfg) and key == settings_key(PredictorConfig(**SMALL))  # stable, not hash()
    loaded = TrajectoryPredictor.load(str(tmp_path), PredictorConfig(**SMALL))
    loaded.warmup()
    hist = random_windows(5, 1)[:, :8].copy()
    for a, b in zip(predict_all(pred, hist), predict_all(loaded, hist), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(KeyError):
        TrajectoryPredictor.load(str(tmp_path), PredictorConfig(**{**SMALL, "max_train": 201}))


def test_corrupt_entry_is_detected(tmp_path: Path) -> None:
    cfg = PredictorConfig(**SMALL)
    key = TrajectoryPredictor(cfg).fit(random_windows(200, 0)).save(str(tmp_path))
    _flip_a_byte(tmp_path, key)
    with pytest.raises(StoreError, match="corrupt"):
        TrajectoryPredictor.load(str(tmp_path), cfg)


def _flip_a_byte(directory: Path, key: str) -> None:
    """Corrupt the arrays of a stored entry, as a bad disk block would."""
    with diskcache.Cache(str(directory)) as cache:
        entry = cache[key]
        blob = bytearray(entry["arrays"])
        blob[len(blob) // 2] ^= 0xFF
        cache[key] = {**entry, "arrays": bytes(blob)}


def _fake_eth_ucy(directory: Path) -> None:
    """Tiny files in the ETH/UCY format (frame, id, x, y; frames 10 apart) under the real names."""
    rng = np.random.default_rng(0)
    names = [n for files in eth_ucy.SCENE_FILES.values() for n in files] + list(eth_ucy.EXTRA_TRAIN_FILES)
    for name in names:
        rows = []
        for pid in range(6):
            pos, vel = rng.uniform(-5, 5, size=2), rng.normal(0, 0.4, size=2)
            for k in range(30):
                rows.append((10 * (k + pid), pid, *pos))
                vel = vel + rng.normal(0, 0.03, size=2)
                pos = pos + vel
        np.savetxt(directory / name, np.array(rows), delimiter="\t", fmt=["%d", "%d", "%.4f", "%.4f"])


def test_default_predictor_builds_stores_loads_and_rebuilds_corrupt(tmp_path: Path, caplog) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _fake_eth_ucy(data)
    cache = str(tmp_path / "cache")
    cfg = PredictorConfig(**SMALL)
    built = default_predictor(cfg, cache, data)
    assert built.stats()["fitted"]
    with diskcache.Cache(cache) as store:
        assert len(store) == 1
        key = next(iter(store))
        store[key] = {**store[key], "digest": "0" * 64}
    with caplog.at_level(logging.WARNING):
        rebuilt = default_predictor(cfg, cache, data)
    assert "corrupt" in caplog.text
    loaded = default_predictor(cfg, cache, data)  # the rebuilt entry is valid again
    for model in (built, rebuilt, loaded):
        model.warmup()
    hist = random_windows(3, 2)[:, :8].copy()
    for a, b in zip(predict_all(built, hist), predict_all(loaded, hist), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_default_predictor_without_data_is_constant_velocity(tmp_path: Path) -> None:
    pred = default_predictor(PredictorConfig(**SMALL), str(tmp_path / "cache"), tmp_path / "missing")
    assert not pred.stats()["fitted"]


def test_store_refuses_a_directory_other_users_can_write(tmp_path):
    """diskcache unpickles entries, so models are only loaded from owner-only directories."""
    from intent_perf_ros.core.gp.predictor import PredictorConfig
    from intent_perf_ros.core.gp.store import load_predictor

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="chmod 700"):
        load_predictor(str(shared), PredictorConfig())
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyError):
        load_predictor(str(fresh), PredictorConfig())
    assert fresh.stat().st_mode & 0o777 == 0o700  # created owner-only


def test_round_trip_keeps_the_variance_model(tmp_path: Path) -> None:
    """The heteroscedastic gains, the choice of the constant variance and the place stride survive save/load."""
    cfg = PredictorConfig(**SMALL)
    pred = TrajectoryPredictor(cfg).fit(random_windows(300, 0))
    pred.use_motion_variance_, pred.speed_gain_, pred.unsteady_gain_, pred.place_stride_ = False, 0.5, 3.0, 4
    pred.warmup()
    pred.save(str(tmp_path))
    loaded = TrajectoryPredictor.load(str(tmp_path), cfg)
    loaded.warmup()
    assert not loaded.use_motion_variance_ and loaded.unsteady_gain_ == 3.0 and loaded.place_stride_ == 4
    hist = random_windows(5, 1)[:, :8].copy()
    for a, b in zip(predict_all(pred, hist), predict_all(loaded, hist), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_learned_windows_rebuild_the_place_model_and_survive_the_store(tmp_path: Path) -> None:
    # without the corrector: it learned all 70 windows the first time and only the stored 40 again
    cfg = PredictorConfig(**{**SMALL, "online_capacity": 40, "corrector_lags": ()})
    offline = random_windows(300, 0)
    pred = TrajectoryPredictor(cfg).fit(offline)
    pred.warmup()
    place = random_windows(70, 3)
    for chunk in np.array_split(place, 9):  # more than the capacity, in uneven chunks
        pred.add_windows(chunk)
    np.testing.assert_array_equal(pred.learned_windows(), place[-40:])  # the newest, oldest first
    save_place_windows(str(tmp_path), cfg, "lab", pred.learned_windows())
    stored = load_place_windows(str(tmp_path), cfg, "lab")
    np.testing.assert_array_equal(stored, place[-40:])

    again = TrajectoryPredictor(cfg).fit(offline)
    again.warmup()
    again.add_windows(stored)
    hist = random_windows(5, 4)[:, :8].copy()
    mean_a, mean_b = predict_all(pred, hist)[0], predict_all(again, hist)[0]
    np.testing.assert_allclose(mean_b, mean_a, rtol=0, atol=1e-8)  # the same place GP, fitted at once
    with pytest.raises(KeyError):
        load_place_windows(str(tmp_path), cfg, "warehouse")
    with pytest.raises(KeyError):  # other settings, other features: not this entry
        load_place_windows(str(tmp_path), PredictorConfig(**{**SMALL, "online_capacity": 41}), "lab")


def test_corrupt_or_malformed_learned_windows_are_refused(tmp_path: Path) -> None:
    cfg = PredictorConfig(**SMALL)
    _flip_a_byte(tmp_path, save_place_windows(str(tmp_path), cfg, "lab", random_windows(5, 0)))
    with pytest.raises(StoreError, match="corrupt"):
        load_place_windows(str(tmp_path), cfg, "lab")
    save_place_windows(str(tmp_path), cfg, "lab", random_windows(5, 0)[:, :10])  # 10 steps, not 20
    with pytest.raises(StoreError, match="shape"):
        load_place_windows(str(tmp_path), cfg, "lab")

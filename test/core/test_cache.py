"""Byte-bounded LRU, content keys stable across processes, the QP-structure and hyperparameter caches."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import intent_perf_ros.core.mpc.controller as controller_module
from intent_perf_ros.core.cache import (
    _QP_SHARED,
    ByteLRU,
    cached_hyperparameters,
    cached_problem,
    content_key,
    nbytes_of,
)
from intent_perf_ros.core.gp.hyperopt import fit_hyperparameters
from intent_perf_ros.core.mpc.controller import MPCConfig, MPCController
from intent_perf_ros.core.mpc.qp import MPCProblem


def test_byte_bound_holds_with_mixed_sizes() -> None:
    rng = np.random.default_rng(0)
    cache = ByteLRU(10_000)
    live: dict[str, int] = {}
    for i in range(300):
        size = int(rng.choice([1, 17, 400, 2_500, 9_999]))
        value = np.zeros(size, dtype=np.uint8) if i % 2 else bytes(size)
        assert cache.put(f"k{i}", value)
        live[f"k{i}"] = size
        stats = cache.stats()
        assert stats["bytes"] <= 10_000
        kept = [k for k in live if cache._items.get(k) is not None]
        assert stats["bytes"] == sum(live[k] for k in kept) and stats["entries"] == len(kept)
    assert cache.stats()["evictions"] == 300 - len(cache)


def test_lru_order_and_replacement() -> None:
    cache = ByteLRU(300)
    for key in "abc":
        cache.put(key, bytes(100))
    assert cache.get("a") is not None  # a is now the most recent: b goes first
    cache.put("d", bytes(100))
    assert cache.get("b") is None and cache.get("a") is not None
    cache.put("a", bytes(250))  # replacing a key re-sizes it and evicts what no longer fits
    assert cache.stats()["bytes"] == 250 and cache.get("a") is not None and len(cache) == 1


def test_oversized_value_is_refused_not_flushing_the_rest() -> None:
    cache = ByteLRU(100)
    cache.put("small", bytes(60))
    assert not cache.put("huge", np.zeros(101, dtype=np.uint8))
    assert cache.get("small") is not None and cache.get("huge") is None
    assert cache.stats()["oversized"] == 1 and cache.stats()["evictions"] == 0


def test_stats_count_hits_and_misses() -> None:
    cache = ByteLRU(1_000)
    assert cache.stats()["hit_rate"] == 0.0
    cache.put("x", b"abc")
    for key in ("x", "x", "x", "y"):
        cache.get(key)
    s = cache.stats()
    assert (s["hits"], s["misses"], s["hit_rate"], s["bytes"], s["entries"]) == (3, 1, 0.75, 3, 1)


def test_sizes_come_from_arrays_bytes_sizer_or_nbytes() -> None:
    assert nbytes_of((np.zeros(10), b"12345", {"a": np.zeros(2, dtype=np.float32)})) == 80 + 5 + 1 + 8
    shared = np.zeros(100)
    assert nbytes_of([shared, shared]) == 800  # the same array referenced twice counts once
    with pytest.raises(TypeError, match="nbytes="):
        ByteLRU(100).put("k", object.__new__(type("Opaque", (), {"__slots__": ()})))
    by_len = ByteLRU(10, sizer=len)
    assert by_len.put("k", "x" * 10) and not by_len.put("k2", "x" * 11)
    explicit = ByteLRU(10)
    explicit.put("k", np.zeros(1000), nbytes=4)
    assert explicit.stats()["bytes"] == 4
    with pytest.raises(ValueError, match="None"):
        explicit.put("k", None)


def test_content_key_depends_on_content_only() -> None:
    a = np.arange(6, dtype=np.float64)
    key = content_key(a, b"raw", settings={"x": 1, "y": [1.5, 2]}, version="t1")
    assert key == content_key(a.copy(), b"raw", settings={"y": (1.5, 2), "x": np.int64(1)}, version="t1")
    others = [
        content_key(a.reshape(2, 3), b"raw", settings={"x": 1, "y": [1.5, 2]}, version="t1"),
        content_key(a.astype(np.float32), b"raw", settings={"x": 1, "y": [1.5, 2]}, version="t1"),
        content_key(a, b"raw", settings={"x": 2, "y": [1.5, 2]}, version="t1"),
        content_key(a, b"raw", settings={"x": 1, "y": [1.5, 2]}, version="t2"),
        content_key(a, b"ra", b"w", settings={"x": 1, "y": [1.5, 2]}, version="t1"),
    ]
    assert len({key, *others}) == 6
    with pytest.raises(TypeError, match="canonical JSON"):
        content_key(settings={"f": object()}, version="t1")


KEY_SCRIPT = (
    "import numpy as np; from intent_perf_ros.core.cache import content_key; "
    "print(content_key(np.arange(6.0).reshape(2, 3), b'raw', settings={'name': 'x', 'n': 3}, version='t1'))"
)


def test_content_key_is_the_same_in_another_process() -> None:
    here = content_key(np.arange(6.0).reshape(2, 3), b"raw", settings={"name": "x", "n": 3}, version="t1")
    keys = set()
    for seed in ("1", "987"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", KEY_SCRIPT], env=env, capture_output=True, text=True,
                             check=True, timeout=60)
        keys.add(out.stdout.strip())
    assert keys == {here}


def test_cached_problem_equals_a_fresh_problem_and_shares_only_structure() -> None:
    cache = ByteLRU(1 << 20)
    first = cached_problem(6, 0.1, 3, {"verbose": False}, cache)
    second = cached_problem(6, 0.1, 3, {"verbose": True}, cache)
    fresh = MPCProblem(6, 0.1, 3, {"verbose": True})
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1
    assert vars(second).keys() == vars(fresh).keys()  # a new MPCProblem attribute must be handled in cache.py
    for name, value in vars(fresh).items():
        got = getattr(second, name)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
            assert np.shares_memory(got, getattr(first, name)) == (name in _QP_SHARED), name
        elif name == "a_matrix":
            assert (got != value).nnz == 0 and got is first.a_matrix
        else:
            assert got == value, name
    second.ax_hum[2, 1, 0] = 7.0  # views still point into the clone's own ax
    assert second.ax[4 * 6 + 2 * 3 * 2 + 2] == 7.0 and first.ax.max() == 0.0
    assert cached_problem(6, 0.2, 3, {}, cache).dt == 0.2 and cache.stats()["misses"] == 2


def _drive(ctrl: MPCController, steps: int) -> list[tuple[float, float]]:
    state, goal = np.zeros(5), np.array([4.0, 0.5])
    mean = np.zeros((1, ctrl.config.horizon, 2))
    mean[0, :, 0], mean[0, :, 1] = 2.0, 0.3
    var = np.full_like(mean, 0.01)
    out = []
    for _ in range(steps):
        res = ctrl.step(state, goal, mean, var, ctrl.config.dt)
        state[0] += ctrl.config.dt * res.v
        state[3], state[4] = res.v, res.omega
        out.append((res.v, res.omega))
    return out


def test_controllers_built_on_cached_structure_command_the_same(monkeypatch) -> None:
    cfg = MPCConfig(horizon=10, time_limit_s=0.0)  # no time limit: a loaded machine must not change the plans
    monkeypatch.setattr(controller_module, "cached_problem", lambda *args: MPCProblem(*args))  # uncached build
    expected = _drive(MPCController(cfg), 15)
    cache = ByteLRU(1 << 20)
    monkeypatch.setattr(controller_module, "cached_problem", lambda *args: cached_problem(*args, cache=cache))
    first, second = MPCController(cfg), MPCController(cfg)
    template_before = {n: np.array(getattr(first.qp, n), copy=True) for n in ("ax_idx", "x_shift", "y_shift")}
    assert _drive(first, 15) == expected
    assert _drive(second, 15) == expected
    assert cache.stats()["hits"] == 1
    for name, before in template_before.items():  # shared arrays are never written by the controller
        np.testing.assert_array_equal(getattr(second.qp, name), before)


def test_hyperparameters_fitted_once_per_data_set() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = np.sin(x[:, :1]) + 0.1 * rng.normal(size=(40, 1))
    calls = []

    def fit(groups, **kw):
        calls.append(kw)
        return fit_hyperparameters(groups, **kw)

    cache = ByteLRU(1 << 16)
    settings = {"n_restarts": 0, "seed": 0}
    params, lml = cached_hyperparameters([(x, y)], settings, fit, cache)
    params.lengthscales[:] = -1.0  # the caller owns its copy: the cached fit is unaffected
    again, lml_again = cached_hyperparameters([(x.copy(), y.copy())], settings, fit, cache)
    assert len(calls) == 1 and lml_again == lml and np.all(again.lengthscales > 0)
    cached_hyperparameters([(x, y + 1.0)], settings, fit, cache)
    cached_hyperparameters([(x, y)], {**settings, "seed": 1}, fit, cache)
    assert len(calls) == 3
    assert cache.stats()["hits"] == 1 and cache.stats()["entries"] == 3 and cache.stats()["bytes"] < 1_000

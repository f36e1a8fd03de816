"""Incremental (append / drop) factor updates give the same model as a refit."""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core.gp.exact import ExactGP
from intent_perf_ros.core.gp.kernels import RBFParams
from intent_perf_ros.core.gp.online import OnlineGP

PARAMS = RBFParams(np.array([0.8, 1.5]), 1.2, 0.03)


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return x, np.cos(x @ np.array([[1.0, -0.5, 0.2], [0.3, 1.0, -1.0]])) + 0.05 * rng.normal(size=(n, 3))


def _check_equal_to_refit(model: OnlineGP) -> None:
    ref = ExactGP(model.params, jitter=model.jitter_).fit(model.x_train_.copy(), model.y_train_.copy())
    np.testing.assert_allclose(np.tril(model.L_), ref.L_, atol=1e-10)
    np.testing.assert_allclose(model.beta_, ref.beta_, atol=1e-9)
    xq = np.random.default_rng(9).normal(size=(6, 2))
    model.reserve(6)
    for a, b in zip(model.predict(xq), ref.predict(xq), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)


def test_block_append_equals_refit() -> None:
    x, y = _data(120)
    model = OnlineGP(PARAMS, capacity=200).fit(x[:50], y[:50])
    model.add(x[50:53], y[50:53])
    for i in range(53, 120, 7):
        model.add(x[i : i + 7], y[i : i + 7])
    assert model.n_train == 120 and model.refits_ == 1 and model.incremental_updates_ == 11
    _check_equal_to_refit(model)


def test_fifo_drop_equals_refit_on_newest_points() -> None:
    x, y = _data(300)
    model = OnlineGP(PARAMS, capacity=100).fit(x[:100], y[:100])
    for i in range(100, 300, 9):  # each add drops the oldest points (rank-k update) then appends
        model.add(x[i : i + 9], y[i : i + 9])
    model.add(x[:1], y[:1])  # single-point update: the steady state of a robot
    assert model.n_train == 100 and model.refits_ == 1
    seen = np.concatenate([x[: 100 + 9 * len(range(100, 300, 9))][:300], x[:1]])
    np.testing.assert_array_equal(model.x_train_, seen[-100:])
    _check_equal_to_refit(model)


def test_every_chunk_crossing_the_capacity_equals_refit() -> None:
    """A chunk larger than the room left (k > points dropped): the drop's in-place relayout once wrote
    past the columns it had not moved yet, for 11 of these 580 cases; the tests above never cross."""
    x, y = _data(60, seed=3)
    for n0 in range(1, 21):
        for k in range(1, 30):
            model = OnlineGP(PARAMS, capacity=20).fit(x[:n0], y[:n0])
            model.add(x[n0 : n0 + k], y[n0 : n0 + k])
            np.testing.assert_array_equal(model.x_train_, x[max(0, n0 + k - 20) : n0 + k])
            _check_equal_to_refit(model)


def test_new_hyperparameters_trigger_a_refit() -> None:
    x, y = _data(80)
    model = OnlineGP(PARAMS, capacity=100).fit(x, y)
    model.set_params(RBFParams(np.array([0.5, 0.5]), 2.0, 0.1))
    assert model.refits_ == 2
    _check_equal_to_refit(model)


def test_mean_only_prediction_equals_full_prediction_after_updates() -> None:
    x, y = _data(160)
    model = OnlineGP(PARAMS, capacity=100).fit(x[:60], y[:60])
    xq = np.random.default_rng(7).normal(size=(5, x.shape[1]))
    out = np.empty((5, y.shape[1]))
    for lo in (60, 100, 130):  # append, then append with drops: alpha must follow every update
        model.add(x[lo : lo + 30], y[lo : lo + 30])
        model.predict_mean_into(xq, out)
        np.testing.assert_allclose(out, model.predict(xq)[0], rtol=1e-9, atol=1e-10)
        np.testing.assert_array_equal(model.predict_mean(xq), out)  # the allocating wrapper

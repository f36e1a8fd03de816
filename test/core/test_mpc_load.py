"""mpc_node's data path kernels: the belief table and loading predictions in id order (core.mpc.kernels)."""
import numpy as np
import pytest

from intent_perf_ros.core import aot
from intent_perf_ros.core.mpc import kernels as jit_kernels

MODULES = [jit_kernels, aot.load(aot.MPC_KERNELS)]
IDS = ["jit", "loaded"]  # the second is the compiled module after make, else the JIT again


def _table(rows=16, width=8):
    return (np.full(rows, -1, dtype=np.int64), np.full(rows, -np.inf), np.zeros(rows, dtype=np.int64),
            np.zeros((rows, width)))


@pytest.mark.parametrize("k", MODULES, ids=IDS)
def test_store_beliefs_keeps_the_latest_per_id_and_evicts_the_stalest_when_full(k):
    ids_t, time_t, k1_t, probs_t = _table(rows=3)
    used = k.store_beliefs(ids_t, time_t, k1_t, probs_t, 0, np.array([5, 9], dtype=np.uint32),
                           np.array([[0.2, 0.8], [0.6, 0.4]]), 1.0)
    assert used == 2 and list(ids_t[:2]) == [5, 9]
    used = k.store_beliefs(ids_t, time_t, k1_t, probs_t, used, np.array([9, 7], dtype=np.uint32),
                           np.array([[0.1, 0.9], [0.5, 0.5]]), 2.0)  # 9 updated in place, 7 takes the last row
    assert used == 3 and list(ids_t) == [5, 9, 7] and list(time_t) == [1.0, 2.0, 2.0]
    np.testing.assert_array_equal(probs_t[1, :2], [0.1, 0.9])
    used = k.store_beliefs(ids_t, time_t, k1_t, probs_t, used, np.array([3], dtype=np.uint32),
                           np.array([[0.3, 0.3, 0.4]]), 3.0)  # full: the stalest (5, at 1.0) goes
    assert used == 3 and list(ids_t) == [3, 9, 7] and k1_t[0] == 3
    np.testing.assert_array_equal(probs_t[0, :3], [0.3, 0.3, 0.4])


def _reference(ids, state, mean, var, steps, beliefs, now, timeout, k1, cap):
    """Stable argsort by id, the first ``cap``, dictionary lookup of beliefs (the node's earlier code)."""
    order = np.argsort(ids, kind="stable")[:cap]
    probs = np.array([beliefs[i][0] if i in beliefs and beliefs[i][0].size == k1 and now - beliefs[i][1] < timeout
                      else np.full(k1, 1.0 / k1) for i in ids[order]]).reshape(len(order), k1)
    return order.size, mean[order, :steps], var[order, :steps], state[order, :2], state[order, 2:], probs


@pytest.mark.parametrize("k", MODULES, ids=IDS)
@pytest.mark.parametrize("seed", range(6))
def test_load_predictions_equals_a_stable_sort_and_dictionary_lookup(k, seed):
    rng = np.random.default_rng(seed)
    n, hp, steps, k1, cap = rng.integers(0, 40), 12, int(rng.integers(1, 13)), 4, int(rng.integers(1, 30))
    ids = rng.integers(0, 25, n).astype(np.uint32)  # duplicates on purpose: ties keep arrival order
    state, mean, var = rng.normal(size=(n, 4)), rng.normal(size=(n, hp, 2)), rng.uniform(size=(n, hp, 2))
    ids_t, time_t, k1_t, probs_t = _table(rows=64)
    beliefs, used, now = {}, 0, 100.0
    for i in rng.permutation(30)[:20]:  # some fresh, some stale, some over another number of hypotheses
        width, age = int(rng.choice([k1, k1, 3])), float(rng.choice([0.5, 1.5, 3.0]))
        p = rng.dirichlet(np.ones(width))
        used = k.store_beliefs(ids_t, time_t, k1_t, probs_t, used, np.array([i], dtype=np.uint32), p[None],
                               now - age)
        beliefs[int(i)] = (p, now - age)
    out = [np.full((cap, 16, 2), np.nan), np.full((cap, 16, 2), np.nan), np.zeros((cap, 2)), np.zeros((cap, 2)),
           np.zeros((cap, 8))]
    got = k.load_predictions(ids, state, mean, var, steps, ids_t, time_t, k1_t, probs_t, used, now, 2.0, k1,
                             np.zeros(cap, dtype=np.int64), *out)
    m, r_mean, r_var, r_xy, r_vxy, r_probs = _reference(ids, state, mean, var, steps, beliefs, now, 2.0, k1, cap)
    assert got == m
    np.testing.assert_array_equal(out[0][:m, :steps], r_mean)
    np.testing.assert_array_equal(out[1][:m, :steps], r_var)
    np.testing.assert_array_equal(out[2][:m], r_xy)
    np.testing.assert_array_equal(out[3][:m], r_vxy)
    np.testing.assert_allclose(out[4][:m, :k1], r_probs, rtol=0, atol=1e-15)


@pytest.mark.parametrize("k", MODULES, ids=IDS)
def test_load_predictions_reads_strided_views_of_a_message(k):
    """mpc_node passes zero-copy views of the message's arrays, sliced to the steps all shards hold."""
    ids = np.array([4, 2], dtype=np.uint32)
    flat = np.arange(2 * 12 * 2, dtype=np.float64).reshape(2, 12, 2)
    state = np.arange(8, dtype=np.float64).reshape(2, 4)
    out_mean, out_var = np.zeros((2, 64, 2)), np.zeros((2, 64, 2))
    ids_t, time_t, k1_t, probs_t = _table()
    n = k.load_predictions(ids, state, flat[:, :5], flat[:, :5] + 1.0, 5, ids_t, time_t, k1_t, probs_t, 0, 0.0, 2.0,
                           1, np.zeros(2, dtype=np.int64), out_mean, out_var, np.zeros((2, 2)), np.zeros((2, 2)),
                           np.zeros((2, 8)))
    assert n == 2
    np.testing.assert_array_equal(out_mean[:, :5], flat[::-1, :5])
    np.testing.assert_array_equal(out_var[:, :5], flat[::-1, :5] + 1.0)

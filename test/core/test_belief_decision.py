"""Behaviour selection: UCB and Thompson find the better behaviour; Thompson draws are fresh."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from intent_perf_ros.core.belief.decision import BEHAVIOURS, BehaviourSelector, outcome_reward

TRUE_MEANS = np.array([0.2, 0.5, 0.1, 0.3, 0.0])  # "slow" is best


@pytest.mark.parametrize("method", ["ucb", "thompson"])
def test_selector_learns_the_better_behaviour(method):
    sel = BehaviourSelector(method=method, seed=0)
    rng = np.random.default_rng(1)
    chosen = np.zeros(len(BEHAVIOURS), dtype=int)
    for step in range(400):
        index, name, score, bonus = sel.select()
        assert name == BEHAVIOURS[index] and np.isfinite(score) and np.isfinite(bonus)
        if step >= 200:
            chosen[index] += 1
        sel.update(index, TRUE_MEANS[index] + 0.3 * rng.standard_normal())
    assert chosen.argmax() == 1
    assert chosen[1] >= 140  # the late decisions mostly exploit the best behaviour
    assert int(np.argmax(sel.posterior()[0])) == 1


def test_a_fresh_selector_explores_every_behaviour():
    sel = BehaviourSelector(method="ucb", seed=0)
    seen = set()
    for _ in range(len(BEHAVIOURS)):
        index, *_ = sel.select()
        seen.add(index)
        sel.update(index, 0.0)
    assert len(seen) == len(BEHAVIOURS)


def test_thompson_draws_differ_between_calls():
    sel = BehaviourSelector(method="thompson", seed=0)
    for index in range(len(BEHAVIOURS)):
        sel.update(index, 0.1 * index)
    draws = [sel.scores()[0].copy() for _ in range(5)]
    for a, b in itertools.pairwise(draws):
        assert not np.allclose(a, b)
    first, second = sel.select(), sel.select()
    assert first[2] != second[2]


def test_ucb_bonus_shrinks_with_evidence():
    sel = BehaviourSelector(method="ucb", seed=0)
    _, before = sel.scores()
    for _ in range(20):
        sel.update(2, 0.4)
    _, after = sel.scores()
    assert after[2] < before[2] / 2


def test_posterior_matches_batch_formulas():
    sel = BehaviourSelector(method="ucb", prior_mean=0.1, prior_kappa=2.0, prior_alpha=3.0, prior_beta=0.5)
    x = np.array([0.3, -0.2, 0.8, 0.5])
    for v in x:
        sel.update(0, v)
    mu, kappa, alpha, beta = (a[0] for a in sel.posterior())
    n, m = x.size, x.mean()
    assert kappa == pytest.approx(2.0 + n)
    assert mu == pytest.approx((2.0 * 0.1 + n * m) / (2.0 + n))
    assert alpha == pytest.approx(3.0 + n / 2)
    shift = 2.0 * n * (m - 0.1) ** 2 / (2 * (2.0 + n))
    assert beta == pytest.approx(0.5 + 0.5 * np.sum((x - m) ** 2) + shift)


def test_outcome_reward():
    assert outcome_reward(1.0, 2.0, 0.0) == pytest.approx(1.0)
    assert outcome_reward(1.0, 0.25, 0.0) == pytest.approx(1.0 - 2.0 * 0.5)
    assert outcome_reward(1.0, 2.0, 0.3) == pytest.approx(0.7)
    assert outcome_reward(1.0, 0.1, 0.0) < -9.0  # collision
    with pytest.raises(ValueError):
        outcome_reward(float("nan"), 1.0, 0.0)
    with pytest.raises(ValueError):
        outcome_reward(1.0, -1.0, 0.0)
    with pytest.raises(ValueError):
        BehaviourSelector(method="greedy")
    with pytest.raises(ValueError):
        BehaviourSelector().update(9, 1.0)

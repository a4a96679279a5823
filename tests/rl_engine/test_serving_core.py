"""Slate picking with logged propensities, against hand-worked values."""

import math

import numpy as np
import pytest

from rl_engine.core.protocol import ItemVocabulary
from rl_engine.core.serving import Basket, customer_history, pick_slate


def test_softmax_propensities_are_each_picks_probability_among_those_left():
    scores = np.array([2.0, 1.0, 0.0, 5.0])
    eligible = np.array([True, True, True, False])

    slate = pick_slate(
        scores,
        eligible,
        2,
        kind="softmax",
        temperature=1.0,
        rng=np.random.default_rng(3),
    )

    weights = {0: math.e**2, 1: math.e**1, 2: 1.0}
    first, second = slate.items.tolist()
    assert 3 not in slate.items
    assert slate.propensities[0] == pytest.approx(
        weights[first] / sum(weights.values())
    )
    rest = {item: w for item, w in weights.items() if item != first}
    assert slate.propensities[1] == pytest.approx(weights[second] / sum(rest.values()))
    assert slate.reasons[0] == ("model" if first == 0 else "exploration")


def test_softmax_picks_follow_their_propensities():
    scores = np.array([1.0, 0.0])
    eligible = np.ones(2, dtype=bool)
    rng = np.random.default_rng(0)

    firsts = [
        int(
            pick_slate(
                scores, eligible, 1, kind="softmax", temperature=1.0, rng=rng
            ).items[0]
        )
        for _ in range(4000)
    ]

    expected = math.e / (math.e + 1.0)
    assert firsts.count(0) / 4000 == pytest.approx(expected, abs=0.03)


def test_epsilon_greedy_and_greedy_propensities():
    scores = np.array([3.0, 2.0, 1.0, 0.0])
    eligible = np.ones(4, dtype=bool)

    greedy = pick_slate(
        scores, eligible, 3, kind="greedy", rng=np.random.default_rng(0)
    )
    never = pick_slate(
        scores,
        eligible,
        2,
        kind="epsilon_greedy",
        epsilon=0.0,
        rng=np.random.default_rng(0),
    )
    always = pick_slate(
        scores,
        eligible,
        1,
        kind="epsilon_greedy",
        epsilon=1.0,
        rng=np.random.default_rng(1),
    )

    assert greedy.items.tolist() == [0, 1, 2]
    assert greedy.propensities.tolist() == [1.0, 1.0, 1.0]
    assert greedy.reasons == ["model"] * 3
    assert never.propensities.tolist() == [1.0, 1.0]
    picked = int(always.items[0])
    assert picked in {0, 1, 2, 3}
    assert always.propensities[0] == pytest.approx(0.25)


def test_exploration_stays_within_the_best_candidates():
    scores = np.arange(1000, dtype=float)
    eligible = np.ones(1000, dtype=bool)

    slate = pick_slate(
        scores,
        eligible,
        10,
        kind="softmax",
        temperature=100.0,
        candidates=50,
        rng=np.random.default_rng(2),
    )

    assert slate.items.min() >= 950
    assert len(set(slate.items.tolist())) == 10


def test_history_keeps_known_products_in_time_order():
    vocabulary = ItemVocabulary(ids=np.array(["A", "B", "C"], dtype=object))
    baskets = [
        Basket(item_ids=["C", "UNKNOWN"], time=np.datetime64("2011-02-01")),
        Basket(item_ids=["A", "B"], time=np.datetime64("2011-01-01")),
        Basket(item_ids=["UNKNOWN"], time=np.datetime64("2011-01-15")),
        Basket(item_ids=["B"], time=np.datetime64("2011-03-01")),
    ]

    log, history, times = customer_history(
        vocabulary, baskets, np.datetime64("2011-02-15")
    )

    assert log.n_baskets == 2
    assert log.items.toarray().tolist() == [[1, 1, 0], [0, 0, 1]]
    assert history.toarray().tolist() == [[1.0, 2.0]]
    assert times[0] == np.datetime64("2011-02-15")

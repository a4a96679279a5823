from math import log2, sqrt

import numpy as np
import pytest

from rl_engine.core.metrics import (
    clustered_difference_ci,
    mean_metrics,
    rank_items,
    ranking_metrics,
)


def targets_of(n_items: int, *baskets: list[int]) -> np.ndarray:
    targets = np.zeros((len(baskets), n_items), dtype=bool)
    for row, items in enumerate(baskets):
        targets[row, items] = True
    return targets


def test_metrics_of_a_hand_worked_ranking() -> None:
    # Targets 1 and 3 sit at ranks 2 and 4.
    ranked = np.array([[0, 1, 2, 3]])
    targets = targets_of(5, [1, 3])

    per_case = ranking_metrics(ranked, targets, ks=(2, 4))

    assert per_case["hr@2"].tolist() == [1.0]
    assert per_case["recall@2"].tolist() == [0.5]
    assert per_case["recall@4"].tolist() == [1.0]
    ideal = 1.0 + 1.0 / log2(3)
    assert per_case["ndcg@2"][0] == pytest.approx((1.0 / log2(3)) / ideal)
    assert per_case["ndcg@2"][0] == pytest.approx(0.386853, abs=1e-6)
    assert per_case["ndcg@4"][0] == pytest.approx(
        (1.0 / log2(3) + 1.0 / log2(5)) / ideal
    )
    assert per_case["ndcg@4"][0] == pytest.approx(0.650920, abs=1e-6)


def test_a_miss_scores_zero_and_means_average_cases() -> None:
    ranked = np.array([[0, 1], [2, 3]])
    targets = targets_of(5, [0], [4])

    means = mean_metrics(ranking_metrics(ranked, targets, ks=(1, 2)))

    assert means == {
        "hr@1": 0.5,
        "recall@1": 0.5,
        "ndcg@1": 0.5,
        "hr@2": 0.5,
        "recall@2": 0.5,
        "ndcg@2": 0.5,
    }


def test_deeper_ndcg_can_be_lower_for_a_large_basket() -> None:
    # Three target items: two fill the top two, the third is never ranked.
    ranked = np.array([[0, 1, 3, 4]])
    targets = targets_of(6, [0, 1, 2])

    per_case = ranking_metrics(ranked, targets, ks=(2, 4))

    assert per_case["recall@2"].tolist() == [1.0]
    assert per_case["recall@4"].tolist() == [pytest.approx(2 / 3)]
    assert per_case["ndcg@2"].tolist() == [pytest.approx(1.0)]
    dcg = 1.0 + 1.0 / log2(3)
    assert per_case["ndcg@4"][0] == pytest.approx(dcg / (dcg + 0.5))
    assert per_case["ndcg@4"][0] < per_case["ndcg@2"][0]


def test_metrics_refuse_short_rankings_and_empty_targets() -> None:
    with pytest.raises(ValueError, match="need 3"):
        ranking_metrics(np.array([[0, 1]]), targets_of(3, [0]), ks=(3,))
    with pytest.raises(ValueError, match="at least one target"):
        ranking_metrics(np.array([[0, 1]]), targets_of(3, []), ks=(2,))


def test_rank_items_breaks_ties_by_the_given_order() -> None:
    scores = np.array(
        [
            [0.0, 2.0, 2.0, 1.0, 2.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [-np.inf, 5.0, -np.inf, 0.0, 0.0],
        ]
    )
    tiebreak = np.array([4, 0, 3, 1, 2])

    ranked = rank_items(scores, tiebreak, k=3)

    assert ranked.tolist() == [[4, 1, 2], [4, 0, 3], [1, 4, 3]]


def test_rank_items_agrees_with_a_full_lexicographic_sort() -> None:
    generator = np.random.default_rng(7)
    scores = generator.integers(0, 4, size=(50, 40)).astype(np.float64)
    scores[generator.random(scores.shape) < 0.2] = -np.inf
    tiebreak = generator.permutation(40)
    preference = np.empty(40, dtype=np.int64)
    preference[tiebreak] = np.arange(40)

    expected = np.array([np.lexsort((preference, -row))[:10] for row in scores])

    assert rank_items(scores, tiebreak, k=10).tolist() == expected.tolist()


def test_rank_items_refuses_nan_and_mismatched_orders() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_items(np.array([[0.0, np.nan]]), np.array([0, 1]), k=1)
    with pytest.raises(ValueError, match="do not match"):
        rank_items(np.zeros((1, 3)), np.array([0, 1]), k=1)


def test_clustered_interval_of_a_hand_worked_difference() -> None:
    # Differences 1, 1, 0, 2 with the first two cases from one customer:
    # mean 1, cluster sums of deviations 0, -1, 1, so the CR1 variance is
    # 3 / 2 * 2 / 16 = 0.1875.
    candidate = np.array([1.0, 2.0, 0.5, 2.5])
    reference = np.array([0.0, 1.0, 0.5, 0.5])
    clusters = np.array(["a", "a", "b", "c"])

    low, high = clustered_difference_ci(candidate, reference, clusters)

    half_width = 1.959963984540054 * sqrt(0.1875)
    assert low == pytest.approx(1.0 - half_width)
    assert high == pytest.approx(1.0 + half_width)
    assert (low, high) == pytest.approx((0.151311, 1.848689), abs=1e-6)


def test_clustering_widens_the_interval_of_correlated_cases() -> None:
    difference = np.array([1.0, 1.0, -1.0, -1.0, 0.5, -0.5])
    zeros = np.zeros(6)

    independent = clustered_difference_ci(difference, zeros, np.arange(6))
    by_customer = clustered_difference_ci(
        difference, zeros, np.array([0, 0, 1, 1, 2, 2])
    )

    assert by_customer[1] - by_customer[0] > independent[1] - independent[0]
    with pytest.raises(ValueError, match="two clusters"):
        clustered_difference_ci(difference, zeros, np.zeros(6))

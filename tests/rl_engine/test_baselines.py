from math import sqrt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rl_engine.core.baselines import (
    Blend,
    BlendWeights,
    ItemKnn,
    PersonalRepeat,
    Popularity,
    protocol_baselines,
)
from rl_engine.core.evaluation import evaluate, evaluate_log, rank_cases
from rl_engine.core.protocol import (
    PROTOCOL_NAME,
    BasketLog,
    CaseBatch,
    Recommender,
    SplitBoundaries,
    Target,
    build_baskets,
    build_cases,
    purchase_lines,
    read_online_retail,
    recent_popularity,
    tiebreak_order,
)
from tests.conftest import ONLINE_RETAIL

TEST_START = np.datetime64("2011-11-01")

COLUMNS = [
    ("all", "hr@10"),
    ("all", "recall@10"),
    ("all", "ndcg@10"),
    ("all", "ndcg@20"),
    ("new", "hr@10"),
    ("new", "recall@10"),
    ("new", "ndcg@10"),
    ("new", "ndcg@20"),
]
PUBLISHED_TEST_FIGURES = {
    "popularity": [0.4759, 0.0955, 0.0969, 0.0981, 0.2781, 0.0534, 0.0504, 0.0568],
    "repeat": [0.7376, 0.2794, 0.2747, 0.2803, 0.2781, 0.0534, 0.0504, 0.0568],
    "item_knn": [0.5208, 0.1597, 0.1560, 0.1613, 0.2933, 0.0705, 0.0635, 0.0693],
    "blend": [0.7425, 0.2832, 0.2785, 0.2842, 0.2933, 0.0705, 0.0635, 0.0693],
}
"""The protocol's baseline table: test split, refitted before 2011-11-01."""


def purchase_frame(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """Build canonical purchase lines from (customer, invoice, basket items, day)."""
    return pd.DataFrame(
        [
            (customer, invoice, item, pd.Timestamp(day))
            for customer, invoice, items, day in rows
            for item in items
        ],
        columns=["customer", "basket", "item", "occurred_at"],
    )


SMALL_LINES = purchase_frame(
    [
        ("A", "1", "PQ", "2011-09-10"),
        ("A", "2", "QR", "2011-10-10"),
        ("A", "3", "P", "2011-10-20"),
        ("A", "4", "PS", "2011-11-05"),
        ("B", "5", "RS", "2011-10-12"),
        ("B", "6", "ST", "2011-10-25"),
        ("B", "10", "SU", "2011-11-15"),
        ("C", "7", "TU", "2011-11-03"),
        ("D", "8", "Q", "2011-10-28"),
        ("D", "9", "QT", "2011-11-07"),
    ]
)
"""Test cases: A's basket 4, D's basket 9 and B's basket 10. Before the split, the
30-day popularity is P 1, Q 2, R 2, S 2, T 1, U 0."""


@pytest.fixture(scope="module")
def online_retail_report() -> dict[str, Any]:
    log = build_baskets(purchase_lines(read_online_retail(ONLINE_RETAIL)))
    return evaluate_log(log, protocol_baselines(), split="test", candidate="blend")


@pytest.fixture
def small_log() -> BasketLog:
    return build_baskets(SMALL_LINES)


def ranked_ids(
    recommender: Recommender, log: BasketLog, target: Target = "all", k: int = 6
) -> list[list[str]]:
    """Fit before the test split and rank the test cases as the harness does."""
    recommender.fit(log, TEST_START)
    cases = build_cases(log, SplitBoundaries().period("test"), target)
    tiebreak = tiebreak_order(recent_popularity(log, TEST_START))
    ranked = rank_cases(recommender, cases, tiebreak, k)
    return log.vocabulary.id_of(ranked).tolist()


@pytest.mark.parametrize("baseline", list(PUBLISHED_TEST_FIGURES))
def test_baseline_reproduces_the_published_test_figures(
    online_retail_report: dict[str, Any], baseline: str
) -> None:
    figures = online_retail_report["results"][baseline]
    measured = [figures[target][metric] for target, metric in COLUMNS]

    assert measured == pytest.approx(PUBLISHED_TEST_FIGURES[baseline], abs=1e-3)


def test_report_has_the_protocol_shape(online_retail_report: dict[str, Any]) -> None:
    assert online_retail_report["protocol"] == PROTOCOL_NAME
    assert online_retail_report["split"] == "test"
    assert online_retail_report["cases"] == {"all": 3_053, "new": 2_567}
    assert set(online_retail_report["results"]["repeat"]["new"]) == {
        "hr@10",
        "recall@10",
        "ndcg@10",
        "hr@20",
        "recall@20",
        "ndcg@20",
    }


def test_interval_compares_the_candidate_with_the_best_other_model(
    online_retail_report: dict[str, Any],
) -> None:
    results = online_retail_report["results"]
    intervals = online_retail_report["ndcg@10_difference_ci95"]
    over_repeat = (
        results["blend"]["all"]["ndcg@10"] - results["repeat"]["all"]["ndcg@10"]
    )

    low, high = intervals["all"]
    assert low < over_repeat < high
    # For new items the blend ranks exactly as item-kNN, the best other model.
    assert intervals["new"] == [0.0, 0.0]


def test_popularity_ranks_alike_for_everyone(small_log: BasketLog) -> None:
    assert ranked_ids(Popularity(), small_log) == [["Q", "R", "S", "P", "T", "U"]] * 3


def test_repeat_ranks_by_count_then_recency_then_popularity(
    small_log: BasketLog,
) -> None:
    ranked = ranked_ids(PersonalRepeat(), small_log)

    # A bought P and Q twice each, P last; the rest pads by popularity.
    assert ranked[0] == ["P", "Q", "R", "S", "T", "U"]


def test_item_knn_is_fitted_before_the_split_only(small_log: BasketLog) -> None:
    knn = ItemKnn()
    knn.fit(small_log, TEST_START)
    assert knn.similarity is not None
    p, q, r, s, t, u = range(6)

    assert knn.similarity[[p, q, r, s], [q, r, s, t]] == pytest.approx(
        [1 / sqrt(6), 1 / sqrt(6), 1 / 2, 1 / sqrt(2)]
    )
    assert knn.similarity.diagonal().tolist() == [0.0] * 6
    assert knn.similarity[t, u] == 0.0

    knn.fit(small_log, np.datetime64("2011-12-01"))
    assert knn.similarity is not None
    assert knn.similarity[t, u] > 0.0


def test_item_knn_sums_over_every_item_of_the_last_baskets(
    small_log: BasketLog,
) -> None:
    knn = ItemKnn()
    knn.fit(small_log, TEST_START)
    cases = build_cases(small_log, SplitBoundaries().period("test"), "all")

    scores = knn.neighbour_scores(cases)

    # A's last three baskets hold P twice, Q twice and R once.
    assert scores[0] == pytest.approx(
        [2 / sqrt(6), 3 / sqrt(6), 2 / sqrt(6), 0.5, 0, 0]
    )
    # P and R tie; R is more popular. T and U have no neighbour and pad.
    assert ranked_ids(ItemKnn(), small_log)[0] == ["Q", "R", "P", "S", "T", "U"]


def test_blend_adds_popularity_to_the_repeat_share(small_log: BasketLog) -> None:
    ranked = ranked_ids(Blend(), small_log)

    # Shares P 2/3, Q 2/3, R 1/3; popularity adds 0.025 to P, 0.05 to Q.
    assert ranked[0] == ["Q", "P", "R", "S", "T", "U"]


def test_blend_ties_go_to_the_latest_purchase(small_log: BasketLog) -> None:
    no_popularity = Blend(weights={"all": BlendWeights(knn=0.0, popularity=0.0)})

    ranked = ranked_ids(no_popularity, small_log)

    assert ranked[0] == ["P", "Q", "R", "S", "T", "U"]


def test_blend_ranks_new_items_as_item_knn(small_log: BasketLog) -> None:
    blend = ranked_ids(Blend(), small_log, target="new", k=3)
    knn = ranked_ids(ItemKnn(), small_log, target="new", k=3)

    assert blend == knn
    assert blend[0] == ["S", "T", "U"]


class TargetOracle:
    """Score each case's target items 1 and every other item 0."""

    name = "policy"

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        """Fit nothing."""

    def score(self, cases: CaseBatch) -> np.ndarray:
        return cases.targets.toarray()


def test_a_new_recommender_plugs_into_the_harness() -> None:
    report = evaluate(
        SMALL_LINES, [TargetOracle(), *protocol_baselines()], candidate="policy"
    )

    assert report["cases"] == {"all": 3, "new": 3}
    assert set(report["results"]) == {
        "policy",
        "popularity",
        "repeat",
        "item_knn",
        "blend",
    }
    assert set(report["results"]["policy"]["all"].values()) == {1.0}
    assert set(report["results"]["policy"]["new"].values()) == {1.0}
    best_baseline = max(
        figures["new"]["ndcg@10"]
        for name, figures in report["results"].items()
        if name != "policy"
    )
    low, high = report["ndcg@10_difference_ci95"]["new"]
    assert low < 1.0 - best_baseline < high


def test_harness_refuses_an_unknown_candidate() -> None:
    with pytest.raises(ValueError, match="not among"):
        evaluate(SMALL_LINES, protocol_baselines(), candidate="policy")

"""Evaluate recommenders on one split of the next-basket protocol.

The harness fits every recommender on the baskets before the evaluated period,
scores both targets' cases, ranks with the protocol's tie rule, averages the
metrics, and compares a candidate with the best other model per target by a
customer-clustered interval of the paired NDCG@10 difference. The result is a
plain dict in the shape of the protocol's JSON report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rl_engine.core.metrics import (
    clustered_difference_ci,
    mean_metrics,
    rank_items,
    ranking_metrics,
)
from rl_engine.core.protocol import (
    PROTOCOL_NAME,
    TARGETS,
    BasketLog,
    CaseBatch,
    PeriodName,
    Recommender,
    SplitBoundaries,
    build_baskets,
    build_cases,
    recent_popularity,
    tiebreak_order,
)

logger = logging.getLogger(__name__)

CUTOFFS = (10, 20)
"""Ranking depths K at which every metric is reported."""

COMPARED_METRIC = "ndcg@10"
"""Metric whose paired difference gets a confidence interval."""


def rank_cases(
    recommender: Recommender, cases: CaseBatch, tiebreak: np.ndarray, k: int
) -> np.ndarray:
    """Return each case's ``k`` best items by ``recommender``, best first.

    Excluded items go last; equal scores follow ``tiebreak``.
    """
    scores = np.array(recommender.score(cases), dtype=np.float64)
    if scores.shape != (cases.n_cases, cases.n_items):
        raise ValueError(
            f"{recommender.name} returned scores of shape {scores.shape}, expected "
            f"{(cases.n_cases, cases.n_items)}"
        )
    if cases.excluded is not None:
        excluded = cases.excluded.tocoo()
        scores[excluded.coords] = -np.inf

    return rank_items(scores, tiebreak, k)


def score_cases(
    recommender: Recommender, cases: CaseBatch, tiebreak: np.ndarray
) -> dict[str, np.ndarray]:
    """Rank the cases' items with ``recommender`` and return per-case metrics."""
    ranked = rank_cases(recommender, cases, tiebreak, max(CUTOFFS))
    return ranking_metrics(ranked, cases.dense_targets(), CUTOFFS)


def evaluate_log(
    log: BasketLog,
    recommenders: Sequence[Recommender],
    split: PeriodName = "test",
    candidate: str | None = None,
    boundaries: SplitBoundaries | None = None,
) -> dict[str, Any]:
    """Evaluate ``recommenders`` on ``split`` of ``log``.

    Every recommender is fitted on the baskets before the split's start: train
    for validation, train and validation for test. When ``candidate`` names one
    of them, the result also holds, per target, the 95% interval of its NDCG@10
    minus that of the best other recommender, paired by case and clustered by
    customer.
    """
    names = [recommender.name for recommender in recommenders]
    if len(set(names)) != len(names):
        raise ValueError(f"recommender names must be distinct, got {names}")
    if candidate is not None and candidate not in names:
        raise ValueError(f"candidate {candidate!r} is not among {names}")
    period = (boundaries or SplitBoundaries()).period(split)
    if period.start is None:
        raise ValueError(f"split {split!r} has nothing before it to fit on")

    for recommender in recommenders:
        started = time.perf_counter()
        recommender.fit(log, period.start)
        logger.info(
            "Fitted %s before %s in %.1f s",
            recommender.name,
            period.start,
            time.perf_counter() - started,
            extra={"recommender": recommender.name, "split": split},
        )
    tiebreak = tiebreak_order(recent_popularity(log, period.start))

    case_counts: dict[str, int] = {}
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names}
    intervals: dict[str, list[float]] = {}
    for target in TARGETS:
        cases = build_cases(log, period, target)
        case_counts[target] = cases.n_cases
        compared: dict[str, np.ndarray] = {}
        for recommender in recommenders:
            per_case = score_cases(recommender, cases, tiebreak)
            results[recommender.name][target] = mean_metrics(per_case)
            compared[recommender.name] = per_case[COMPARED_METRIC]
            logger.info(
                "%s on %s, %s items: %s %.4f over %d cases",
                recommender.name,
                split,
                target,
                COMPARED_METRIC,
                results[recommender.name][target][COMPARED_METRIC],
                cases.n_cases,
                extra={"recommender": recommender.name, "split": split},
            )

        if candidate is not None and len(names) > 1:
            reference = max(
                (name for name in names if name != candidate),
                key=lambda name: results[name][target][COMPARED_METRIC],
            )
            low, high = clustered_difference_ci(
                compared[candidate], compared[reference], cases.customer_codes
            )
            intervals[target] = [low, high]
            logger.info(
                "%s minus %s, %s items: %s difference in [%.4f, %.4f]",
                candidate,
                reference,
                target,
                COMPARED_METRIC,
                low,
                high,
                extra={"candidate": candidate, "reference": reference},
            )

    report: dict[str, Any] = {
        "protocol": PROTOCOL_NAME,
        "split": split,
        "cases": case_counts,
        "results": results,
    }
    if intervals:
        report[f"{COMPARED_METRIC}_difference_ci95"] = intervals
    return report


def evaluate(
    lines: pd.DataFrame,
    recommenders: Sequence[Recommender],
    split: PeriodName = "test",
    candidate: str | None = None,
    boundaries: SplitBoundaries | None = None,
) -> dict[str, Any]:
    """Build baskets from purchase lines, then evaluate as :func:`evaluate_log`."""
    return evaluate_log(
        build_baskets(lines), recommenders, split, candidate, boundaries
    )

"""Rank items and score rankings: HR@K, Recall@K and NDCG@K per case.

Every metric works on a ranking, a (cases x K) array of item indices best first,
and on the cases' targets, a (cases x items) boolean array. Per-case values stay
available so paired comparisons can be made between models.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.stats import norm


def rank_items(scores: np.ndarray, tiebreak_order: np.ndarray, k: int) -> np.ndarray:
    """Return the ``k`` best items of every row of ``scores``, best first.

    Higher scores rank first; equal scores follow ``tiebreak_order`` (item indices,
    most preferred first). Only the top ``k`` are sorted, so a row costs linear
    time plus a sort of ``k`` entries. ``-inf`` marks an item that must not rank
    unless nothing else is left.
    """
    if scores.ndim != 2 or scores.shape[1] != len(tiebreak_order):
        raise ValueError(
            f"scores of shape {scores.shape} do not match "
            f"{len(tiebreak_order)} items in the tie-break order"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_cases, n_items = scores.shape
    k = min(k, n_items)

    # Columns in tie-break order: among equal scores, the leftmost wins.
    ordered = scores[:, tiebreak_order]
    kth_best = np.partition(ordered, n_items - k, axis=1)[:, n_items - k]
    above = ordered > kth_best[:, None]
    level = ordered == kth_best[:, None]
    seats_left = k - above.sum(axis=1)
    chosen = above | level
    # Rows with more tied items than seats keep the leftmost ties only.
    crowded = np.flatnonzero(level.sum(axis=1) > seats_left)
    if len(crowded):
        tied = level[crowded]
        seated = np.cumsum(tied, axis=1, dtype=np.int32) <= seats_left[crowded, None]
        chosen[crowded] = above[crowded] | (tied & seated)

    # np.nonzero walks rows in order and columns left to right within each row.
    columns = np.nonzero(chosen)[1].reshape(n_cases, k)
    chosen_scores = np.take_along_axis(ordered, columns, axis=1)
    best_first = np.argsort(-chosen_scores, axis=1, kind="stable")
    return tiebreak_order[np.take_along_axis(columns, best_first, axis=1)]


def target_hits(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return a boolean (cases x K) array: is the item at each rank a target."""
    return np.take_along_axis(targets, ranked, axis=1)


def hit_rate(hits: np.ndarray, k: int) -> np.ndarray:
    """Return per-case HR@k: 1.0 if any of the top ``k`` is a target."""
    return np.asarray(hits[:, :k].any(axis=1), dtype=np.float64)


def recall(hits: np.ndarray, target_sizes: np.ndarray, k: int) -> np.ndarray:
    """Return per-case Recall@k: hits in the top ``k`` over min(k, |target|)."""
    return hits[:, :k].sum(axis=1) / np.minimum(k, target_sizes)


def ndcg(hits: np.ndarray, target_sizes: np.ndarray, k: int) -> np.ndarray:
    """Return per-case NDCG@k with binary relevance and a log2(rank + 1) discount.

    The ideal ranking puts min(k, |target|) hits first.
    """
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    top = hits[:, :k]
    dcg = top @ discount[: top.shape[1]]
    ideal = np.cumsum(discount)[np.minimum(k, target_sizes) - 1]
    return dcg / ideal


def ranking_metrics(
    ranked: np.ndarray, targets: np.ndarray, ks: Iterable[int] = (10, 20)
) -> dict[str, np.ndarray]:
    """Return per-case ``hr@k``, ``recall@k`` and ``ndcg@k`` for every ``k``.

    ``ranked`` must hold ``max(ks)`` items per case, or every item if there are
    fewer; every case must have at least one target item.
    """
    ks = tuple(ks)
    needed = min(max(ks), targets.shape[1])
    if ranked.shape[1] < needed:
        raise ValueError(f"rankings hold {ranked.shape[1]} items, need {needed}")
    target_sizes = targets.sum(axis=1)
    if (target_sizes == 0).any():
        raise ValueError("every case needs at least one target item")

    hits = target_hits(ranked, targets).astype(np.float64)
    per_case: dict[str, np.ndarray] = {}
    for k in ks:
        per_case[f"hr@{k}"] = hit_rate(hits, k)
        per_case[f"recall@{k}"] = recall(hits, target_sizes, k)
        per_case[f"ndcg@{k}"] = ndcg(hits, target_sizes, k)
    return per_case


def mean_metrics(per_case: dict[str, np.ndarray]) -> dict[str, float]:
    """Average per-case metrics over cases."""
    return {name: float(values.mean()) for name, values in per_case.items()}


def clustered_difference_ci(
    candidate: np.ndarray,
    reference: np.ndarray,
    clusters: np.ndarray,
    level: float = 0.95,
) -> tuple[float, float]:
    """Return a confidence interval of the mean paired difference, by cluster.

    The difference is ``candidate - reference`` per case. Its mean gets a
    cluster-robust (CR1) standard error: the per-cluster sums of deviations from
    the mean, squared and summed, over n squared, times G / (G - 1) for G clusters.
    The interval is the mean plus or minus the normal quantile for ``level``
    times that error. Cases of one customer form a cluster, because a customer's
    baskets are not independent of each other.
    """
    difference = np.asarray(candidate, dtype=np.float64) - np.asarray(
        reference, dtype=np.float64
    )
    if difference.shape != np.shape(clusters) or difference.ndim != 1:
        raise ValueError("candidate, reference and clusters must be aligned vectors")
    n = len(difference)
    _, cluster_index = np.unique(clusters, return_inverse=True)
    n_clusters = int(cluster_index.max()) + 1 if n else 0
    if n_clusters < 2:
        raise ValueError("a clustered interval needs at least two clusters")

    mean = float(difference.mean())
    cluster_sums = np.bincount(cluster_index, weights=difference - mean)
    variance = n_clusters / (n_clusters - 1) * float(cluster_sums @ cluster_sums) / n**2
    half_width = float(norm.ppf(0.5 + level / 2) * np.sqrt(variance))
    return mean - half_width, mean + half_width

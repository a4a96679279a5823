"""The protocol's four baselines: popularity, personal repeat, item-kNN and blend.

Each one implements :class:`~rl_engine.core.protocol.Recommender`: ``fit`` on the
baskets before the evaluated period, then ``score`` a batch of cases as a dense
(cases x items) matrix. Equal scores are left to the harness, which breaks them by
popularity rank and then item id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from rl_engine.core.protocol import (
    POPULARITY_WINDOW,
    BasketLog,
    CaseBatch,
    Recommender,
    Target,
    recent_popularity,
)


def _require_fitted(popularity: np.ndarray | None, name: str) -> np.ndarray:
    if popularity is None:
        raise RuntimeError(f"{name} must be fitted before it scores cases")
    return popularity


def _pad_with_popularity(scores: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Rank the items without a positive score after all others, by popularity.

    Padded items score in ``[-1, 0)``, in the order of their popularity.
    """
    padding = popularity / (popularity.max() + 1.0) - 1.0
    return np.where(scores > 0, scores, padding[None, :])


def _repeat_with_recency(cases: CaseBatch) -> np.ndarray:
    """Score each item by how many history baskets hold it, ties to the latest.

    The count is the integer part; the fraction orders equal counts by the
    position of the latest basket with the item, the most recent highest.
    """
    scores = cases.purchase_counts.toarray()
    recency = cases.last_purchase.toarray()
    return scores + recency / (cases.history_length[:, None] + 1.0)


@dataclass
class Popularity:
    """Rank items by how many baskets held them just before the period."""

    window: np.timedelta64 = POPULARITY_WINDOW
    """Span before the period's start whose baskets are counted."""
    name: str = "popularity"
    popularity: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        """Count baskets per item over ``window`` before ``before``."""
        self.popularity = recent_popularity(log, before, self.window)

    def score(self, cases: CaseBatch) -> np.ndarray:
        """Give every case the same popularity scores."""
        popularity = _require_fitted(self.popularity, self.name)
        return np.repeat(popularity[None, :].astype(np.float64), cases.n_cases, axis=0)


@dataclass
class PersonalRepeat:
    """Rank the customer's own past items by purchase count, then recency.

    Items the customer never bought follow, by popularity.
    """

    window: np.timedelta64 = POPULARITY_WINDOW
    """Span before the period's start whose baskets make the padding popularity."""
    name: str = "repeat"
    popularity: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        """Count baskets per item over ``window`` before ``before`` for padding."""
        self.popularity = recent_popularity(log, before, self.window)

    def score(self, cases: CaseBatch) -> np.ndarray:
        """Score bought items by count and recency, others by popularity."""
        popularity = _require_fitted(self.popularity, self.name)
        return _pad_with_popularity(_repeat_with_recency(cases), popularity)


def cosine_item_similarity(baskets: sp.csr_array) -> sp.csr_array:
    """Return item-item cosine similarity over basket co-occurrence.

    ``baskets`` is a binary (baskets x items) matrix. The diagonal is zero: an item
    is not its own neighbour. Items in no basket have no neighbours.
    """
    co_occurrence = sp.csr_array(baskets.T @ baskets)
    occurrences = co_occurrence.diagonal()
    co_occurrence.setdiag(0.0)
    co_occurrence.eliminate_zeros()

    inverse_norm = np.zeros_like(occurrences)
    np.divide(1.0, np.sqrt(occurrences), out=inverse_norm, where=occurrences > 0)
    scaling = sp.diags_array(inverse_norm)
    return sp.csr_array(scaling @ co_occurrence @ scaling)


@dataclass
class ItemKnn:
    """Rank items by cosine similarity to the items of the customer's last baskets.

    Similarities are summed over every item of every one of the last
    ``recent_baskets`` baskets, so an item in two of them counts twice. Items
    with no similarity follow, by popularity.
    """

    recent_baskets: int = 3
    """How many of the customer's latest history baskets seed the neighbours."""
    window: np.timedelta64 = POPULARITY_WINDOW
    """Span before the period's start whose baskets make the padding popularity."""
    name: str = "item_knn"
    similarity: np.ndarray | None = field(default=None, init=False, repr=False)
    """Dense (items x items) cosine similarity: about a third of it is non-zero,
    and a dense right operand makes scoring a fast sparse-dense product."""
    popularity: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        """Fit cosine similarity on all baskets before ``before``."""
        fitted = np.flatnonzero(log.before(before))
        self.similarity = cosine_item_similarity(
            sp.csr_array(log.items[fitted])
        ).toarray()
        self.popularity = recent_popularity(log, before, self.window)

    def neighbour_scores(self, cases: CaseBatch) -> np.ndarray:
        """Return the summed similarities, without popularity padding."""
        if self.similarity is None:
            raise RuntimeError(f"{self.name} must be fitted before it scores cases")
        seeds = cases.recent_item_counts(self.recent_baskets)
        return np.asarray(seeds @ self.similarity)

    def score(self, cases: CaseBatch) -> np.ndarray:
        """Score items by summed similarity, padded with popularity."""
        popularity = _require_fitted(self.popularity, self.name)
        return _pad_with_popularity(self.neighbour_scores(cases), popularity)


@dataclass(frozen=True)
class BlendWeights:
    """Weights of the blend's three parts for one target."""

    knn: float
    """w: the kNN part's weight; the repeat share gets 1 - w."""
    popularity: float
    """v: the weight of popularity normalised by its maximum."""


TUNED_BLEND_WEIGHTS: dict[Target, BlendWeights] = {
    "all": BlendWeights(knn=0.0, popularity=0.05),
    "new": BlendWeights(knn=1.0, popularity=0.0),
}
"""Weights tuned on validation with models fitted on train; for new items the
blend ranks as item-kNN does, since no item has a repeat share there."""


def _order_then_by(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Return row scores that order by ``primary``, then by ``secondary``.

    Both order higher first; ``secondary`` holds non-negative integers. The result
    is exact: a row's distinct primary values become dense integer ranks.
    """
    by_primary = np.argsort(primary, axis=1, kind="stable")
    ascending = np.take_along_axis(primary, by_primary, axis=1)
    dense_rank = np.zeros(primary.shape, dtype=np.int32)
    rises = ascending[:, 1:] > ascending[:, :-1]
    np.cumsum(rises, axis=1, dtype=np.int32, out=dense_rank[:, 1:])
    primary_rank = np.empty(primary.shape, dtype=np.float64)
    np.put_along_axis(primary_rank, by_primary, dense_rank, axis=1)
    return primary_rank * (secondary.max(initial=0.0) + 1.0) + secondary


@dataclass
class Blend:
    """Blend the repeat share, normalised kNN and normalised popularity.

    The score is ``(1 - w) * repeat share + w * kNN / max kNN + v * popularity /
    max popularity``, where the repeat share is the fraction of the customer's
    history baskets holding the item and the kNN maximum is the case's own.
    Equal scores go to the item bought most recently.
    """

    weights: dict[Target, BlendWeights] = field(
        default_factory=lambda: dict(TUNED_BLEND_WEIGHTS)
    )
    """Weights per target."""
    knn: ItemKnn = field(default_factory=ItemKnn)
    """The item-kNN whose neighbour scores are blended."""
    name: str = "blend"
    popularity: np.ndarray | None = field(default=None, init=False, repr=False)

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        """Fit the kNN part and the popularity on baskets before ``before``."""
        self.knn.fit(log, before)
        self.popularity = recent_popularity(log, before, self.knn.window)

    def score(self, cases: CaseBatch) -> np.ndarray:
        """Blend the three parts with the weights of the cases' target."""
        popularity = _require_fitted(self.popularity, self.name)
        weights = self.weights[cases.target]

        repeat_share = cases.purchase_counts.toarray() / np.maximum(
            cases.history_length[:, None], 1
        )
        blended = (1.0 - weights.knn) * repeat_share
        if weights.knn:
            neighbours = self.knn.neighbour_scores(cases)
            row_max = neighbours.max(axis=1, keepdims=True)
            blended += weights.knn * neighbours / np.where(row_max > 0, row_max, 1.0)
        if weights.popularity:
            blended += weights.popularity * popularity / max(popularity.max(), 1.0)
        return _order_then_by(blended, cases.last_purchase.toarray())


def protocol_baselines() -> list[Recommender]:
    """Return the four baselines with the protocol's settings."""
    return [Popularity(), PersonalRepeat(), ItemKnn(), Blend()]

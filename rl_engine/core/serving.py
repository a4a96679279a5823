"""Serve one slate: encode a customer's history, score, explore with propensities.

Nothing here touches the database. The Django layer reads the customer's
baskets and the eligible catalogue, and writes the slate log.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import scipy.sparse as sp

from rl_engine.core.protocol import BasketLog, ItemVocabulary
from rl_engine.core.states import StateBatch

ExplorationKind = Literal["softmax", "epsilon_greedy", "greedy"]

CUT_SAMPLE = 10_000
"""Scores sampled to find where the best candidates start."""


@dataclass(frozen=True)
class Basket:
    """One past basket of the customer: product ids and when it was bought."""

    item_ids: Sequence[str]
    time: np.datetime64


def customer_history(
    vocabulary: ItemVocabulary, baskets: Sequence[Basket], now: np.datetime64
) -> tuple[BasketLog, sp.csr_array, np.ndarray]:
    """Return a one-customer log, its history row and the state time.

    Products the policy does not know (added after it was trained) are left
    out of the history; baskets left empty are dropped.
    """
    ordered = [
        basket
        for basket in sorted(baskets, key=lambda basket: basket.time)
        if basket.time <= now
    ]
    distinct = [sorted(set(basket.item_ids)) for basket in ordered]
    basket_of = np.repeat(
        np.arange(len(distinct)),
        np.array([len(items) for items in distinct], dtype=np.int64),
    )
    wanted = np.array([item for items in distinct for item in items], dtype=object)
    columns, known = _positions(vocabulary.ids, wanted)
    # Baskets left with no known product drop out; the rest keep their order.
    kept, rows = np.unique(basket_of[known], return_inverse=True)
    columns = columns[known]

    n_kept = len(kept)
    items = sp.csr_array(
        (np.ones(len(columns)), (rows, columns)), shape=(n_kept, len(vocabulary))
    )
    log = BasketLog(
        basket_ids=np.array([f"history:{n}" for n in range(n_kept)], dtype=object),
        customer_ids=np.full(n_kept, "customer", dtype=object),
        customer_codes=np.zeros(n_kept, dtype=np.int64),
        times=np.array([ordered[i].time for i in kept], dtype="datetime64[s]"),
        items=items,
        vocabulary=vocabulary,
    )
    history = sp.csr_array(
        (
            np.arange(1, n_kept + 1, dtype=np.float64),
            np.arange(n_kept),
            np.array([0, n_kept]),
        ),
        shape=(1, n_kept),
    )
    return log, history, np.array([now], dtype="datetime64[s]")


def _positions(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return each wanted id's index in the sorted ``ids``, and whether it is there.

    A binary search per wanted id: a request costs the size of the customer's
    history, not of the catalogue.
    """
    if len(ids) == 0:
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), bool)
    positions = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return positions.astype(np.int64), np.asarray(ids[positions] == wanted, bool)


@dataclass(frozen=True)
class Slate:
    """Picked item indexes, best first, with each pick's probability and reason."""

    items: np.ndarray
    scores: np.ndarray
    propensities: np.ndarray
    reasons: list[str]


def pick_slate(
    scores: np.ndarray,
    eligible: np.ndarray,
    k: int,
    *,
    kind: ExplorationKind,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    candidates: int = 200,
    rng: np.random.Generator,
) -> Slate:
    """Pick ``k`` eligible items from ``scores``, exploring, with propensities.

    Exploration works on the ``candidates`` best eligible items. Softmax samples
    positions one after another without replacement (Plackett-Luce), so the
    propensity of a pick is its probability among the items still left when it
    was picked. Epsilon-greedy takes the best item left, or with probability
    epsilon a uniformly random one. A pick is labelled ``model`` when it is the
    best item left and ``exploration`` otherwise.
    """
    pool = best_candidates(scores, eligible, candidates)
    k = min(k, len(pool))

    picks, propensities, reasons = [], [], []
    left = list(pool)
    for _ in range(k):
        left_scores = scores[left]
        best = int(np.argmax(left_scores))
        if kind == "softmax":
            logits = (left_scores - left_scores.max()) / max(temperature, 1e-6)
            probabilities = np.exp(logits)
            probabilities /= probabilities.sum()
            choice = int(rng.choice(len(left), p=probabilities))
            propensity = float(probabilities[choice])
        elif kind == "epsilon_greedy":
            explore = rng.random() < epsilon
            choice = int(rng.integers(len(left))) if explore else best
            propensity = epsilon / len(left) + (1.0 - epsilon) * (choice == best)
        else:
            choice, propensity = best, 1.0
        picks.append(left.pop(choice))
        propensities.append(max(propensity, np.finfo(np.float64).tiny))
        reasons.append("model" if choice == best else "exploration")
    items = np.array(picks, dtype=np.int64)
    return Slate(
        items=items,
        scores=scores[items].astype(np.float64),
        propensities=np.array(propensities),
        reasons=reasons,
    )


def best_candidates(
    scores: np.ndarray, eligible: np.ndarray, candidates: int
) -> np.ndarray:
    """Return the indexes of the ``candidates`` best eligible scores, best first.

    Equal scores keep index order; which of several items tied at the cut
    stay is unspecified, and an eligible item scored -inf may be left out.
    Nothing sorts or partitions the whole catalogue: a strided sample of the
    scores gives a cut that about four times ``candidates`` items reach, and
    the selection runs on those alone. When too few reach it (a sample
    unlike the rest), the selection runs on all of them.
    """
    if np.count_nonzero(eligible) <= candidates:
        pool = np.flatnonzero(eligible)
        return pool[np.argsort(-scores[pool], kind="stable")]

    masked = np.where(eligible, scores, -np.inf)
    stride = max(len(masked) // CUT_SAMPLE, 1)
    sample = np.sort(masked[::stride])
    above_cut = min(4 * candidates // stride, len(sample) - 1)
    pool = np.flatnonzero(masked >= sample[-1 - above_cut])
    if len(pool) < candidates:
        pool = np.arange(len(masked))
    if len(pool) > candidates:
        pool = pool[np.argpartition(-masked[pool], candidates - 1)[:candidates]]
    pool = np.sort(pool)
    pool = pool[eligible[pool]]
    return pool[np.argsort(-scores[pool], kind="stable")]


class StateEncoder(Protocol):
    """What ``state_of`` needs: ``DQNPolicy.encode``'s signature."""

    def __call__(
        self, log: BasketLog, history: sp.csr_array, times: np.ndarray
    ) -> StateBatch: ...


def state_of(
    policy_encode: StateEncoder,
    vocabulary: ItemVocabulary,
    baskets: Sequence[Basket],
    now: np.datetime64,
) -> StateBatch | None:
    """Encode the customer's state, or None when no basket is known (cold start)."""
    log, history, times = customer_history(vocabulary, baskets, now)
    if log.n_baskets == 0:
        return None
    return policy_encode(log, history, times)

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
    known = set(vocabulary.ids.tolist())
    kept = [
        (sorted(set(basket.item_ids) & known), basket.time)
        for basket in sorted(baskets, key=lambda basket: basket.time)
    ]
    kept = [(items, time) for items, time in kept if items and time <= now]
    rows = np.repeat(np.arange(len(kept)), [len(items) for items, _ in kept])
    columns = (
        vocabulary.index_of([item for items, _ in kept for item in items])
        if kept
        else np.array([], dtype=np.int64)
    )
    items = sp.csr_array(
        (np.ones(len(columns)), (rows, columns)), shape=(len(kept), len(vocabulary))
    )
    log = BasketLog(
        basket_ids=np.array([f"history:{n}" for n in range(len(kept))], dtype=object),
        customer_ids=np.array(["customer"] * len(kept), dtype=object),
        customer_codes=np.zeros(len(kept), dtype=np.int64),
        times=np.array([time for _, time in kept], dtype="datetime64[s]"),
        items=items,
        vocabulary=vocabulary,
    )
    history = sp.csr_array(
        (
            np.arange(1, len(kept) + 1, dtype=np.float64),
            np.arange(len(kept)),
            np.array([0, len(kept)]),
        ),
        shape=(1, len(kept)),
    )
    return log, history, np.array([now], dtype="datetime64[s]")


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
    pool = np.flatnonzero(eligible)
    if len(pool) > candidates:
        pool = pool[np.argpartition(-scores[pool], candidates - 1)[:candidates]]
    pool = pool[np.argsort(-scores[pool], kind="stable")]
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

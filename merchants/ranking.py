"""The main parameters of ranking, and how much each weighs, read off the live policy.

The Q-network scores a product for a customer as a sum of parts (see
``rl_engine.core.qnetwork``)::

    Q = <state, projection(text)>      description match
      + <state, learned embedding>     learned product profile
      + item bias                      overall appeal
      + co-purchase head, split into   bought together | popularity
      + repeat head                    buying again

The co-purchase head reads the kNN co-occurrence inputs and the 30- and 7-day
popularity together; its *popularity* part is the head's value with the
co-occurrence inputs at zero (what a product no history item neighbours
gets), and *bought together* is the rest. The parts sum to the served score
exactly, by construction.

How much a part weighs is its share of the differences between products'
scores for one customer: ``cov(part, Q) / var(Q)`` over the eligible
products, which sums to one over the parts (a part can take a negative share
when it works against the others), averaged over recently active customers.
A part constant across products (anything of the customer alone) takes no
share: it cannot change an order.
"""

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, fields

import numpy as np
import torch
from django.db.models import Max
from django.utils import timezone

from commerce.models import Customer, EventKind, Product
from governance.explanations import customer_state
from rl_engine.core.policy import DQNPolicy
from rl_engine.core.qnetwork import CANDIDATE_FEATURES, QNetwork
from rl_engine.core.states import StateBatch
from rl_engine.core.trainer import to_tensors

logger = logging.getLogger(__name__)

SAMPLE_CUSTOMERS = 40
"""Latest buyers whose states the weights are averaged over."""
WEIGHTS_MAX_AGE_SECONDS = 3600.0
"""How long one process keeps the weights of a policy version."""
SCORED_CELLS = 1 << 21
"""Most (customers x products) cells each part is computed for at once."""


@dataclass(frozen=True)
class ScorePart:
    name: str
    label: str
    description: str
    personalised: bool
    """Whether it depends on the customer's own history."""


SCORE_PARTS = (
    ScorePart(
        "text",
        "Description match",
        "How closely the product's title and description, read by the text "
        "encoder, match the taste that the customer's recent purchases show.",
        True,
    ),
    ScorePart(
        "learned",
        "Learned product profile",
        "What training learned about the product from how customers responded "
        "to it, matched against the same taste.",
        True,
    ),
    ScorePart(
        "item_bias",
        "Overall appeal",
        "A number per product learned in training; the same for every customer.",
        False,
    ),
    ScorePart(
        "co_purchase",
        "Bought together",
        "How often the product is bought together with the products of the "
        "customer's last baskets and whole history.",
        True,
    ),
    ScorePart(
        "popularity",
        "Popularity",
        "How many baskets held the product over the last 30 days and the last "
        "7 days, across all customers.",
        False,
    ),
    ScorePart(
        "repeat",
        "Buying again",
        "For products the customer bought before: how often, how recently and "
        "how regularly they bought them.",
        True,
    ),
)


@dataclass(frozen=True)
class PartWeight:
    part: ScorePart
    share: float
    """Mean share of the score differences between products."""


@dataclass(frozen=True)
class RankingWeights:
    policy_version: str
    customers: int
    """Customers whose scores were split (those with no spread are left out)."""
    products: int
    """Eligible products ranked for each."""
    weights: list[PartWeight]
    computed_at: dt.datetime | None
    """None for ``popularity_only``, which is not computed."""


def popularity_only() -> RankingWeights:
    """With no live policy, every slate is ranked by popularity alone."""
    return RankingWeights(
        policy_version="",
        customers=0,
        products=0,
        weights=[
            PartWeight(part=part, share=float(part.name == "popularity"))
            for part in SCORE_PARTS
        ],
        computed_at=None,
    )


def score_parts(network: QNetwork, states: StateBatch) -> dict[str, np.ndarray]:
    """Split Q of every product for every state into ``SCORE_PARTS``.

    Returns (states x products) float64 arrays by part name, plus ``total``:
    the served score, ``QNetwork.score``. The parts sum to it exactly.
    """
    device = next(network.parameters()).device
    tensors = to_tensors(states, device)
    n = network.n_items
    with torch.no_grad():
        total = network.score(tensors)
        items = network.item_vectors()
        state = network.state_vectors(tensors, items)
        learned_vectors = network.item_embedding.weight[:n]
        text = state @ (items[:n] - learned_vectors).T
        learned = state @ learned_vectors.T
        bias = network.item_bias.expand(len(total), n)
        scales = network.gate(tensors["context"]).exp()

        # The head's value with no co-occurrence evidence: popularity alone.
        slot = tensors["popularity_slot"]
        popularity_inputs = torch.zeros(len(total), n, len(CANDIDATE_FEATURES))
        popularity_inputs = popularity_inputs.to(device)
        for name, table in (
            ("popularity", network.popularity),
            ("popularity_week", network.popularity_week),
        ):
            popularity_inputs[..., CANDIDATE_FEATURES.index(name)] = table[slot]
        popularity = network.cooccurrence_values(popularity_inputs) * scales[:, :1]

        repeat = torch.zeros(len(total), n + 1, device=device)
        repeat.scatter_add_(
            1, tensors["history_items"], network.repeat_values(tensors, scales)
        )
        repeat = repeat[:, :n]

    parts = {
        "text": text,
        "learned": learned,
        "item_bias": bias,
        "popularity": popularity,
        "repeat": repeat,
    }
    # Views of parameters (the bias expanded) may still require grad here.
    arrays = {
        name: part.detach().double().cpu().numpy() for name, part in parts.items()
    }
    arrays["total"] = total.detach().double().cpu().numpy()
    arrays["co_purchase"] = arrays["total"] - sum(arrays[name] for name in parts)
    return arrays


def variance_shares(
    parts: dict[str, np.ndarray], eligible: np.ndarray
) -> tuple[dict[str, float], int]:
    """Mean ``cov(part, total) / var(total)`` over the eligible products, per state.

    Returns the shares and how many states had any spread to share.
    """
    total = parts["total"][:, eligible]
    centred_total = total - total.mean(axis=1, keepdims=True)
    variance = (centred_total**2).mean(axis=1)
    spread = variance > 1e-12
    shares = {}
    for part in SCORE_PARTS:
        values = parts[part.name][:, eligible]
        centred = values - values.mean(axis=1, keepdims=True)
        covariance = (centred * centred_total).mean(axis=1)
        per_state = covariance[spread] / variance[spread]
        shares[part.name] = float(per_state.mean()) if per_state.size else 0.0
    return shares, int(spread.sum())


def _latest_buyers(limit: int) -> list[Customer]:
    return list(
        Customer.objects.filter(events__kind=EventKind.PURCHASE)
        .annotate(last=Max("events__occurred_at"))
        .order_by("-last", "id")[:limit]
    )


def _stack(states: list[StateBatch]) -> StateBatch:
    return StateBatch(
        **{
            f.name: np.concatenate([getattr(s, f.name) for s in states])
            for f in fields(StateBatch)
        }
    )


def compute_ranking_weights(
    policy: DQNPolicy, label: str, *, sample: int = SAMPLE_CUSTOMERS
) -> RankingWeights:
    """Weigh each part of the score for the latest buyers, as of now."""
    now = timezone.now()
    states = [
        state
        for customer in _latest_buyers(sample)
        if (state := customer_state(policy, customer, now)) is not None
    ]
    eligible_skus = set(
        Product.objects.filter(
            is_active=True, in_stock=True, merchant__is_active=True
        ).values_list("external_id", flat=True)
    )
    eligible = np.fromiter(
        (sku in eligible_skus for sku in policy.item_ids),
        dtype=bool,
        count=len(policy.item_ids),
    )
    totals = {part.name: 0.0 for part in SCORE_PARTS}
    counted = 0
    if states and eligible.sum() >= 2:
        batch = _stack(states)
        step = max(1, SCORED_CELLS // max(len(policy.item_ids), 1))
        for start in range(0, len(batch), step):
            rows = np.arange(start, min(start + step, len(batch)))
            shares, spread = variance_shares(
                score_parts(policy.network, batch.take(rows)), eligible
            )
            for name, share in shares.items():
                totals[name] += share * spread
            counted += spread
    return RankingWeights(
        policy_version=label,
        customers=counted,
        products=int(eligible.sum()),
        weights=[
            PartWeight(part=part, share=totals[part.name] / counted if counted else 0.0)
            for part in SCORE_PARTS
        ],
        computed_at=now,
    )


class _WeightsCache:
    """The weights of the live version, kept for ``WEIGHTS_MAX_AGE_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[str, float, RankingWeights] | None = None

    def get(self, policy: DQNPolicy, label: str) -> RankingWeights:
        with self._lock:
            entry = self._entry
            if (
                entry is not None
                and entry[0] == label
                and time.monotonic() - entry[1] < WEIGHTS_MAX_AGE_SECONDS
            ):
                return entry[2]
            started = time.perf_counter()
            weights = compute_ranking_weights(policy, label)
            self._entry = (label, time.monotonic(), weights)
        logger.info(
            "Weighed the ranking parts of %s over %d customers in %.1f s",
            label,
            weights.customers,
            time.perf_counter() - started,
            extra={"policy_version": label},
        )
        return weights

    def clear(self) -> None:
        with self._lock:
            self._entry = None


ranking_weights = _WeightsCache()

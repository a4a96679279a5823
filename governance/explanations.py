"""Why a product was or was not recommended, and why a slate went to a customer.

The Q-network scores a product ``a`` for a customer state ``s`` as

    Q(s, a) = <state(s), item(a)> + bias(a) + co-purchase and popularity head
              + repeat head (only when ``a`` is in the customer's history)

with ``item(a)`` the projection of the product's text vector plus a learned
embedding. Two attributions of one Q-value come out of it:

- Over the product (exact). The dot product splits exactly into the part
  through the product's text and the part through its learned embedding; the
  item bias is a parameter; the repeat head is what the score loses when the
  repeat inputs are zeroed, through the network's own forward; the co-purchase
  and popularity head is the remainder. These parts sum to the score up to
  float rounding.
- Over the customer's history (Integrated Gradients, captum, through the real
  network). The inputs are the GRU's per-event inputs, the candidate's
  co-purchase (kNN) features and the repeat features; the baseline is the same
  customer context (basket count, days since first and last purchase) with no
  history items: zero GRU inputs, no co-purchase evidence, no repeat inputs.
  Captum's convergence delta is the method's error: the attributions plus the
  baseline score equal the score up to it. Each history event's GRU
  attribution goes to its product; each kNN feature's attribution is split over
  the seed products in proportion to their share of the similarity sum (the
  feature is that sum over a per-state constant, so the split is exact for the
  raw feature and a convention for its logarithm); the repeat attribution
  belongs to the product itself.

Both run through ``QNetwork.forward``, the differentiable training pass; its
Q-values agree with serving's ``QNetwork.score`` to float32 rounding.

Merchant-facing results (``why_recommended``, ``why_not``) name no customer,
and an attribution shown to a merchant names only that merchant's products of
the customer's history: the others are pooled into one unnamed part, so that no
merchant learns another's products' role in a basket, nor a whole basket.
``explain_slate`` is for staff and names every product. Every result is a
dataclass with ``to_dict()`` giving JSON-ready values.
"""

import copy
import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients
from django.db.models import (
    Case,
    CharField,
    Count,
    DateTimeField,
    Exists,
    F,
    IntegerField,
    Max,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from torch import nn

from commerce.models import (
    Customer,
    EventKind,
    FeedbackEvent,
    Product,
    ServedSlate,
    ServedSlateItem,
)
from governance.errors import GovernanceError
from governance.models import Override
from governance.selectors import SlateConstraints, customer_groups, slate_constraints
from rl_engine.core.policy import DQNPolicy
from rl_engine.core.protocol import ItemVocabulary
from rl_engine.core.qnetwork import CANDIDATE_FEATURES, QNetwork
from rl_engine.core.serving import Basket, state_of
from rl_engine.core.states import REPEAT_FEATURES, StateBatch
from rl_engine.core.trainer import to_tensors
from rl_engine.models import PolicyVersion, ProductEmbedding
from rl_engine.selectors import embedding_model_name
from rl_engine.services import load_policy
from rl_engine.serving import local_now

logger = logging.getLogger(__name__)

INTEGRATION_STEPS = 64
"""Gauss-Legendre steps of Integrated Gradients; the delta is reported anyway."""

INTEGRATION_CELLS = 1 << 20
"""Most (steps x products) Q-values one integration pass computes at once."""

SEEDED_FEATURES: dict[str, str] = {
    "knn_recent": "recent",
    "log_knn_recent": "recent",
    "knn_last_basket": "in_last_basket",
    "knn_history": "basket_share",
}
"""Co-purchase features that come from the customer's history, by the seed
weights behind them. Candidate features not named here (popularity) are not
history and stay at their value in the baseline."""

HISTORY_KIND_LIMITS = ((0, "new"), (1, "1 basket"), (5, "2-5 baskets"))
"""Kinds of history by the most purchase baskets they hold; more is ``LONG_HISTORY``."""
LONG_HISTORY = "6+ baskets"
ANONYMOUS = "anonymous"
HISTORY_KINDS = (ANONYMOUS, *(label for _, label in HISTORY_KIND_LIMITS), LONG_HISTORY)


class ExplanationError(GovernanceError):
    """An explanation cannot be given for this product, slate or policy."""

    code = "explanation_unavailable"


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON values (numbers, strings, lists, mappings)."""
        return asdict(self)  # type: ignore[call-overload]


# --- Results -----------------------------------------------------------------


@dataclass(frozen=True)
class HistoryItemAttribution(_Serialisable):
    """What one product of the customer's history adds to the explained score."""

    sku: str
    title: str
    contribution: float
    """``sequence + co_purchase + repeat``."""
    sequence: float
    """Through the customer's taste vector (the GRU over recent purchases)."""
    co_purchase: float
    """Through how often it is bought together with the explained product."""
    repeat: float
    """Through having bought the explained product itself before."""


@dataclass(frozen=True)
class PooledHistoryAttribution(_Serialisable):
    """What the history's products of other merchants add, together and unnamed."""

    label: str
    contribution: float
    """``sequence + co_purchase + repeat``."""
    sequence: float
    co_purchase: float
    repeat: float


OTHER_MERCHANTS_LABEL = "products of other merchants"


@dataclass(frozen=True)
class ScoreComponents(_Serialisable):
    """The exact split of a Q-value over the parts of the network."""

    text: float
    """``<state, projection(text)>``: the product's description."""
    learned_embedding: float
    """``<state, embedding>``: what training learned about the product's id."""
    item_bias: float
    co_purchase_and_popularity: float
    repeat: float
    total: float
    """Their sum; equals the score up to float rounding."""


@dataclass(frozen=True)
class ScoreAttribution(_Serialisable):
    """Q(s, a) of one product for one customer state, attributed."""

    sku: str
    score: float
    """The Q-value explained, as serving computes it before governance."""
    method: str
    baseline: str
    baseline_score: float
    """Q with the same context and no history items."""
    attribution_sum: float
    """Sum of every history attribution: ``score - baseline_score`` up to the
    convergence delta."""
    convergence_delta: float
    """Captum's completeness error: ``attribution_sum - (score - baseline_score)``."""
    history: list[HistoryItemAttribution]
    """Products of the history, largest contribution (by size) first."""
    unassigned: float
    """Attribution left with no seed product to carry it (zero but for
    rounding), plus the products past the ones listed."""
    components: ScoreComponents
    other_merchants: PooledHistoryAttribution | None = None
    """For a merchant: the history's products of other merchants, pooled. None
    when every product is named. ``history`` + ``other_merchants`` +
    ``unassigned`` sum to ``attribution_sum``."""


@dataclass(frozen=True)
class ShareCount(_Serialisable):
    label: str
    count: int
    share: float


@dataclass(frozen=True)
class Audience(_Serialisable):
    """Who was shown a product, from the slate log."""

    shown: int
    since: str | None
    countries: list[ShareCount]
    history_kinds: list[ShareCount]
    """By the customer's purchase baskets before the slate: ``HISTORY_KINDS``."""
    bought_before: list[ShareCount]
    """Whether the customer had bought this product before the slate."""
    reasons: list[ShareCount]
    """Why it was in the slate: model, exploration, boost, fallback."""


@dataclass(frozen=True)
class NeighbourProduct(_Serialisable):
    sku: str
    title: str
    cosine: float


@dataclass(frozen=True)
class WhyRecommended(_Serialisable):
    sku: str
    title: str
    audience: Audience
    attribution: ScoreAttribution | None
    attribution_basis: str
    """Whose score is attributed, or why there is no attribution."""
    nearest: list[NeighbourProduct]
    """The products whose text vectors are closest (cosine), active ones only."""


@dataclass(frozen=True)
class OverrideInForce(_Serialisable):
    """A governance override that removes the product, as merchants see it."""

    override_id: int
    kind: str
    reason_code: str
    reason: str
    statement: str
    scope: str
    expires_at: str | None


@dataclass(frozen=True)
class RankSummary(_Serialisable):
    """Where the product ranks among the eligible products, greedily."""

    k: int
    basis: str
    customers: int
    """Customers whose states were scored."""
    eligible: int
    """Products that could be shown to the representative customer."""
    rank: int
    """1-based rank for the representative customer, governance applied."""
    rank_without_governance: int
    score: float
    last_shown_score: float
    """Score of the last item the greedy slate of ``k`` would show."""
    score_gap: float
    """``last_shown_score - score``: how far the product is from being shown."""
    median_rank: float
    best_rank: int
    worst_rank: int
    share_shown: float
    """Share of the scored customers whose greedy slate would hold it."""
    constraints: list[str]
    """Overrides that changed its score or place (``demote #5``)."""


@dataclass(frozen=True)
class WhyNot(_Serialisable):
    sku: str
    title: str
    customer_groups: dict[str, str]
    reason: str
    """The first cause in serving's order: ``product_inactive``,
    ``out_of_stock``, ``merchant_inactive``, ``not_in_policy``, ``suppressed``,
    ``cap_reached``, ``no_policy``, ``no_history_in_group``, ``ranked_below``
    or ``ranked_in_top_k``."""
    message: str
    other_blockers: list[str]
    """Later causes that would remove it too, once the first is gone."""
    override: OverrideInForce | None
    ranking: RankSummary | None


@dataclass(frozen=True)
class HistorySummary(_Serialisable):
    baskets: int
    products: int
    first_purchase: str | None
    last_purchase: str | None
    last_basket: list[str]
    """SKUs of the last basket, at most ten."""


@dataclass(frozen=True)
class SlateItemExplanation(_Serialisable):
    position: int
    sku: str
    title: str
    score: float
    """As logged: the Q-value after governance multipliers, or a popularity."""
    propensity: float
    reason: str
    constraint: str | None
    """The override on this product in force when the slate was served."""
    recomputed_score: float | None
    """Q from the slate's policy version and the history at the serve time."""
    attribution: ScoreAttribution | None


@dataclass(frozen=True)
class SlateExplanation(_Serialisable):
    slate_id: str
    served_at: str
    logged_at: str
    customer: str | None
    session_id: str
    customer_groups: dict[str, str]
    history: HistorySummary | None
    policy_version: str
    k: int
    items: list[SlateItemExplanation]
    notes: list[str]
    """What the explanation approximates."""


# --- Pure math ---------------------------------------------------------------


def split_in_proportion(
    total: float, keys: Sequence[int], weights: Sequence[float]
) -> tuple[dict[int, float], float]:
    """Split ``total`` over ``keys`` in proportion to ``weights``.

    Repeated keys add up; keys of zero weight get nothing. Returns the shares
    and what could not be split (all of ``total`` when the weights sum to zero).
    """
    weight_sum = float(np.sum(weights)) if len(weights) else 0.0
    if weight_sum == 0.0:
        return {}, total
    shares: dict[int, float] = defaultdict(float)
    for key, weight in zip(keys, weights, strict=True):
        if weight:
            shares[int(key)] += total * float(weight) / weight_sum
    return dict(shares), 0.0


def cosine_neighbours(
    query: np.ndarray, vectors: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """Return the ``k`` rows of ``vectors`` most cosine-similar to ``query``."""
    if len(vectors) == 0 or k <= 0:
        return []
    norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    cosines = vectors @ query / np.maximum(norms, 1e-12)
    k = min(k, len(vectors))
    top = np.argpartition(-cosines, k - 1)[:k]
    top = top[np.argsort(-cosines[top], kind="stable")]
    return [(int(row), float(cosines[row])) for row in top]


def history_kind(baskets: int | None) -> str:
    """Bucket a customer by their purchase baskets (None: no customer)."""
    if baskets is None:
        return ANONYMOUS
    return next(
        (label for most, label in HISTORY_KIND_LIMITS if baskets <= most),
        LONG_HISTORY,
    )


def greedy_rank(
    scores: np.ndarray, eligible: np.ndarray, index: int, slots: int
) -> tuple[int, float, int]:
    """Rank item ``index`` among the eligible items, best first (1-based).

    Returns the rank, the score of the last of ``slots`` greedy picks (the
    lowest eligible score when fewer are eligible), and how many are eligible.
    Ties rank the item after the others, as a stable sort may.
    """
    pool = scores[eligible & (np.arange(len(scores)) != index)]
    rank = int(np.sum(pool >= scores[index])) + 1
    ordered = np.sort(scores[eligible])[::-1]
    if len(ordered) == 0 or slots <= 0:
        return rank, float("inf"), len(ordered)
    return rank, float(ordered[min(slots, len(ordered)) - 1]), len(ordered)


def share_counts(
    counts: Mapping[str, int], order: Iterable[str] = ()
) -> list[ShareCount]:
    """Return counts with their shares, in ``order`` and then by count."""
    total = sum(counts.values())
    known = [label for label in order if counts.get(label)]
    rest = sorted(
        (label for label in counts if label not in known and counts[label]),
        key=lambda label: (-counts[label], label),
    )
    return [
        ShareCount(label=label, count=counts[label], share=counts[label] / total)
        for label in [*known, *rest]
    ]


# --- Attribution through the network -------------------------------------------


@dataclass(frozen=True)
class IndexAttribution:
    """``attribute_q_value``'s answer, by item index (no catalogue needed)."""

    item: int
    score: float
    baseline_score: float
    attribution_sum: float
    convergence_delta: float
    sequence: dict[int, float]
    co_purchase: dict[int, float]
    repeat: dict[int, float]
    unassigned: float
    components: ScoreComponents
    n_steps: int


class _InjectedGruInput(nn.Module):
    """Runs the GRU on a given input instead of the one computed upstream."""

    def __init__(self, gru: nn.Module) -> None:
        super().__init__()
        self.gru = gru
        self.substitute: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor, *args: Any) -> Any:
        self.seen = inputs.detach()
        return self.gru(inputs if self.substitute is None else self.substitute, *args)


def _explainable_copy(network: QNetwork) -> tuple[QNetwork, _InjectedGruInput]:
    """Return a copy sharing every tensor, whose GRU input can be replaced.

    The copy keeps the live network untouched, so serving threads that share
    it never see the substitution. Its module tree and buffer tables are new;
    parameters, buffers and plain attributes (config, scoring tables) are
    shared, never copied.
    """
    shared: dict[int, Any] = {
        id(value): value
        for value in vars(network).values()
        if not isinstance(value, dict | nn.Module)
    }
    shared.update({id(t): t for t in [*network.parameters(), *network.buffers()]})
    explained = copy.deepcopy(network, memo=shared)
    injected = _InjectedGruInput(explained.gru)
    setattr(explained, "gru", injected)  # noqa: B010 - the attribute is typed nn.GRU
    explained.eval()
    return explained, injected


def attribute_q_value(
    network: QNetwork,
    states: StateBatch,
    item: int,
    *,
    n_steps: int = INTEGRATION_STEPS,
) -> IndexAttribution:
    """Attribute Q(state, item) of a one-state batch; see the module's docstring."""
    if len(states) != 1:
        raise ValueError(f"Attribute one state at a time, not {len(states)}.")
    explained, injected = _explainable_copy(network)
    n_items = max(network.n_items, 1)
    device = next(network.parameters()).device
    tensors = to_tensors(states, device)

    with torch.no_grad():
        # The copy builds its own dense similarity here, as training does, and
        # frees it with the copy. Known limit: it is (n_items x n_items), so
        # past some tens of thousands of products this needs the sparse
        # neighbour sums that ``QNetwork.score`` reads.
        features = explained.candidate_features(tensors)
        score = float(explained(tensors, features)[0, item])
        assert injected.seen is not None
        gru_inputs = injected.seen.clone()
    feature_baseline = features.clone()
    for column, name in enumerate(CANDIDATE_FEATURES):
        if name in SEEDED_FEATURES:
            feature_baseline[..., column] = 0.0
    repeat_inputs = tensors["repeat_features"]

    def q_of_item(
        gru_input: torch.Tensor, feature: torch.Tensor, repeat: torch.Tensor
    ) -> torch.Tensor:
        n = len(gru_input)
        batch = {name: t.expand(n, *t.shape[1:]) for name, t in tensors.items()}
        batch["repeat_features"] = repeat
        injected.substitute = gru_input
        return explained(batch, feature)[:, item]

    baselines = (
        torch.zeros_like(gru_inputs),
        feature_baseline,
        torch.zeros_like(repeat_inputs),
    )
    # cuDNN computes an RNN's backward pass only in training mode.
    with torch.backends.cudnn.flags(enabled=False):
        (gru_attr, feature_attr, repeat_attr), delta = IntegratedGradients(
            q_of_item
        ).attribute(
            (gru_inputs, features, repeat_inputs),
            baselines=baselines,
            n_steps=n_steps,
            method="gausslegendre",
            internal_batch_size=max(1, min(n_steps, INTEGRATION_CELLS // n_items)),
            return_convergence_delta=True,
        )
        with torch.no_grad():
            baseline_score = float(q_of_item(*baselines)[0])
    injected.substitute = None

    sequence = _by_item(
        states.sequence_items[0], gru_attr[0].sum(dim=-1), network.n_items
    )
    repeat = _by_item(
        states.history_items[0], repeat_attr[0].sum(dim=-1), network.n_items
    )
    co_purchase = _split_co_purchase(
        network, states, item, feature_attr[0, item].double().cpu().numpy()
    )
    attribution_sum = float(
        sum(part.double().sum() for part in (gru_attr, feature_attr, repeat_attr))
    )
    return IndexAttribution(
        item=item,
        score=score,
        baseline_score=baseline_score,
        attribution_sum=attribution_sum,
        convergence_delta=float(delta.reshape(-1)[0]),
        sequence=sequence,
        co_purchase=co_purchase,
        repeat=repeat,
        # Attribution of co-purchase features with no seed to carry it.
        unassigned=attribution_sum
        - sum(sequence.values())
        - sum(co_purchase.values())
        - sum(repeat.values()),
        components=score_components(network, tensors, features, item, score),
        n_steps=n_steps,
    )


def _by_item(
    items: np.ndarray, attributions: torch.Tensor, pad: int
) -> dict[int, float]:
    totals: dict[int, float] = defaultdict(float)
    for index, value in zip(items, attributions.double().cpu().numpy(), strict=True):
        if index < pad:
            totals[int(index)] += float(value)
    return dict(totals)


def _split_co_purchase(
    network: QNetwork, states: StateBatch, item: int, attributions: np.ndarray
) -> dict[int, float]:
    """Split each seeded kNN feature's attribution over its seed products."""
    kept = network.config.history_seed_items
    history_items = states.history_items[0, :kept]
    seeds = {
        "recent": (states.recent_items[0], states.recent_counts[0]),
        "in_last_basket": (
            history_items,
            states.repeat_features[0, :kept, REPEAT_FEATURES.index("in_last_basket")],
        ),
        "basket_share": (
            history_items,
            states.repeat_features[0, :kept, REPEAT_FEATURES.index("basket_share")],
        ),
    }
    similarity = _similarity_to(network, item)
    totals: dict[int, float] = defaultdict(float)
    for column, name in enumerate(CANDIDATE_FEATURES):
        if name not in SEEDED_FEATURES:
            continue
        seed_items, weights = seeds[SEEDED_FEATURES[name]]
        present = seed_items < network.n_items
        seed_items = seed_items[present]
        shares, _ = split_in_proportion(
            float(attributions[column]),
            seed_items.tolist(),
            (weights[present] * similarity[seed_items]).tolist(),
        )
        for key, value in shares.items():
            totals[key] += value
    return dict(totals)


def _similarity_to(network: QNetwork, item: int) -> np.ndarray:
    """Return (n_items,) every product's similarity weight towards ``item``."""
    rows, columns = network.similarity_indices.cpu().numpy()
    values = network.similarity_values.double().cpu().numpy()
    column = np.zeros(network.n_items)
    towards = columns == item
    np.add.at(column, rows[towards], values[towards])
    return column


def score_components(
    network: QNetwork,
    tensors: dict[str, torch.Tensor],
    features: torch.Tensor,
    item: int,
    score: float,
) -> ScoreComponents:
    """Split Q(state, item) exactly over the network's parts (one state)."""
    with torch.no_grad():
        items = network.item_vectors()
        state = network.state_vectors(tensors, items)[0].double()
        learned_vector = network.item_embedding.weight[item].double()
        text = float(state @ (items[item].double() - learned_vector))
        learned = float(state @ learned_vector)
        bias = float(network.item_bias[item])
        no_repeat = dict(tensors)
        no_repeat["repeat_features"] = torch.zeros_like(tensors["repeat_features"])
        repeat = score - float(network(no_repeat, features)[0, item])
    co_purchase = score - text - learned - bias - repeat
    return ScoreComponents(
        text=text,
        learned_embedding=learned,
        item_bias=bias,
        co_purchase_and_popularity=co_purchase,
        repeat=repeat,
        total=text + learned + bias + co_purchase + repeat,
    )


def _method_label(n_steps: int) -> str:
    return (
        f"Integrated Gradients (captum {package_version('captum')}, {n_steps} "
        "Gauss-Legendre steps) through the Q-network for the history; exact "
        "split of the dot product, item bias and heads for the components"
    )


BASELINE_LABEL = (
    "the same customer context (basket count, days since first and last "
    "purchase) with no history items"
)


# --- Reads behind the explanations ---------------------------------------------


def purchase_baskets(customer: Customer, before: dt.datetime) -> list[Basket]:
    """Return the customer's purchase baskets before a moment, oldest first.

    As serving groups them: the lines of an order, or of one moment for
    purchases sent without an order. Serving's own reader is tuned for request
    latency and is read here only through what it shares, this grouping; the
    two belong in one selector once that reader settles.
    """
    rows = (
        FeedbackEvent.objects.filter(
            customer=customer, kind=EventKind.PURCHASE, occurred_at__lt=before
        )
        .order_by("occurred_at", "id")
        .values_list("order_id", "product__external_id", "occurred_at")
    )
    baskets: dict[str, tuple[list[str], dt.datetime]] = {}
    for order, sku, moment in rows:
        skus, _ = baskets.setdefault(order or f"at:{moment.isoformat()}", ([], moment))
        skus.append(sku)
    return [
        Basket(item_ids=skus, time=local_now(moment))
        for skus, moment in baskets.values()
    ]


def customer_state(
    policy: DQNPolicy, customer: Customer, at: dt.datetime
) -> StateBatch | None:
    """Encode the customer's state as serving would at ``at``; None if no history."""
    return state_of(
        policy.encode,
        ItemVocabulary(ids=policy.item_ids),
        purchase_baskets(customer, at),
        local_now(at),
    )


def policy_index(policy: DQNPolicy, sku: str) -> int | None:
    """The SKU's item index in the policy, or None when it was not trained on."""
    position = int(np.searchsorted(policy.item_ids, sku))
    if position < len(policy.item_ids) and policy.item_ids[position] == sku:
        return position
    return None


def _titles_and_merchants(
    skus: Iterable[str],
) -> tuple[dict[str, str], dict[str, int]]:
    """Each SKU's title and its merchant's id, for the SKUs in the catalogue."""
    rows = list(
        Product.objects.filter(external_id__in=list(set(skus))).values_list(
            "external_id", "title", "merchant_id"
        )
    )
    return (
        {sku: title for sku, title, _ in rows},
        {sku: merchant_id for sku, _, merchant_id in rows},
    )


def pooled(
    parts: Sequence[HistoryItemAttribution], label: str
) -> PooledHistoryAttribution:
    """Add up history parts into one unnamed part."""
    return PooledHistoryAttribution(
        label=label,
        contribution=sum(part.contribution for part in parts),
        sequence=sum(part.sequence for part in parts),
        co_purchase=sum(part.co_purchase for part in parts),
        repeat=sum(part.repeat for part in parts),
    )


def explain_score(
    policy: DQNPolicy,
    states: StateBatch,
    sku: str,
    *,
    top_history: int = 10,
    n_steps: int = INTEGRATION_STEPS,
    for_merchant: int | None = None,
) -> ScoreAttribution:
    """Attribute the policy's Q-value of ``sku`` for one encoded state.

    With ``for_merchant`` (a merchant's id), the history's products of every
    other merchant are pooled into ``other_merchants`` and not named.
    """
    item = policy_index(policy, sku)
    if item is None:
        raise ExplanationError(f"The policy was not trained on {sku}.")
    raw = attribute_q_value(policy.network, states, item, n_steps=n_steps)
    touched = set(raw.sequence) | set(raw.co_purchase) | set(raw.repeat)
    skus = {index: str(policy.item_ids[index]) for index in touched}
    titles, merchants = _titles_and_merchants(skus.values())
    history = sorted(
        (
            HistoryItemAttribution(
                sku=skus[index],
                title=titles.get(skus[index], ""),
                contribution=raw.sequence.get(index, 0.0)
                + raw.co_purchase.get(index, 0.0)
                + raw.repeat.get(index, 0.0),
                sequence=raw.sequence.get(index, 0.0),
                co_purchase=raw.co_purchase.get(index, 0.0),
                repeat=raw.repeat.get(index, 0.0),
            )
            for index in touched
        ),
        key=lambda part: (-abs(part.contribution), part.sku),
    )
    other_merchants = None
    if for_merchant is not None:
        # A SKU no longer in the catalogue is pooled with the other merchants'.
        own = {key for key, owner in merchants.items() if owner == for_merchant}
        other_merchants = pooled(
            [part for part in history if part.sku not in own], OTHER_MERCHANTS_LABEL
        )
        history = [part for part in history if part.sku in own]
    shown, hidden = history[:top_history], history[top_history:]
    return ScoreAttribution(
        sku=sku,
        score=raw.score,
        method=_method_label(raw.n_steps),
        baseline=BASELINE_LABEL,
        baseline_score=raw.baseline_score,
        attribution_sum=raw.attribution_sum,
        convergence_delta=raw.convergence_delta,
        history=shown,
        # Products past ``top_history`` join the unassigned rest, so the parts
        # shown still add up to the attribution sum.
        unassigned=raw.unassigned + sum(part.contribution for part in hidden),
        components=raw.components,
        other_merchants=other_merchants,
    )


def _serve_moment() -> Coalesce:
    """When a slate was served: its ``as_of`` for replays, else when logged."""
    return Coalesce(
        Cast(KeyTextTransform("as_of", "slate__context"), DateTimeField()),
        F("slate__created_at"),
    )


def exposure_audience(
    product: Product, *, since: dt.datetime | None = None
) -> Audience:
    """Aggregate the slates that showed ``product`` by who saw them.

    A customer's history is counted in distinct orders purchased before the
    slate's serve moment (its ``as_of`` for replays); purchases sent without
    an order count as one basket together.
    """
    shown = ServedSlateItem.objects.filter(product=product)
    if since is not None:
        shown = shown.filter(slate__created_at__gte=since)
    purchases = FeedbackEvent.objects.filter(
        customer=OuterRef("slate__customer"),
        kind=EventKind.PURCHASE,
        occurred_at__lt=OuterRef("served_at"),
    )
    baskets = (
        purchases.order_by()
        .values("customer")
        .annotate(n=Count("order_id", distinct=True))
        .values("n")
    )
    rows = shown.annotate(served_at=_serve_moment()).annotate(
        baskets=Coalesce(Subquery(baskets, output_field=IntegerField()), 0),
        bought_before=Exists(purchases.filter(product=product)),
        # history_kind, in SQL.
        kind=Case(
            When(slate__customer__isnull=True, then=Value(ANONYMOUS)),
            *(
                When(baskets__lte=most, then=Value(label))
                for most, label in HISTORY_KIND_LIMITS
            ),
            default=Value(LONG_HISTORY),
            output_field=CharField(),
        ),
    )

    def counted(queryset: QuerySet[Any], column: str) -> dict[str, int]:
        return {
            str(label): n
            for label, n in queryset.order_by()
            .values_list(column)
            .annotate(n=Count("id"))
        }

    countries = counted(
        rows.annotate(
            group=Case(
                When(slate__customer__isnull=True, then=Value(ANONYMOUS)),
                When(slate__customer__country="", then=Value("unknown")),
                default=F("slate__customer__country"),
                output_field=CharField(),
            )
        ),
        "group",
    )
    bought = counted(
        rows.filter(slate__customer__isnull=False).annotate(
            bought=Case(
                When(bought_before=True, then=Value("bought it before")),
                default=Value("never bought it"),
                output_field=CharField(),
            )
        ),
        "bought",
    )
    return Audience(
        shown=sum(countries.values()),
        since=since.isoformat() if since else None,
        countries=share_counts(countries),
        history_kinds=share_counts(counted(rows, "kind"), HISTORY_KINDS),
        bought_before=share_counts(bought, ("bought it before", "never bought it")),
        reasons=share_counts(counted(shown, "reason")),
    )


def text_neighbours(
    product: Product, *, k: int = 5, merchant_id: int | None = None
) -> list[NeighbourProduct]:
    """Return the active products whose stored text vectors are nearest, among
    ``merchant_id``'s products when given.

    Every stored vector of the current model is read: fine for catalogues of
    tens of thousands; an approximate-nearest-neighbour index would serve more.
    """
    model = embedding_model_name()
    own = ProductEmbedding.objects.filter(
        model_name=model, text_hash=product.text_hash
    ).first()
    if own is None:
        return []
    scope = Product.objects.filter(is_active=True)
    if merchant_id is not None:
        scope = scope.filter(merchant_id=merchant_id)
    others = list(
        scope.exclude(pk=product.pk).values_list("external_id", "title", "text_hash")
    )
    vectors = {
        text_hash: vector
        for text_hash, vector in ProductEmbedding.objects.filter(
            model_name=model, text_hash__in={row[2] for row in others}
        ).values_list("text_hash", "vector")
    }
    candidates = [row for row in others if row[2] in vectors]
    if not candidates:
        return []
    matrix = np.vstack(
        [np.frombuffer(bytes(vectors[row[2]]), dtype="<f4") for row in candidates]
    )
    return [
        NeighbourProduct(
            sku=candidates[row][0], title=candidates[row][1], cosine=cosine
        )
        for row, cosine in cosine_neighbours(own.as_array(), matrix, k)
    ]


# --- Why recommended -------------------------------------------------------------


def why_recommended(
    product: Product,
    *,
    policy: DQNPolicy | None,
    customer: Customer | None = None,
    at: dt.datetime | None = None,
    since: dt.datetime | None = None,
    neighbours: int = 5,
    top_history: int = 10,
    n_steps: int = INTEGRATION_STEPS,
) -> WhyRecommended:
    """Explain to whom a product is recommended, and for what in their history.

    The attribution is for ``customer`` at ``at`` (default now) when given,
    else for the customer of the latest personalised slate that showed the
    product, as at that slate's serve time. It is for the product's merchant:
    the history's products of other merchants are pooled, not named, and the
    nearest products are the merchant's own.
    """
    attribution, basis = None, ""
    if policy is None:
        basis = "No policy is live: slates come from popularity, not from history."
    elif policy_index(policy, product.external_id) is None:
        basis = "The policy was not trained on this product yet."
    else:
        customer, at, basis = _attributed_customer(product, customer, at)
        state = customer_state(policy, customer, at) if customer else None
        if customer is not None and state is None:
            basis = "The customer had no purchases known to the policy."
        elif state is not None:
            attribution = explain_score(
                policy,
                state,
                product.external_id,
                top_history=top_history,
                n_steps=n_steps,
                for_merchant=product.merchant_id,
            )
    return WhyRecommended(
        sku=product.external_id,
        title=product.title,
        audience=exposure_audience(product, since=since),
        attribution=attribution,
        attribution_basis=basis,
        nearest=text_neighbours(product, k=neighbours, merchant_id=product.merchant_id),
    )


def _attributed_customer(
    product: Product, customer: Customer | None, at: dt.datetime | None
) -> tuple[Customer | None, dt.datetime, str]:
    if customer is not None:
        return customer, at or timezone.now(), "The given customer's current history."
    latest = (
        ServedSlateItem.objects.filter(product=product, slate__customer__isnull=False)
        .exclude(slate__policy_version="")
        .annotate(served_at=_serve_moment())
        .select_related("slate__customer")
        .order_by("-slate__created_at")
        .first()
    )
    if latest is None:
        return None, at or timezone.now(), "No personalised slate has shown it yet."
    basis = "The history of the last customer it was recommended to, at that time."
    return latest.slate.customer, latest.served_at, basis


# --- Why not -------------------------------------------------------------------


def why_not(
    product: Product,
    groups: Mapping[str, str],
    *,
    policy: DQNPolicy | None,
    customer: Customer | None = None,
    k: int = 10,
    sample_size: int = 25,
    at: dt.datetime | None = None,
) -> WhyNot:
    """Say why ``product`` is not shown to customers in ``groups``.

    Causes are checked in serving's order: the catalogue rules, the policy's
    vocabulary, governance overrides for these groups; with none of them, the
    product's greedy rank and its score gap to the ``k``-th shown item, for
    ``customer`` or else for the median of up to ``sample_size`` recently
    active customers of the groups. Rules that the shop applies per request
    (exclusions, recently bought) cannot be known for a group and are not
    checked.
    """
    at = at or timezone.now()
    sku = product.external_id
    causes: list[tuple[str, str]] = []
    if not product.is_active:
        causes.append(("product_inactive", "The product is marked inactive."))
    if not product.in_stock:
        causes.append(("out_of_stock", "The product is out of stock."))
    if not product.merchant.is_active:
        causes.append(("merchant_inactive", "The merchant's account is inactive."))
    if policy is not None and policy_index(policy, sku) is None:
        causes.append(
            (
                "not_in_policy",
                "The product is newer than the live policy, which has not been "
                "trained on it yet; the next training run includes it.",
            )
        )
    constraints = slate_constraints(customer_groups=groups, at=at)
    override = _removing_override(constraints, sku)
    if override is not None:
        reason = "cap_reached" if override.kind == "cap" else "suppressed"
        causes.append((reason, _override_message(override)))

    ranking = None
    if not causes and policy is None:
        causes.append(
            (
                "no_policy",
                "No policy is live: every customer gets the most popular products.",
            )
        )
    if not causes and policy is not None:
        ranking = _rank_for_groups(
            product, groups, policy, constraints, customer, k, sample_size, at
        )
        if ranking is None:
            causes.append(
                (
                    "no_history_in_group",
                    "No customer of these groups has a purchase history; they get "
                    "the most popular products.",
                )
            )
        elif ranking.rank <= k - _pins_before(constraints, sku, k):
            causes.append(
                (
                    "ranked_in_top_k",
                    f"It ranks {ranking.rank} for a representative customer, inside "
                    f"the {k} shown; exploration, the shop's own exclusions or a "
                    "smaller slate can still leave it out.",
                )
            )
        else:
            causes.append(
                (
                    "ranked_below",
                    f"It ranks {ranking.rank} of {ranking.eligible} for a "
                    f"representative customer; the last of {k} shown scores "
                    f"{ranking.score_gap:.4g} higher.",
                )
            )
    reason, message = causes[0]
    return WhyNot(
        sku=sku,
        title=product.title,
        customer_groups=dict(groups),
        reason=reason,
        message=message,
        other_blockers=[cause for cause, _ in causes[1:]],
        override=override,
        ranking=ranking,
    )


def _removing_override(
    constraints: SlateConstraints, sku: str
) -> OverrideInForce | None:
    if sku not in constraints.suppressed:
        return None
    kind, _, number = constraints.reasons[sku].partition(" #")
    override = Override.objects.get(pk=int(number))
    scope = (
        f"{override.group_attribute} = {override.group_value}"
        if override.group_attribute
        else "everyone"
    )
    return OverrideInForce(
        override_id=override.pk,
        kind=kind,
        reason_code=override.reason_code,
        reason=override.get_reason_code_display(),
        statement=override.statement,
        scope=scope,
        expires_at=override.expires_at.isoformat() if override.expires_at else None,
    )


def _override_message(override: OverrideInForce) -> str:
    action = (
        "capped, and its exposure share reached the cap"
        if override.kind == "cap"
        else "suppressed"
    )
    return (
        f"Governance {action} (override #{override.override_id}, {override.kind}, "
        f"{override.reason}) for {override.scope}: {override.statement}"
    )


def _pins_before(constraints: SlateConstraints, sku: str, k: int) -> int:
    """Slots of a slate of ``k`` taken by other products' pins."""
    return len(
        {
            position
            for pinned, position in constraints.pinned.items()
            if pinned != sku and position <= k
        }
    )


def _group_customers(groups: Mapping[str, str], limit: int) -> list[Customer]:
    """Up to ``limit`` customers of the groups with purchases, latest buyers first."""
    customers = Customer.objects.filter(events__kind=EventKind.PURCHASE)
    for attribute, value in groups.items():
        if attribute == "country":
            customers = customers.filter(country=value)
        else:
            customers = customers.filter(
                group_attributes_consent=True,
                **{f"group_attributes__{attribute}": value},
            )
    return list(
        customers.annotate(last=Max("events__occurred_at")).order_by("-last", "id")[
            :limit
        ]
    )


def _rank_for_groups(
    product: Product,
    groups: Mapping[str, str],
    policy: DQNPolicy,
    constraints: SlateConstraints,
    customer: Customer | None,
    k: int,
    sample_size: int,
    at: dt.datetime,
) -> RankSummary | None:
    sampled = (
        [customer] if customer is not None else _group_customers(groups, sample_size)
    )
    states = [state for c in sampled if (state := customer_state(policy, c, at))]
    if not states:
        return None
    batch = StateBatch(
        **{
            f.name: np.concatenate([getattr(s, f.name) for s in states])
            for f in fields(StateBatch)
        }
    )
    scores = policy.q_values(batch).astype(np.float64)
    item_ids = policy.item_ids
    index = policy_index(policy, product.external_id)
    assert index is not None
    eligible_skus = set(
        Product.objects.filter(
            is_active=True, in_stock=True, merchant__is_active=True
        ).values_list("external_id", flat=True)
    )
    eligible = np.fromiter(
        (sku in eligible_skus for sku in item_ids), dtype=bool, count=len(item_ids)
    )
    slots = k - _pins_before(constraints, product.external_id, k)

    ranked = []
    for row in scores:
        governed, allowed = constraints.apply(item_ids, row, eligible)
        rank, last, n_eligible = greedy_rank(governed, allowed, index, slots)
        raw_rank, _, _ = greedy_rank(row, eligible, index, slots)
        ranked.append((rank, raw_rank, float(governed[index]), last, n_eligible))
    ranked.sort(key=lambda entry: entry[0])
    rank, raw_rank, score, last, n_eligible = ranked[(len(ranked) - 1) // 2]
    ranks = np.array([entry[0] for entry in ranked])
    basis = (
        "the given customer"
        if customer is not None
        else f"the median of {len(ranked)} recently active customers of the groups"
    )
    applied = (
        [constraints.reasons[product.external_id]]
        if product.external_id in constraints.reasons
        else []
    )
    return RankSummary(
        k=k,
        basis=basis,
        customers=len(ranked),
        eligible=n_eligible,
        rank=rank,
        rank_without_governance=raw_rank,
        score=score,
        last_shown_score=last,
        score_gap=last - score,
        median_rank=float(np.median(ranks)),
        best_rank=int(ranks.min()),
        worst_rank=int(ranks.max()),
        share_shown=float(np.mean(ranks <= slots)),
        constraints=applied,
    )


# --- Per slate, for staff --------------------------------------------------------


def explain_slate(
    slate_id: str,
    *,
    policy: DQNPolicy | None = None,
    attributed_items: int = 3,
    n_steps: int = INTEGRATION_STEPS,
) -> SlateExplanation:
    """Explain one served slate: the customer, their history, and each pick.

    ``policy`` must be the slate's version when given; otherwise that version
    is loaded from the registry. Raises ``ServedSlate.DoesNotExist``.
    """
    slate = ServedSlate.objects.select_related("customer").get(pk=slate_id)
    served_at = (
        dt.datetime.fromisoformat(slate.context["as_of"])
        if slate.context.get("as_of")
        else slate.created_at
    )
    groups = customer_groups(slate.customer)
    notes = [
        "Customer groups are the customer's attributes now, not at the serve time.",
        "Overrides are those in force when the slate was logged; a cap is judged "
        "on the exposure share now.",
    ]
    constraints = slate_constraints(customer_groups=groups, at=slate.created_at)
    items = list(slate.items.select_related("product").order_by("position"))

    state = None
    if slate.policy_version and slate.customer is not None:
        policy = policy or _policy_of(slate.policy_version)
        state = customer_state(policy, slate.customer, served_at)
        notes.append(
            "Scores are recomputed from the purchase history before the serve "
            "time; items of the session are not logged and are left out."
        )
    recomputed: np.ndarray | None = None
    if policy is not None and state is not None:
        recomputed = policy.q_values(state)[0]

    explained = []
    for entry in items:
        sku = entry.product.external_id
        index = policy_index(policy, sku) if policy is not None else None
        attribution = None
        if (
            policy is not None
            and state is not None
            and index is not None
            and entry.position <= attributed_items
        ):
            attribution = explain_score(policy, state, sku, n_steps=n_steps)
        explained.append(
            SlateItemExplanation(
                position=entry.position,
                sku=sku,
                title=entry.product.title,
                score=entry.score,
                propensity=entry.propensity,
                reason=entry.reason,
                constraint=constraints.reasons.get(sku),
                recomputed_score=(
                    float(recomputed[index])
                    if recomputed is not None and index is not None
                    else None
                ),
                attribution=attribution,
            )
        )
    return SlateExplanation(
        slate_id=str(slate.pk),
        served_at=served_at.isoformat(),
        logged_at=slate.created_at.isoformat(),
        customer=slate.customer.external_id if slate.customer else None,
        session_id=slate.session_id,
        customer_groups=groups,
        history=_history_summary(slate.customer, served_at) if slate.customer else None,
        policy_version=slate.policy_version,
        k=int(slate.context.get("k", len(items))),
        items=explained,
        notes=notes,
    )


def _policy_of(label: str) -> DQNPolicy:
    version = PolicyVersion.objects.filter(label=label).first()
    if version is None:
        raise ExplanationError(f"Policy version {label} is not in the registry.")
    return load_policy(version)


def _history_summary(customer: Customer, before: dt.datetime) -> HistorySummary:
    baskets = purchase_baskets(customer, before)
    products = Counter(sku for basket in baskets for sku in basket.item_ids)
    return HistorySummary(
        baskets=len(baskets),
        products=len(products),
        first_purchase=str(baskets[0].time) if baskets else None,
        last_purchase=str(baskets[-1].time) if baskets else None,
        last_basket=sorted(set(baskets[-1].item_ids))[:10] if baskets else [],
    )

"""The live policy in a serving process, and the reads serving needs.

The live version is loaded once per process and swapped when a promotion or
rollback changes the live label; the label is checked at most every
``POLICY_RELOAD_SECONDS``. The eligible catalogue and the popularity used for
fallbacks are cached the same way.
"""

import datetime as dt
import functools
import logging
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.utils import timezone

from commerce.models import Customer, EventKind, FeedbackEvent, Product, ServedSlate
from commerce.services import ServedItem, log_served_slate
from governance.selectors import customer_groups, slate_constraints
from rl_engine.core.policy import DQNPolicy
from rl_engine.core.protocol import ItemVocabulary
from rl_engine.core.serving import Basket, pick_slate, state_of
from rl_engine.models import PolicyStatus, PolicyVersion
from rl_engine.services import load_policy

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCORING_THREADS = 1
"""Torch intra-op threads of a serving process."""

MAX_ALIGNED_ARRAYS = 4
"""Item-id arrays a cached catalogue keeps its alignment to: the live policy's,
the popularity ranking's, and their successors while both are in use."""


class Expiring(Generic[T]):
    """A value recomputed when older than ``seconds``; thread-safe."""

    def __init__(self, compute: Callable[[], T], seconds: Callable[[], float]) -> None:
        self._compute = compute
        self._seconds = seconds
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at = -float("inf")

    def get(self) -> T:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self._seconds():
                self._value = self._compute()
                self._at = time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._value = None


@dataclass(frozen=True)
class LivePolicy:
    label: str
    policy: DQNPolicy | None


class LivePolicyHolder:
    """Keeps the live policy of this process, reloading it after a switch."""

    def __init__(self) -> None:
        self._live = LivePolicy(label="", policy=None)
        self._label = Expiring(self._live_label, lambda: settings.POLICY_RELOAD_SECONDS)
        self._lock = threading.Lock()

    def get(self) -> LivePolicy:
        label = self._label.get()
        if label != self._live.label:
            with self._lock:
                if label != self._live.label:
                    self._live = self._load(label)
        return self._live

    def refresh(self) -> None:
        """Forget the cached label, so the next request checks the registry."""
        self._label.clear()

    @staticmethod
    def _live_label() -> str:
        label = (
            PolicyVersion.objects.filter(status=PolicyStatus.LIVE)
            .values_list("label", flat=True)
            .first()
        )
        return label or ""

    @staticmethod
    def _load(label: str) -> LivePolicy:
        if not label:
            return LivePolicy(label="", policy=None)
        started = time.perf_counter()
        policy = load_policy(PolicyVersion.objects.get(label=label))
        policy.network.eval()
        # A request scores one state, too little work to share out: more
        # intra-op threads only contend for the cores with this process's
        # other request threads and the other workers. It is set for the
        # whole process, which serves and trains nothing else.
        torch.set_num_threads(SCORING_THREADS)
        logger.info(
            "Loaded live policy %s in %.1f s",
            label,
            time.perf_counter() - started,
            extra={"policy_version": label},
        )
        return LivePolicy(label=label, policy=policy)


@dataclass(frozen=True, eq=False)
class AlignedItems:
    """The catalogue as seen from one array of item ids, in that array's order."""

    item_ids: np.ndarray
    eligible: np.ndarray
    """Read-only: which item ids may be shown."""
    order: np.ndarray
    """Positions that sort ``item_ids``; with ``sorted_ids``, SKUs are found by
    binary search."""
    sorted_ids: np.ndarray

    @classmethod
    def of(cls, item_ids: np.ndarray, product_by_sku: dict[str, int]) -> "AlignedItems":
        eligible = np.fromiter(
            (item in product_by_sku for item in item_ids),
            dtype=bool,
            count=len(item_ids),
        )
        eligible.flags.writeable = False
        order = np.argsort(item_ids, kind="stable")
        return cls(
            item_ids=item_ids,
            eligible=eligible,
            order=order,
            sorted_ids=item_ids[order],
        )

    def positions(self, skus: Iterable[str]) -> np.ndarray:
        """Return the positions of those ``skus`` that are among the item ids."""
        wanted = np.array(list(skus), dtype=object)
        if len(wanted) == 0 or len(self.sorted_ids) == 0:
            return np.array([], dtype=np.int64)
        found = np.searchsorted(self.sorted_ids, wanted)
        found = np.minimum(found, len(self.sorted_ids) - 1)
        return self.order[found[self.sorted_ids[found] == wanted]]


@dataclass(frozen=True)
class EligibleCatalogue:
    """Products that may be shown, by SKU: active, in stock, merchant active."""

    product_by_sku: dict[str, int]
    _aligned: dict[int, AlignedItems] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def aligned(self, item_ids: np.ndarray) -> AlignedItems:
        """Return the catalogue in the order of ``item_ids``.

        It is worked out once per array (the live policy's item ids, the
        popularity ranking) for as long as this catalogue is cached, so a
        request never walks the whole catalogue in Python.
        """
        aligned = self._aligned.get(id(item_ids))
        if aligned is None or aligned.item_ids is not item_ids:
            aligned = AlignedItems.of(item_ids, self.product_by_sku)
            if len(self._aligned) >= MAX_ALIGNED_ARRAYS:
                self._aligned.clear()
            self._aligned[id(item_ids)] = aligned
        return aligned

    def eligible(self, item_ids: np.ndarray, excluded: Iterable[str]) -> np.ndarray:
        """Return which of ``item_ids`` may be shown, less the ``excluded`` SKUs."""
        aligned = self.aligned(item_ids)
        eligible = aligned.eligible.copy()
        eligible[aligned.positions(excluded)] = False
        return eligible


def _eligible_catalogue() -> EligibleCatalogue:
    rows = Product.objects.filter(
        is_active=True, in_stock=True, merchant__is_active=True
    ).values_list("external_id", "id")
    return EligibleCatalogue(product_by_sku=dict(rows))


@dataclass(frozen=True)
class Popularity:
    """Every product, most bought over the popularity window first.

    ``counts`` are the orders of each product in the ``POPULARITY_WINDOW_DAYS``
    before the latest purchase up to the moment served (future-dated events
    are not counted); products not bought in that window follow with 0, so a
    fallback slate is never short while the catalogue can fill it.
    """

    skus: np.ndarray
    counts: np.ndarray


POPULARITY_SQL = f"""
    WITH window_orders AS (
        SELECT product_id, count(DISTINCT order_id) AS orders
        FROM {FeedbackEvent._meta.db_table}
        WHERE kind = %(purchase)s AND occurred_at >= %(since)s
          AND occurred_at < %(until)s
        GROUP BY product_id
    )
    SELECT p.external_id, coalesce(w.orders, 0) AS orders
    FROM {Product._meta.db_table} p
    LEFT JOIN window_orders w ON w.product_id = p.id
    ORDER BY orders DESC, p.external_id
"""


def popularity_until(moment: dt.datetime) -> Popularity:
    """Rank the catalogue by orders in the window before the latest purchase
    that precedes ``moment``."""
    latest = FeedbackEvent.objects.filter(
        kind=EventKind.PURCHASE, occurred_at__lt=moment
    ).aggregate(latest=Max("occurred_at"))["latest"]
    until = latest + dt.timedelta(microseconds=1) if latest else moment
    since = until - dt.timedelta(days=settings.POPULARITY_WINDOW_DAYS)
    with connection.cursor() as cursor:
        cursor.execute(
            POPULARITY_SQL,
            {"purchase": EventKind.PURCHASE.value, "since": since, "until": until},
        )
        rows = cursor.fetchall()
    skus, counts = zip(*rows, strict=True) if rows else ((), ())
    return Popularity(skus=np.array(skus, dtype=object), counts=np.array(counts, float))


class _PopularityAsOf:
    """The ranking a replay serving as at a moment sees: counted up to the
    start of its day (in the site's zone), so no purchase of that day or
    later leaks into it. Kept per day for the process's life."""

    def __init__(self) -> None:
        self._before_day = functools.lru_cache(maxsize=32)(popularity_until)

    def __call__(self, moment: dt.datetime) -> Popularity:
        local = timezone.localtime(moment)
        return self._before_day(
            local.replace(hour=0, minute=0, second=0, microsecond=0)
        )

    def cache_clear(self) -> None:
        self._before_day.cache_clear()


popularity_as_of = _PopularityAsOf()


live_policy = LivePolicyHolder()
eligible_catalogue = Expiring(
    _eligible_catalogue, lambda: settings.CATALOGUE_CACHE_SECONDS
)
popularity = Expiring(
    lambda: popularity_until(timezone.now()), lambda: settings.CATALOGUE_CACHE_SECONDS
)


@dataclass(frozen=True)
class PurchaseHistory:
    """A customer's purchases before a moment, as serving reads them."""

    baskets: list[Basket]
    """Oldest first: the purchases of an order, or of one moment for purchases
    without an order."""
    recent: set[str]
    """SKUs bought at or after the ``recent_since`` asked for."""


NO_PURCHASES = PurchaseHistory(baskets=[], recent=set())


PURCHASE_HISTORY_SQL = f"""
    SELECT min(e.occurred_at) AS first,
           array_agg(DISTINCT p.external_id),
           array_agg(DISTINCT p.external_id) FILTER (WHERE e.occurred_at >= %s)
    FROM {FeedbackEvent._meta.db_table} e
    JOIN {Product._meta.db_table} p ON p.id = e.product_id
    WHERE e.customer_id = %s AND e.kind = %s AND e.occurred_at < %s
    GROUP BY e.order_id, CASE WHEN e.order_id = '' THEN e.occurred_at END
    ORDER BY first, e.order_id
"""
"""A row per basket: lines of one order, or a loose line without an order id."""


def purchase_history(
    customer_id: int, before: dt.datetime, *, recent_since: dt.datetime | None = None
) -> PurchaseHistory:
    """Read the customer's baskets before a moment and what they bought lately.

    The database groups the purchase lines, so one query returns a row per
    basket: a wholesale customer's thousands of lines come back as a few
    hundred rows. It is written in SQL because it runs on every request:
    building it through the ORM took longer than running it.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            PURCHASE_HISTORY_SQL,
            [recent_since or before, customer_id, EventKind.PURCHASE.value, before],
        )
        rows = cursor.fetchall()
    baskets: list[Basket] = []
    bought: set[str] = set()
    for first, skus, recent in rows:
        baskets.append(Basket(item_ids=skus, time=_local(first)))
        if recent_since is not None and recent:
            bought.update(recent)
    return PurchaseHistory(baskets=baskets, recent=bought)


def _local(moment: dt.datetime) -> np.datetime64:
    """Express a stored time as the policy sees time: naive, in the shop's zone."""
    local = moment.astimezone(zoneinfo.ZoneInfo(settings.EVALUATION_TIMEZONE))
    return np.datetime64(local.replace(tzinfo=None), "s")


def local_now(now: dt.datetime) -> np.datetime64:
    return _local(now)


@dataclass(frozen=True)
class SlateRequest:
    """What the frontend asks: for whom, how many, and what to leave out."""

    customer_external_id: str | None
    session_id: str
    session_items: list[str]
    k: int
    context: dict[str, Any]
    exclude: set[str]
    exclude_bought_within_days: int | None
    non_personalised: bool
    as_of: dt.datetime | None = None
    """Serve as at this moment: only history before it counts (replays)."""


@dataclass(frozen=True)
class ServedSlateView:
    slate: ServedSlate
    policy_version: str
    items: list[tuple[str, ServedItem]]


def recommend(request: SlateRequest, *, rng: np.random.Generator) -> ServedSlateView:
    """Serve one slate and log it; fall back to popularity rather than fail.

    The live policy scores every product in one pass; then inactive,
    out-of-stock, excluded and recently bought products are removed, the
    governance overrides in force applied, and the slate picked with
    exploration, each pick's propensity logged. A customer with no history
    (and no session items), a non-personalised request, or no live policy gets
    the most popular eligible products, with reason ``fallback``.
    """
    now = request.as_of or timezone.now()
    customer = (
        Customer.objects.filter(external_id=request.customer_external_id).first()
        if request.customer_external_id
        else None
    )
    catalogue = eligible_catalogue.get()
    live = live_policy.get()
    personalise = live.policy is not None and not request.non_personalised
    bought_since = (
        now - dt.timedelta(days=request.exclude_bought_within_days)
        if request.exclude_bought_within_days
        else None
    )
    history = (
        purchase_history(customer.pk, now, recent_since=bought_since)
        if customer is not None and (personalise or bought_since is not None)
        else NO_PURCHASES
    )
    excluded = set(request.exclude) | history.recent
    constraints = slate_constraints(customer_groups=customer_groups(customer))

    state = None
    if live.policy is not None and personalise:
        baskets = list(history.baskets)
        if request.session_items:
            baskets.append(Basket(item_ids=request.session_items, time=local_now(now)))
        state = state_of(
            live.policy.encode, _vocabulary(live.policy), baskets, local_now(now)
        )

    if live.policy is not None and state is not None:
        item_ids = live.policy.item_ids
        scores = live.policy.q_values(state, candidates=True)[0].astype(np.float64)
        kind = settings.SERVING_EXPLORATION
        version = live.label
    else:
        ranked = popularity_as_of(request.as_of) if request.as_of else popularity.get()
        item_ids = ranked.skus
        scores = ranked.counts.astype(np.float64)
        kind, version = "greedy", live.label
    eligible = catalogue.eligible(item_ids, excluded)
    scores, eligible = constraints.apply(item_ids, scores, eligible)
    slate = pick_slate(
        scores,
        eligible,
        request.k,
        kind=kind,
        temperature=settings.SERVING_TEMPERATURE,
        epsilon=settings.SERVING_EPSILON,
        candidates=settings.SERVING_CANDIDATES,
        rng=rng,
    )
    personalised = state is not None and live.policy is not None
    picked = {
        index: (float(score), float(propensity), reason if personalised else "fallback")
        for index, score, propensity, reason in zip(
            slate.items, slate.scores, slate.propensities, slate.reasons, strict=True
        )
    }
    # A pin is a reviewer's decision, not a draw: its propensity is 1 and its
    # reason says a boost put it there.
    placed, pinned = constraints.place_pins(
        list(slate.items), item_ids, eligible, request.k
    )
    served = [
        (
            str(item_ids[index]),
            ServedItem(
                product_id=catalogue.product_by_sku[str(item_ids[index])],
                score=float(scores[index]) if index in pinned else picked[index][0],
                propensity=1.0 if index in pinned else picked[index][1],
                reason="boost" if index in pinned else picked[index][2],
            ),
        )
        for index in placed
    ]
    logged = log_served_slate(
        customer_id=customer.pk if customer else None,
        session_id=request.session_id,
        context={
            **request.context,
            "k": request.k,
            "exclude": sorted(request.exclude),
            "exclude_bought_within_days": request.exclude_bought_within_days,
            "non_personalised": request.non_personalised,
            "customer_external_id": request.customer_external_id,
            **({"as_of": request.as_of.isoformat()} if request.as_of else {}),
        },
        policy_version=version if personalised else "",
        items=[item for _, item in served],
    )
    return ServedSlateView(
        slate=logged, policy_version=logged.policy_version, items=served
    )


def _vocabulary(policy: DQNPolicy) -> ItemVocabulary:
    return ItemVocabulary(ids=policy.item_ids)

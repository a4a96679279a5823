"""What the recommender did with a merchant's products, over a window of days.

- A product is *shown* once per served slate item; its *exposure* is the sum of
  the items' position weights ``1 / log2(1 + position)`` (1, 0.631, 0.5, ...),
  as the governance exposure audit weighs them.
- A slate counts on the day it stands for: a replay's ``as_of``, else when it
  was logged.
- Clicks, purchases and returns are feedback events that occurred in the
  window, one per event, except that a purchase or return reported twice
  under one order id (by an import and again by the shop's API, as a replay
  does) counts once, as the audits count it; the return rate is
  returns over purchases, as the quality audit reads it, and can pass 1 when
  goods bought before the window come back in it.
- Exposure and sales shares are parts of the totals over the products asked
  about: for a merchant's pages, that merchant's own products.
"""

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.db.models import (
    Case,
    CharField,
    Count,
    DateTimeField,
    F,
    Max,
    Q,
    QuerySet,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, TruncDate
from django.utils import timezone

from commerce.models import EventKind, FeedbackEvent, Product, ServedSlateItem
from governance.audits.exposure import position_weight
from governance.models import Override, ReviewItem, ReviewStatus, TargetType
from rl_engine.core.policy import DQNPolicy
from rl_engine.serving import live_policy

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 30
MAX_DAYS = 366
EARLIEST_DAY = dt.date(1970, 1, 2)
"""A window ends on a day from this one to a year past today: the API takes
no event before 1970, and days far out cannot be counted."""


def latest_day() -> dt.date:
    """The last day a window may end on: a year past today."""
    return timezone.localdate() + dt.timedelta(days=MAX_DAYS)


COUNTED_KINDS = (EventKind.CLICK, EventKind.PURCHASE, EventKind.RETURN)
POSITION_BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50))
"""Ranges of positions that the rank distribution chart groups; 51 and past
make the last bucket."""


@dataclass(frozen=True)
class Window:
    """Whole days, ``first_day`` to ``last_day`` inclusive, in the site's zone."""

    first_day: dt.date
    last_day: dt.date

    @classmethod
    def ending(
        cls, last_day: dt.date | None = None, days: int = DEFAULT_DAYS
    ) -> "Window":
        last_day = last_day or timezone.localdate()
        return cls(first_day=last_day - dt.timedelta(days=days - 1), last_day=last_day)

    @property
    def since(self) -> dt.datetime:
        return timezone.make_aware(dt.datetime.combine(self.first_day, dt.time.min))

    @property
    def until(self) -> dt.datetime:
        """The first moment after the window."""
        next_day = self.last_day + dt.timedelta(days=1)
        return timezone.make_aware(dt.datetime.combine(next_day, dt.time.min))

    def days(self) -> list[dt.date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + dt.timedelta(days=offset) for offset in range(count)]


@dataclass(frozen=True)
class ProductFigures:
    product_id: int
    shown: int
    """Served slate items that held the product."""
    exposure: float
    """Their position weights summed."""
    clicks: int
    purchases: int
    returns: int
    return_rate: float | None
    """Returns over purchases; None without purchases."""
    exposure_share: float
    """Part of the exposure of all the products asked about."""
    sales_share: float
    """Part of the purchases of all the products asked about."""


@dataclass(frozen=True)
class DayFigures:
    day: dt.date
    shown: int
    exposure: float
    clicks: int
    purchases: int
    returns: int


def return_rate(purchases: int, returns: int) -> float | None:
    return returns / purchases if purchases else None


def _serve_moment() -> Coalesce:
    """When a slate item was served: its slate's ``as_of`` for replays, else
    when the slate was logged."""
    return Coalesce(
        Cast(KeyTextTransform("as_of", "slate__context"), DateTimeField()),
        F("slate__created_at"),
    )


def _slate_items(
    products: QuerySet[Product], window: Window
) -> QuerySet[ServedSlateItem]:
    return (
        ServedSlateItem.objects.filter(product__in=products.values("id"))
        .annotate(served_at=_serve_moment())
        .filter(served_at__gte=window.since, served_at__lt=window.until)
    )


def _events(products: QuerySet[Product], window: Window) -> QuerySet[FeedbackEvent]:
    return FeedbackEvent.objects.filter(
        product__in=products.values("id"),
        kind__in=COUNTED_KINDS,
        occurred_at__gte=window.since,
        occurred_at__lt=window.until,
    )


def _weights(positions: Iterable[int]) -> dict[int, float]:
    ordered = sorted(set(positions))
    return dict(zip(ordered, position_weight(np.array(ordered)).tolist(), strict=True))


def latest_activity_day(merchant_ids: Iterable[int]) -> dt.date | None:
    """The latest day on which the merchants' products were in a served slate
    (on the day it stands for) or had a feedback event; None if never.

    Known limit: a replay's serve moment is in its JSON context, so this reads
    every slate item of the merchants' products; a stored serve moment with an
    index would make it one index lookup.
    """
    products = Product.objects.filter(merchant_id__in=list(merchant_ids)).values("id")
    served = (
        ServedSlateItem.objects.filter(product__in=products)
        .annotate(served_at=_serve_moment())
        .aggregate(latest=Max("served_at"))["latest"]
    )
    occurred = FeedbackEvent.objects.filter(product__in=products).aggregate(
        latest=Max("occurred_at")
    )["latest"]
    moments = [moment for moment in (served, occurred) if moment is not None]
    return timezone.localdate(max(moments)) if moments else None


def default_last_day(merchant_ids: Iterable[int]) -> dt.date:
    """The day a window ends on unless asked: today, or the merchants' latest
    day of activity when that is earlier (an imported or replayed history)."""
    today = timezone.localdate()
    latest = latest_activity_day(merchant_ids)
    return min(latest, today) if latest is not None else today


def _event_count() -> Count:
    """Events, with each (order, product) line of a kind counted once."""
    return Count(
        Case(
            When(order_id="", then=Cast("id", CharField())),
            default=F("order_id"),
        ),
        distinct=True,
    )


def product_figures(
    products: QuerySet[Product], window: Window
) -> dict[int, ProductFigures]:
    """Figures of every product in ``products``, with shares of their totals.

    Two grouped queries, whatever the number of products: slate items by
    product and position, events by product and kind.
    """
    shown: dict[int, int] = defaultdict(int)
    exposure: dict[int, float] = defaultdict(float)
    rows = list(
        _slate_items(products, window)
        .values_list("product_id", "position")
        .annotate(n=Count("id"))
        .order_by()
    )
    weights = _weights(position for _, position, _ in rows)
    for product_id, position, n in rows:
        shown[product_id] += n
        exposure[product_id] += n * weights[position]

    counts: dict[tuple[int, str], int] = {
        (product_id, kind): n
        for product_id, kind, n in _events(products, window)
        .values_list("product_id", "kind")
        .annotate(n=_event_count())
        .order_by()
    }
    total_exposure = sum(exposure.values())
    total_sales = sum(
        n for (_, kind), n in counts.items() if kind == EventKind.PURCHASE
    )

    figures = {}
    for product_id in products.values_list("id", flat=True):
        purchases = counts.get((product_id, EventKind.PURCHASE), 0)
        returns = counts.get((product_id, EventKind.RETURN), 0)
        figures[product_id] = ProductFigures(
            product_id=product_id,
            shown=shown[product_id],
            exposure=exposure[product_id],
            clicks=counts.get((product_id, EventKind.CLICK), 0),
            purchases=purchases,
            returns=returns,
            return_rate=return_rate(purchases, returns),
            exposure_share=(
                exposure[product_id] / total_exposure if total_exposure else 0.0
            ),
            sales_share=purchases / total_sales if total_sales else 0.0,
        )
    return figures


def merchants_product_figures(
    merchant_ids: Iterable[int], window: Window
) -> dict[int, ProductFigures]:
    """Figures of the merchants' products, each share within its own merchant."""
    figures: dict[int, ProductFigures] = {}
    for merchant_id in merchant_ids:
        figures.update(
            product_figures(Product.objects.filter(merchant_id=merchant_id), window)
        )
    return figures


def daily_figures(product: Product, window: Window) -> list[DayFigures]:
    """The product's figures on each day of the window, days without any included."""
    one = Product.objects.filter(pk=product.pk)
    shown: dict[dt.date, int] = defaultdict(int)
    exposure: dict[dt.date, float] = defaultdict(float)
    rows = list(
        _slate_items(one, window)
        .annotate(day=TruncDate("served_at"))
        .values_list("day", "position")
        .annotate(n=Count("id"))
        .order_by()
    )
    weights = _weights(position for _, position, _ in rows)
    for day, position, n in rows:
        shown[day] += n
        exposure[day] += n * weights[position]
    counts = {
        (day, kind): n
        for day, kind, n in _events(one, window)
        .annotate(day=TruncDate("occurred_at"))
        .values_list("day", "kind")
        .annotate(n=_event_count())
        .order_by()
    }
    return [
        DayFigures(
            day=day,
            shown=shown[day],
            exposure=exposure[day],
            clicks=counts.get((day, EventKind.CLICK), 0),
            purchases=counts.get((day, EventKind.PURCHASE), 0),
            returns=counts.get((day, EventKind.RETURN), 0),
        )
        for day in window.days()
    ]


def position_counts(product: Product, window: Window) -> dict[int, int]:
    """How often the product was served at each position (from 1)."""
    rows = (
        _slate_items(Product.objects.filter(pk=product.pk), window)
        .values_list("position")
        .annotate(n=Count("id"))
        .order_by("position")
    )
    return {position: n for position, n in rows}


def position_buckets(counts: dict[int, int]) -> list[tuple[str, int]]:
    """Group position counts into ``POSITION_BUCKETS`` and one past the last."""
    buckets: list[tuple[str, int]] = []
    for low, high in POSITION_BUCKETS:
        label = str(low) if low == high else f"{low}-{high}"
        buckets.append((label, sum(n for p, n in counts.items() if low <= p <= high)))
    last = POSITION_BUCKETS[-1][1]
    buckets.append((f"{last + 1}+", sum(n for p, n in counts.items() if p > last)))
    return buckets


# Governance, as merchants may see it.


@dataclass(frozen=True)
class OverrideRecord:
    """An override on a product: what it does and why, never who set it."""

    override_id: int
    product_id: int
    sku: str
    kind: str
    kind_label: str
    value: float | None
    scope: str
    reason_code: str
    reason: str
    statement: str
    starts_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    state: str
    """``scheduled``, ``in force``, ``expired`` or ``revoked``."""
    from_review: bool
    """Whether a reviewer's decision put it in force."""


@dataclass(frozen=True)
class DecisionRecord:
    """A reviewer's decision on a product or merchant: no note, no reviewer."""

    review_item_id: int
    product_id: int | None
    """None for a decision about the merchant as a whole."""
    rule: str
    finding: str
    """What the audit found, as its flag summed it up."""
    decision: str
    decision_label: str
    reason_code: str
    reason: str
    statements: list[str]
    """The statements of the overrides the decision put in force."""
    decided_at: dt.datetime | None


def override_state(override: Override, now: dt.datetime) -> str:
    if override.revoked_at is not None:
        return "revoked"
    if override.expires_at is not None and override.expires_at <= now:
        return "expired"
    if override.starts_at > now:
        return "scheduled"
    return "in force"


def product_overrides(products: QuerySet[Product]) -> list[OverrideRecord]:
    """Every override ever set on these products, newest first."""
    now = timezone.now()
    overrides = (
        Override.objects.filter(product__in=products.values("id"))
        .select_related("product")
        .order_by("-created_at", "-id")
    )
    return [
        OverrideRecord(
            override_id=override.pk,
            product_id=override.product_id or 0,
            sku=override.product.external_id if override.product else "",
            kind=override.kind,
            kind_label=override.get_kind_display(),
            value=override.value,
            scope=(
                f"{override.group_attribute} = {override.group_value}"
                if override.group_attribute
                else "everyone"
            ),
            reason_code=override.reason_code,
            reason=override.get_reason_code_display(),
            statement=override.statement,
            starts_at=override.starts_at,
            expires_at=override.expires_at,
            revoked_at=override.revoked_at,
            state=override_state(override, now),
            from_review=override.review_item_id is not None,
        )
        for override in overrides
    ]


def review_decisions(
    products: QuerySet[Product], merchant_ids: Sequence[int] = ()
) -> list[DecisionRecord]:
    """Decided review items about these products (or merchants), newest first.

    Open items are not listed: a case counts for the merchant once decided.
    """
    product_ids = {str(pk): pk for pk in products.values_list("id", flat=True)}
    items = (
        ReviewItem.objects.filter(status=ReviewStatus.DECIDED)
        .filter(
            Q(target_type=TargetType.PRODUCT, target_id__in=list(product_ids))
            | Q(
                target_type=TargetType.MERCHANT,
                target_id__in=[str(pk) for pk in merchant_ids],
            )
        )
        .prefetch_related("overrides")
        .order_by("-decided_at", "-id")
    )
    return [
        DecisionRecord(
            review_item_id=item.pk,
            product_id=(
                product_ids.get(item.target_id)
                if item.target_type == TargetType.PRODUCT
                else None
            ),
            rule=item.rule,
            finding=item.title,
            decision=item.decision,
            decision_label=item.get_decision_display(),
            reason_code=item.reason_code,
            reason=item.get_reason_code_display(),
            statements=[override.statement for override in item.overrides.all()],
            decided_at=item.decided_at,
        )
        for item in items
    ]


def serving_policy() -> tuple[str, DQNPolicy | None]:
    """The live policy of this process and its label; None when none is live.

    A policy that cannot be loaded (a missing or corrupt artifact) is logged
    and treated as none: serving then falls back to popularity too.
    """
    try:
        live = live_policy.get()
    except Exception:  # any load failure leaves the pages without a model
        logger.exception("The live policy could not be loaded for an explanation")
        return "", None
    return live.label, live.policy

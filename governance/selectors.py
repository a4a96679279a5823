"""What governance has put in force, as serving and training read it.

These selectors stand on governance and commerce models alone. With no
override in force, the constraints change no slate and training learns from
every event.
"""

import datetime as dt
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from commerce.models import (
    Customer,
    FeedbackEvent,
    Merchant,
    Product,
    ServedSlate,
    ServedSlateItem,
)
from governance.audits.log import (
    EVENT_COLUMNS,
    PRODUCT_COLUMNS,
    SLATE_COLUMNS,
    SLATE_ITEM_COLUMNS,
    AuditLog,
)
from governance.models import Override, OverrideKind


def overrides_in_force(at: dt.datetime | None = None) -> QuerySet[Override]:
    """Overrides started, not expired and not revoked at ``at`` (default now)."""
    at = at or timezone.now()
    return Override.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=at),
        starts_at__lte=at,
        revoked_at__isnull=True,
    )


def customer_groups(customer: Customer | None) -> dict[str, str]:
    """The groups a customer belongs to, as overrides and audits scope them.

    Country is always known; other attributes count only with the customer's
    consent.
    """
    if customer is None:
        return {}
    groups = {"country": customer.country} if customer.country else {}
    if customer.group_attributes_consent:
        groups.update(
            {str(k): str(v) for k, v in customer.group_attributes.items() if v != ""}
        )
    return groups


@dataclass(frozen=True)
class SlateConstraints:
    """Overrides that apply to one request, keyed by product SKU."""

    suppressed: frozenset[str] = frozenset()
    """Never shown: suppressions, and caps whose product reached its share."""
    score_multipliers: dict[str, float] = field(default_factory=dict)
    """Demotions (below 1) and boosts (above 1), applied to the score's margin
    over the lowest eligible score, so the order of signs cannot flip them."""
    pinned: dict[str, int] = field(default_factory=dict)
    """Products placed at a 1-based position of the slate when eligible."""
    reasons: dict[str, str] = field(default_factory=dict)
    """For each constrained SKU, the override behind it (``suppress #12``)."""

    def apply(
        self, item_ids: np.ndarray, scores: np.ndarray, eligible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the scores and eligibility with suppressions and multipliers."""
        if not self.suppressed and not self.score_multipliers:
            return scores, eligible
        eligible = eligible & ~np.isin(item_ids, list(self.suppressed))
        if self.score_multipliers and eligible.any():
            floor = scores[eligible].min()
            factors = np.ones(len(item_ids))
            hit = np.isin(item_ids, list(self.score_multipliers))
            factors[hit] = [self.score_multipliers[item] for item in item_ids[hit]]
            scores = floor + (scores - floor) * factors
        return scores, eligible

    def place_pins(
        self, slate: list[int], item_ids: np.ndarray, eligible: np.ndarray, k: int
    ) -> tuple[list[int], set[int]]:
        """Put eligible pinned items at their positions in a slate of indices.

        Returns the new slate (at most ``k`` long) and the indices pinned.
        Pins beyond ``k`` are ignored; two pins on one position keep the
        first by SKU order.
        """
        if not self.pinned:
            return slate, set()
        index_of = {str(item): i for i, item in enumerate(item_ids)}
        pins: dict[int, int] = {}
        for sku in sorted(self.pinned):
            index = index_of.get(sku)
            position = self.pinned[sku]
            if index is None or not eligible[index] or position > k:
                continue
            pins.setdefault(position, index)
        if not pins:
            return slate, set()
        pinned_indices = set(pins.values())
        rest = iter(i for i in slate if i not in pinned_indices)
        placed = []
        for position in range(1, k + 1):
            if position in pins:
                placed.append(pins[position])
            else:
                placed.append(next(rest, -1))
        return [i for i in placed if i >= 0], pinned_indices


NO_CONSTRAINTS = SlateConstraints()

PRODUCT_OVERRIDES_IN_FORCE_SQL = f"""
    SELECT o.id, o.kind, o.product_id, p.external_id, o.value,
           o.group_attribute, o.group_value
    FROM {Override._meta.db_table} o
    LEFT JOIN {Product._meta.db_table} p ON p.id = o.product_id
    WHERE o.starts_at <= %(at)s
      AND (o.expires_at IS NULL OR o.expires_at > %(at)s)
      AND o.revoked_at IS NULL
      AND o.kind <> %(training)s
    ORDER BY o.created_at, o.id
"""
"""``overrides_in_force`` less training exclusions, in SQL: serving reads it on
every request, and building it through the ORM took longer than running it."""


def slate_constraints(
    *, customer_groups: Mapping[str, str], at: dt.datetime | None = None
) -> SlateConstraints:
    """Return the product overrides in force for a customer in these groups.

    An override scoped to a group applies when the customer's value for its
    attribute matches; an unscoped one applies to everyone, anonymous
    sessions included.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            PRODUCT_OVERRIDES_IN_FORCE_SQL,
            {
                "at": at or timezone.now(),
                "training": OverrideKind.EXCLUDE_TRAINING.value,
            },
        )
        rows = cursor.fetchall()
    if not rows:
        return NO_CONSTRAINTS
    caps_reached = _caps_reached(
        {
            product: value
            for _, kind, product, _, value, *_ in rows
            if kind == OverrideKind.CAP and product is not None and value is not None
        }
    )
    suppressed: set[str] = set()
    multipliers: dict[str, float] = {}
    pinned: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for pk, kind, product, sku, value, attribute, group in rows:
        # The table's checks guarantee a value for every kind that uses one.
        amount = 1.0 if value is None else value
        if attribute and customer_groups.get(attribute) != group:
            continue
        if kind == OverrideKind.SUPPRESS or (
            kind == OverrideKind.CAP and product in caps_reached
        ):
            suppressed.add(sku)
        elif kind in (OverrideKind.DEMOTE, OverrideKind.BOOST):
            multipliers[sku] = multipliers.get(sku, 1.0) * amount
        elif kind == OverrideKind.PIN:
            pinned[sku] = int(amount)
        else:
            continue
        reasons[sku] = f"{kind} #{pk}"
    for sku in suppressed:
        multipliers.pop(sku, None)
        pinned.pop(sku, None)
        reasons[sku] = next(
            f"{kind} #{pk}"
            for pk, kind, _, s, *_ in rows
            if s == sku and kind in (OverrideKind.SUPPRESS, OverrideKind.CAP)
        )
    return SlateConstraints(
        suppressed=frozenset(suppressed),
        score_multipliers=multipliers,
        pinned=pinned,
        reasons=reasons,
    )


def exposure_shares(product_ids: list[int], *, hours: float) -> dict[int, float]:
    """Each product's share of all slate items served in the last ``hours``."""
    since = timezone.now() - dt.timedelta(hours=hours)
    served = ServedSlateItem.objects.filter(slate__created_at__gte=since)
    counts = served.aggregate(
        total=Count("id"),
        **{f"p{pk}": Count("id", filter=Q(product_id=pk)) for pk in product_ids},
    )
    total = counts.pop("total") or 0
    return {int(key[1:]): (n / total if total else 0.0) for key, n in counts.items()}


def _caps_reached(caps: dict[int, float]) -> set[int]:
    """Capped products whose recent exposure share is at or above their cap.

    Shares are read at most every ``OVERRIDE_CACHE_SECONDS`` per process
    cache, so a cap can overshoot by what that many seconds of traffic adds.
    """
    if not caps:
        return set()
    key = "governance:exposure-shares:" + ",".join(map(str, sorted(caps)))
    shares = cache.get(key)
    if shares is None:
        shares = exposure_shares(sorted(caps), hours=settings.OVERRIDE_CAP_WINDOW_HOURS)
        cache.set(key, shares, timeout=settings.OVERRIDE_CACHE_SECONDS)
    return {product for product, cap in caps.items() if shares.get(product, 0.0) >= cap}


def training_exclusions(at: dt.datetime | None = None) -> set[str]:
    """External ids of customers whose events training must not learn from."""
    return set(
        overrides_in_force(at)
        .filter(kind=OverrideKind.EXCLUDE_TRAINING)
        .values_list("customer__external_id", flat=True)
    )


# Audit windows: what an audit reads, copied out of PostgreSQL into frames.


def audit_log(*, since: dt.datetime, until: dt.datetime) -> AuditLog:
    """The slates served in ``[since, until)`` and the feedback events around them.

    The slates are those created in the window and those that the window's
    events name: a replay logs a slate when it runs, but its events carry the
    moment the slate stands for. The events are those that occurred in the
    window and those that name one of its slates. Rows leave the server through
    ``COPY ... TO STDOUT`` and are parsed by pandas, which is many times faster
    than fetching a million rows through a cursor.
    """
    slate_table, item_table = ServedSlate._meta.db_table, ServedSlateItem._meta.db_table
    event_table = FeedbackEvent._meta.db_table
    window = {"since": since, "until": until}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS pg_temp.audit_slate")
        cursor.execute(
            f"""
            CREATE TEMPORARY TABLE audit_slate ON COMMIT DROP AS
            SELECT row_number() OVER (ORDER BY created_at, id) - 1 AS slate,
                id, customer_id
            FROM (
                SELECT id, created_at, customer_id FROM {slate_table}
                WHERE created_at >= %(since)s AND created_at < %(until)s
                UNION
                SELECT s.id, s.created_at, s.customer_id FROM {slate_table} s
                WHERE s.id IN (
                    SELECT slate_id FROM {event_table}
                    WHERE occurred_at >= %(since)s AND occurred_at < %(until)s
                        AND slate_id IS NOT NULL
                )
            ) AS window_slate
            """,
            window,
        )
        cursor.execute("ANALYZE audit_slate")
        slates = _copy_frame(
            cursor,
            "SELECT slate, customer_id FROM audit_slate ORDER BY slate",
            window,
            SLATE_COLUMNS,
        )
        slate_items = _copy_frame(
            cursor,
            f"""
            SELECT w.slate, i.product_id, i.position
            FROM {item_table} i JOIN audit_slate w ON w.id = i.slate_id
            """,
            window,
            SLATE_ITEM_COLUMNS,
        )
        event_columns = """
            e.kind, e.customer_id, e.product_id, w.slate, e.slate_position,
            CASE WHEN e.kind IN ('purchase', 'return') THEN e.order_id END,
            e.quantity, e.value, floor(extract(epoch FROM e.occurred_at))::bigint
        """
        events = _copy_frame(
            cursor,
            f"""
            SELECT {event_columns}
            FROM {event_table} e LEFT JOIN audit_slate w ON w.id = e.slate_id
            WHERE e.occurred_at >= %(since)s AND e.occurred_at < %(until)s
            UNION ALL
            SELECT {event_columns}
            FROM {event_table} e JOIN audit_slate w ON w.id = e.slate_id
            WHERE NOT (e.occurred_at >= %(since)s AND e.occurred_at < %(until)s)
            """,
            window,
            EVENT_COLUMNS,
        )
        products = _copy_frame(
            cursor,
            f"""
            SELECT p.id, p.merchant_id, p.is_active AND p.in_stock AND m.is_active,
                p.external_id, p.title, m.external_id
            FROM {Product._meta.db_table} p
            JOIN {Merchant._meta.db_table} m ON m.id = p.merchant_id
            """,
            window,
            PRODUCT_COLUMNS,
        )
    customer_ids = slates["customer_id"].dropna().unique().tolist()
    named_customers = (
        pd.concat([slates["customer_id"], events["customer_id"]])
        .dropna()
        .unique()
        .tolist()
    )
    return AuditLog.build(
        slates=slates,
        slate_items=slate_items,
        events=events,
        products=products,
        customer_groups=_customer_group_rows(customer_ids),
        customers=_customer_name_rows(named_customers),
    )


def _customer_name_rows(customer_ids: list[int]) -> list[dict[str, object]]:
    """The shop's id of each customer, for flags to name them by."""
    rows: list[dict[str, object]] = []
    for start in range(0, len(customer_ids), 10_000):
        rows += (
            {"customer_id": pk, "external_id": external_id}
            for pk, external_id in Customer.objects.filter(
                pk__in=customer_ids[start : start + 10_000]
            ).values_list("id", "external_id")
        )
    return rows


def _customer_group_rows(customer_ids: list[int]) -> list[dict[str, object]]:
    """One row per group of each customer, as ``customer_groups`` names them."""
    rows: list[dict[str, object]] = []
    for start in range(0, len(customer_ids), 10_000):
        customers = Customer.objects.filter(
            pk__in=customer_ids[start : start + 10_000]
        ).only("id", "country", "group_attributes", "group_attributes_consent")
        rows += (
            {"customer_id": customer.pk, "attribute": attribute, "value": value}
            for customer in customers
            for attribute, value in customer_groups(customer).items()
        )
    return rows


def _copy_frame(
    cursor: Any, query: str, params: dict[str, Any], columns: dict[str, str]
) -> pd.DataFrame:
    """Run ``query`` through COPY and read its rows into typed columns."""
    buffer = io.BytesIO()
    # The psycopg cursor itself: Django's debug wrapper passes no parameters.
    statement = f"COPY ({query}) TO STDOUT WITH (FORMAT csv)"
    with cursor.cursor.copy(statement, params) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    if not buffer.getbuffer().nbytes:
        return pd.DataFrame(
            {name: pd.Series(dtype=kind) for name, kind in columns.items()}
        )
    frame = pd.read_csv(
        buffer,
        header=None,
        names=list(columns),
        dtype={name: kind for name, kind in columns.items() if kind != "bool"},
        true_values=["t"],
        false_values=["f"],
        # NULL is an empty field; an empty text is a quoted one, and stays "".
        keep_default_na=False,
        na_values={name: [""] for name, kind in columns.items() if kind != "str"},
    )
    return frame.astype(columns)

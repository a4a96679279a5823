"""Reads of the commerce store that more than one caller needs."""

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Max, Min

from commerce.models import Customer, FeedbackEvent, Merchant, Product


@dataclass(frozen=True)
class StoreSummary:
    """Totals of what the store holds."""

    merchants: int
    products: int
    customers: int
    events_by_kind: dict[str, int]
    first_event_at: dt.datetime | None
    last_event_at: dt.datetime | None


def store_summary() -> StoreSummary:
    """Count what the store holds, with the time span of its event log."""
    by_kind = dict(
        FeedbackEvent.objects.values_list("kind").annotate(n=Count("id")).order_by()
    )
    span = FeedbackEvent.objects.aggregate(
        first=Min("occurred_at"), last=Max("occurred_at")
    )
    return StoreSummary(
        merchants=Merchant.objects.count(),
        products=Product.objects.count(),
        customers=Customer.objects.count(),
        events_by_kind=by_kind,
        first_event_at=span["first"],
        last_event_at=span["last"],
    )


def products_page(
    *,
    limit: int,
    offset: int,
    updated_since: dt.datetime | None = None,
    merchant: str | None = None,
) -> list[Product]:
    """Return one page of products, oldest change first, for catalogue sync."""
    products = Product.objects.select_related("merchant").order_by("updated_at", "id")
    if updated_since is not None:
        products = products.filter(updated_at__gte=updated_since)
    if merchant:
        products = products.filter(merchant__external_id=merchant)
    return list(products[offset : offset + limit])

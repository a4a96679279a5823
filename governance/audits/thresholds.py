"""The limits an audit judges its metrics by; settings ``AUDIT_<FIELD>`` set them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditThresholds:
    # Fairness across customer groups.
    fairness_min_ratio: float = 0.8
    """A group whose rate is below this share of the best group's is flagged
    (the four-fifths rule)."""
    fairness_min_group_slates: int = 30
    """Groups with fewer slates are pooled into one ``(other)`` group."""
    fairness_min_expected_positives: float = 5.0
    """Flag only if the worst group, at the best group's rate, would have had
    at least this many clicks (or purchases, hits): fewer is noise."""

    # Provider-side exposure.
    merchant_min_merit_share: float = 0.01
    """Merchants with a smaller share of sales are not judged for exposure."""
    merchant_min_exposure_ratio: float = 0.5
    """A merchant whose exposure share is below this multiple of its share of
    sales is flagged as under-exposed."""

    # Anomalies in feedback.
    burst_bucket_minutes: int = 60
    burst_z: float = 6.0
    """Robust z-score of a bucket's count, against the same product's (or
    customer's) other buckets, at or above which the bucket is a burst."""
    burst_min_events: int = 20
    """A burst also needs at least this many events in its bucket."""
    burst_kinds: tuple[str, ...] = (
        "click",
        "add_to_cart",
        "purchase",
        "return",
        "rating",
    )
    """Event kinds counted for bursts; impressions follow serving, not people."""
    bot_max_clicks_per_hour: int = 120
    """More clicks than this by one customer in one clock hour looks automated."""
    bot_min_clicks: int = 10
    bot_unmatched_click_share: float = 0.5
    """A customer with at least ``bot_min_clicks`` clicks, this share of them on
    products never shown to them before, looks automated."""
    customer_min_purchases: int = 5
    """Purchased products a customer needs before their returns are judged."""
    customer_return_share_max: float = 0.5
    """A customer who returned more than this share of the products they
    bought is flagged."""

    # Quality and over-promotion.
    quality_min_purchases: int = 5
    """Orders a product needs before its return rate is judged."""
    quality_min_ratings: int = 3
    return_rate_max: float = 0.3
    """A product with a higher return rate has poor quality signals."""
    rating_min: float = 2.5
    """So has a product whose average rating is at or below this."""
    over_promotion_merit_multiple: float = 2.0
    """A poor product whose exposure share is at least this multiple of its
    share of net sales (orders less returns) is over-promoted..."""
    over_promotion_share: float = 0.02
    """...and so is one whose exposure share is at least this, whatever its
    sales."""
    over_promotion_min_slate_items: int = 30
    """Either only once it was shown in at least this many slate items: a
    handful of showings is no promotion, and its share says nothing."""

    max_flags_per_rule: int = 100
    """At most this many flags per rule and audit, the strongest first, so a
    bad day cannot flood the review queue."""

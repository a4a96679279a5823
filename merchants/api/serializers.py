"""Query and output serializers of the merchant API.

The explanation serializers mirror the dataclasses of
``governance.explanations`` field for field, so the OpenAPI schema describes
what their ``to_dict()`` holds.
"""

import datetime as dt
import math
from typing import Any

from django.conf import settings
from rest_framework import serializers

from merchants.selectors import DEFAULT_DAYS, EARLIEST_DAY, MAX_DAYS, latest_day


class NumberField(serializers.FloatField):
    """A float that answers null rather than a non-finite value JSON cannot hold."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> float | None:  # type: ignore[override]
        number = float(value)
        return number if math.isfinite(number) else None


# Queries.


class WindowQuery(serializers.Serializer):
    days = serializers.IntegerField(
        min_value=1, max_value=MAX_DAYS, default=DEFAULT_DAYS, help_text="days counted"
    )
    until = serializers.DateField(
        required=False,
        help_text="the last day counted, from 1970-01-02 to a year past today; "
        "default the latest day with a served slate or an event on your products "
        "when that is before today, else today",
    )

    def validate_until(self, value: dt.date) -> dt.date:
        if not EARLIEST_DAY <= value <= latest_day():
            raise serializers.ValidationError(
                f"Give a day from {EARLIEST_DAY} to a year past today.",
                code="out_of_range",
            )
        return value


class MerchantProductListQuery(WindowQuery):
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
    offset = serializers.IntegerField(min_value=0, default=0)


class WhyNotQuery(serializers.Serializer):
    country = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text="the customers' country; empty for all customers",
    )
    k = serializers.IntegerField(
        min_value=1,
        max_value=settings.SERVING_MAX_K,
        default=10,
        help_text="slate size: how many products the shop shows at once",
    )


# Figures.


class WindowOut(serializers.Serializer):
    first_day = serializers.DateField()
    last_day = serializers.DateField()


class ProductFiguresOut(serializers.Serializer):
    shown = serializers.IntegerField(help_text="served slate items holding it")
    exposure = serializers.FloatField(
        help_text="those items weighted 1 / log2(1 + position)"
    )
    clicks = serializers.IntegerField()
    purchases = serializers.IntegerField(help_text="purchase events (order lines)")
    returns = serializers.IntegerField()
    return_rate = serializers.FloatField(
        allow_null=True, help_text="returns / purchases; null without purchases"
    )
    exposure_share = serializers.FloatField(
        help_text="share of the merchant's exposure"
    )
    sales_share = serializers.FloatField(help_text="share of the merchant's purchases")


class MerchantProductOut(serializers.Serializer):
    id = serializers.IntegerField(source="product.pk")
    sku = serializers.CharField(source="product.external_id")
    title = serializers.CharField(source="product.title")
    merchant = serializers.CharField(source="product.merchant.external_id")
    is_active = serializers.BooleanField(source="product.is_active")
    in_stock = serializers.BooleanField(source="product.in_stock")
    figures = ProductFiguresOut()


class MerchantProductListOut(serializers.Serializer):
    window = WindowOut()
    count = serializers.IntegerField()
    results = MerchantProductOut(many=True)


class DayOut(serializers.Serializer):
    day = serializers.DateField()
    shown = serializers.IntegerField()
    exposure = serializers.FloatField()
    clicks = serializers.IntegerField()
    purchases = serializers.IntegerField()
    returns = serializers.IntegerField()


class PositionOut(serializers.Serializer):
    position = serializers.IntegerField()
    count = serializers.IntegerField()


class MerchantProductDetailOut(MerchantProductOut):
    window = WindowOut()
    daily = DayOut(many=True)
    positions = PositionOut(many=True, help_text="times served at each position")


# Why recommended.


class ShareCountOut(serializers.Serializer):
    # Declared fields leave the class: ``label`` does not shadow Field.label.
    label = serializers.CharField()  # type: ignore[assignment]
    count = serializers.IntegerField()
    share = serializers.FloatField()


class AudienceOut(serializers.Serializer):
    shown = serializers.IntegerField()
    since = serializers.CharField(allow_null=True)
    countries = ShareCountOut(many=True)
    history_kinds = ShareCountOut(many=True)
    bought_before = ShareCountOut(many=True)
    reasons = ShareCountOut(many=True)


class HistoryItemAttributionOut(serializers.Serializer):
    sku = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    contribution = NumberField()
    sequence = NumberField()
    co_purchase = NumberField()
    repeat = NumberField()


class PooledHistoryAttributionOut(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]
    contribution = NumberField()
    sequence = NumberField()
    co_purchase = NumberField()
    repeat = NumberField()


class ScoreComponentsOut(serializers.Serializer):
    text = NumberField()
    learned_embedding = NumberField()
    item_bias = NumberField()
    co_purchase_and_popularity = NumberField()
    repeat = NumberField()
    total = NumberField()


class ScoreAttributionOut(serializers.Serializer):
    sku = serializers.CharField()
    score = NumberField()
    method = serializers.CharField()
    baseline = serializers.CharField()
    baseline_score = NumberField()
    attribution_sum = NumberField()
    convergence_delta = NumberField()
    history = HistoryItemAttributionOut(
        many=True, help_text="your products in the customer's history"
    )
    other_merchants = PooledHistoryAttributionOut(
        allow_null=True,
        help_text="the history's products of other merchants, added up and unnamed",
    )
    unassigned = NumberField(
        help_text="history with no product to carry it, and your products past "
        "those listed; history + other_merchants + unassigned = attribution_sum"
    )
    components = ScoreComponentsOut()


class NeighbourProductOut(serializers.Serializer):
    sku = serializers.CharField()
    title = serializers.CharField()
    cosine = NumberField()
    product_id = serializers.IntegerField(
        allow_null=True, help_text="your product's id when the SKU is yours"
    )


class WhyRecommendedOut(serializers.Serializer):
    sku = serializers.CharField()
    title = serializers.CharField()
    policy_version = serializers.CharField(
        allow_blank=True, help_text="empty when no policy is live"
    )
    audience = AudienceOut()
    attribution = ScoreAttributionOut(allow_null=True)
    attribution_basis = serializers.CharField()
    nearest = NeighbourProductOut(many=True)


# Why not.


class OverrideInForceOut(serializers.Serializer):
    override_id = serializers.IntegerField()
    kind = serializers.CharField()
    reason_code = serializers.CharField()
    reason = serializers.CharField()
    statement = serializers.CharField()
    scope = serializers.CharField()
    expires_at = serializers.CharField(allow_null=True)


class RankSummaryOut(serializers.Serializer):
    k = serializers.IntegerField()
    basis = serializers.CharField()
    customers = serializers.IntegerField()
    eligible = serializers.IntegerField()
    rank = serializers.IntegerField()
    rank_without_governance = serializers.IntegerField()
    score = NumberField()
    last_shown_score = NumberField()
    score_gap = NumberField()
    median_rank = NumberField()
    best_rank = serializers.IntegerField()
    worst_rank = serializers.IntegerField()
    share_shown = NumberField()
    constraints = serializers.ListField(child=serializers.CharField())


class WhyNotOut(serializers.Serializer):
    sku = serializers.CharField()
    title = serializers.CharField()
    customer_groups = serializers.DictField(child=serializers.CharField())
    reason = serializers.CharField(
        help_text="product_inactive, out_of_stock, merchant_inactive, "
        "not_in_policy, suppressed, cap_reached, no_policy, "
        "no_history_in_group, ranked_below or ranked_in_top_k"
    )
    message = serializers.CharField()
    other_blockers = serializers.ListField(child=serializers.CharField())
    override = OverrideInForceOut(allow_null=True)
    ranking = RankSummaryOut(allow_null=True)


# Governance.


class OverrideRecordOut(serializers.Serializer):
    override_id = serializers.IntegerField()
    product_id = serializers.IntegerField(help_text="the product it is set on")
    sku = serializers.CharField(help_text="that product's SKU")
    kind = serializers.CharField()
    kind_label = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    scope = serializers.CharField()
    reason_code = serializers.CharField()
    reason = serializers.CharField()
    statement = serializers.CharField()
    starts_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    state = serializers.ChoiceField(
        choices=["scheduled", "in force", "expired", "revoked"]
    )
    from_review = serializers.BooleanField()


class DecisionRecordOut(serializers.Serializer):
    review_item_id = serializers.IntegerField()
    rule = serializers.CharField()
    finding = serializers.CharField()
    decision = serializers.CharField()
    decision_label = serializers.CharField()
    reason_code = serializers.CharField()
    reason = serializers.CharField()
    statements = serializers.ListField(child=serializers.CharField())
    decided_at = serializers.DateTimeField(allow_null=True)


class GovernanceOut(serializers.Serializer):
    overrides = OverrideRecordOut(many=True)
    decisions = DecisionRecordOut(many=True)


# Ranking parameters.


class RankingPartOut(serializers.Serializer):
    name = serializers.CharField(source="part.name")
    label = serializers.CharField(source="part.label")  # type: ignore[assignment]
    description = serializers.CharField(source="part.description")
    personalised = serializers.BooleanField(source="part.personalised")
    share = NumberField(
        help_text="mean share of the differences between products' scores"
    )


class RankingOut(serializers.Serializer):
    policy_version = serializers.CharField(allow_blank=True)
    customers = serializers.IntegerField(help_text="customers the shares average")
    products = serializers.IntegerField(help_text="eligible products ranked")
    weights = RankingPartOut(many=True)
    computed_at = serializers.DateTimeField(allow_null=True)

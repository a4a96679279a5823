"""Input and output serializers of the shop API."""

import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from rest_framework import serializers

from commerce.models import EventKind, SlateReason


class AwareDateTimeField(serializers.DateTimeField):
    """A timestamp that must carry its offset; naive times are refused."""

    default_error_messages = {
        "timezone_required": (
            "Give the time with its UTC offset, e.g. 2011-11-02T10:15:00Z."
        )
    }

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("timezone_required")
        return super().to_internal_value(value)


class FeedbackEventIn(serializers.Serializer):
    client_event_id = serializers.CharField(max_length=128)
    kind = serializers.ChoiceField(choices=EventKind.choices)
    product = serializers.CharField(max_length=128, help_text="the product's SKU")
    customer = serializers.CharField(
        max_length=128, required=False, allow_null=True, default=None
    )
    session_id = serializers.CharField(
        max_length=128, required=False, allow_blank=True, default=""
    )
    quantity = serializers.IntegerField(min_value=1, max_value=1_000_000, default=1)
    value = serializers.DecimalField(
        max_digits=14,
        decimal_places=4,
        required=False,
        allow_null=True,
        default=None,
        help_text="money for purchases and returns, stars for ratings",
    )
    occurred_at = AwareDateTimeField()
    order_id = serializers.CharField(
        max_length=128, required=False, allow_blank=True, default=""
    )
    slate_id = serializers.UUIDField(required=False, allow_null=True, default=None)
    position = serializers.IntegerField(
        min_value=1, max_value=1000, required=False, allow_null=True, default=None
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["customer"] and not attrs["session_id"]:
            raise serializers.ValidationError(
                {"customer": "Give a customer or a session_id."}, code="required"
            )
        if attrs["value"] is not None and attrs["value"] < 0:
            raise serializers.ValidationError(
                {"value": "Must not be negative."}, code="min_value"
            )
        return attrs


class FeedbackBatchIn(serializers.Serializer):
    # The length is checked before any event is validated.
    events: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=FeedbackEventIn(),
        allow_empty=False,
        max_length=settings.API_MAX_EVENT_BATCH,
    )


class EventOutcomeOut(serializers.Serializer):
    index = serializers.IntegerField()
    client_event_id = serializers.CharField()
    event_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "duplicate"])


class FeedbackBatchOut(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    results = EventOutcomeOut(many=True)


class HealthOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    checks = serializers.DictField(child=serializers.CharField())


class ProductIn(serializers.Serializer):
    external_id = serializers.CharField(max_length=128, help_text="the SKU")
    merchant = serializers.CharField(
        max_length=128,
        required=False,
        help_text="merchant id; default merchant if absent",
    )
    title = serializers.CharField(max_length=500)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    price = serializers.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=Decimal(0),
        allow_null=True,
        default=None,
    )
    is_active = serializers.BooleanField(default=True)
    in_stock = serializers.BooleanField(default=True)


class ProductBatchIn(serializers.Serializer):
    products: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=ProductIn(), allow_empty=False, max_length=settings.API_MAX_PRODUCT_BATCH
    )


class ProductListQuery(serializers.Serializer):
    updated_since = serializers.DateTimeField(required=False)
    merchant = serializers.CharField(required=False, max_length=128)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
    offset = serializers.IntegerField(min_value=0, default=0)


class ProductOut(serializers.Serializer):
    external_id = serializers.CharField()
    merchant = serializers.CharField(source="merchant.external_id")
    title = serializers.CharField()
    description = serializers.CharField()
    price = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    is_active = serializers.BooleanField()
    in_stock = serializers.BooleanField()
    updated_at = serializers.DateTimeField()


class ProductSyncOut(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    queued_for_embedding = serializers.IntegerField()


class CustomerIn(serializers.Serializer):
    external_id = serializers.CharField(max_length=128)
    country = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )
    group_attributes = serializers.DictField(
        child=serializers.CharField(max_length=100), required=False, default=dict
    )
    group_attributes_consent = serializers.BooleanField(default=False)


class CustomerBatchIn(serializers.Serializer):
    customers: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=CustomerIn(), allow_empty=False, max_length=settings.API_MAX_PRODUCT_BATCH
    )


class CustomerSyncOut(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()


class SessionIn(serializers.Serializer):
    id = serializers.CharField(max_length=128)
    items = serializers.ListField(
        child=serializers.CharField(max_length=128), max_length=200, default=list
    )


class RecommendationContextIn(serializers.Serializer):
    country = serializers.CharField(max_length=100, required=False, allow_blank=True)
    page = serializers.CharField(max_length=100, required=False, allow_blank=True)
    exclude = serializers.ListField(
        child=serializers.CharField(max_length=128), max_length=1000, default=list
    )


class RecommendationIn(serializers.Serializer):
    customer = serializers.CharField(
        max_length=128, required=False, allow_null=True, default=None
    )
    session = SessionIn(required=False, allow_null=True, default=None)
    k = serializers.IntegerField(
        min_value=1, max_value=settings.SERVING_MAX_K, default=10
    )
    # The request field is named "context"; DRF moves declared fields off the
    # class, so Serializer.context stays the serializer context.
    context = RecommendationContextIn(required=False, default=dict)  # type: ignore[assignment]
    exclude_bought_within_days = serializers.IntegerField(
        min_value=1, max_value=36500, required=False, allow_null=True, default=None
    )
    as_of = AwareDateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="serve as at this moment, from the history before it "
        "(for replays and backtests); default: now",
    )
    non_personalised = serializers.BooleanField(
        default=False,
        help_text="recommend without profiling: the same popular products for everyone",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["customer"] and not attrs["session"]:
            raise serializers.ValidationError(
                {"customer": "Give a customer or a session."}, code="required"
            )
        return attrs


class SlateItemOut(serializers.Serializer):
    product = serializers.CharField()
    position = serializers.IntegerField()
    score = serializers.FloatField()
    propensity = serializers.FloatField()
    reason = serializers.ChoiceField(choices=SlateReason.choices)


class RecommendationOut(serializers.Serializer):
    slate_id = serializers.UUIDField()
    policy_version = serializers.CharField(allow_blank=True)
    items = SlateItemOut(many=True)

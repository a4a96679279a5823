"""Input and output serializers of the shop API."""

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from commerce.api.errors import flatten_validation_errors
from commerce.errors import IdempotencyKeyReusedError, InvalidEventsError
from commerce.models import EventKind, SlateReason
from commerce.services import feedback_reference_problems

EARLIEST_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
"""No shop's event or moment comes before this; earlier times are mistakes
that the policy's and the audits' clocks cannot hold."""


class AwareDateTimeField(serializers.DateTimeField):
    """A timestamp that must carry its offset; naive times and times before
    ``EARLIEST_TIME`` are refused."""

    default_error_messages = {
        "timezone_required": (
            "Give the time with its UTC offset, e.g. 2011-11-02T10:15:00Z."
        ),
        "too_early": "Must not be before 1970-01-01T00:00:00Z.",
    }

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("timezone_required")
            if parsed is not None and _before_earliest(parsed):
                self.fail("too_early")
        moment = super().to_internal_value(value)
        if _before_earliest(moment):
            self.fail("too_early")
        return moment


def _before_earliest(moment: dt.datetime) -> bool:
    """Whether an aware time is before ``EARLIEST_TIME``, or too early for UTC."""
    try:
        return moment < EARLIEST_TIME
    except OverflowError:
        return True


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

    def validate_occurred_at(self, value: dt.datetime) -> dt.datetime:
        if value > _latest_occurrence():
            raise serializers.ValidationError(
                "Must not be in the future (give the time with its UTC offset).",
                code="occurred_in_future",
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        problems = _event_rule_problems(attrs)
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


# The scale of a rating's value, in stars.
RATING_SCALE = (Decimal(1), Decimal(5))
_STARS = f"{RATING_SCALE[0]} to {RATING_SCALE[1]}"
# Kinds whose value is money; a rating's value is its stars.
_MONEY_KINDS = frozenset({EventKind.ADD_TO_CART, EventKind.PURCHASE, EventKind.RETURN})
# Kinds that are one act on one product: their quantity is 1.
_SINGLE_KINDS = frozenset({EventKind.IMPRESSION, EventKind.CLICK, EventKind.RATING})


def _event_rule_problems(event: dict[str, Any]) -> dict[str, ErrorDetail]:
    """Check an event's fields against each other and its kind; return the
    problem of each field that breaks a rule, by field name.

    - a customer or a session_id is given;
    - ``value`` is money (not negative) for carts, purchases and returns, 1
      to 5 stars for a rating, which needs it, and absent for other kinds;
    - ``quantity`` counts units for add_to_cart, purchase and return; an
      impression, a click or a rating is one, so its quantity is 1;
    - ``position`` comes only with the ``slate_id`` it is a position in.
    """
    problems: dict[str, ErrorDetail] = {}
    kind, value = event["kind"], event["value"]
    if not event["customer"] and not event["session_id"]:
        problems["customer"] = ErrorDetail(
            "Give a customer or a session_id.", code="required"
        )
    if value is not None and value < 0:
        problems["value"] = ErrorDetail("Must not be negative.", code="min_value")
    elif kind == EventKind.RATING:
        if value is None:
            problems["value"] = ErrorDetail(
                f"A rating needs a value: {_STARS} stars.", code="required"
            )
        elif not RATING_SCALE[0] <= value <= RATING_SCALE[1]:
            problems["value"] = ErrorDetail(
                f"A rating's value is {_STARS} stars.", code="out_of_scale"
            )
    elif value is not None and kind not in _MONEY_KINDS:
        problems["value"] = ErrorDetail(
            f"Events of kind {kind} have no value; it is money for carts, "
            "purchases and returns, stars for ratings.",
            code="not_allowed",
        )
    if event["quantity"] != 1 and kind in _SINGLE_KINDS:
        problems["quantity"] = ErrorDetail(
            f"Events of kind {kind} are one act each: their quantity is 1.",
            code="not_allowed",
        )
    if event["position"] is not None and event["slate_id"] is None:
        problems["position"] = ErrorDetail(
            "A position is a position in a slate: give its slate_id.",
            code="slate_id_required",
        )
    return problems


def _latest_occurrence() -> dt.datetime:
    """The latest occurred_at accepted now: the clocks of shop and server differ."""
    return timezone.now() + dt.timedelta(
        seconds=settings.API_EVENT_MAX_CLOCK_SKEW_SECONDS
    )


class FeedbackBatchIn(serializers.Serializer):
    # The length is checked before any event is validated.
    events: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=FeedbackEventIn(),
        allow_empty=False,
        max_length=settings.API_MAX_EVENT_BATCH,
    )


def validate_feedback_batch(data: Any) -> list[dict[str, Any]]:
    """Return the events of a posted batch as ``FeedbackBatchIn`` validates them.

    Running a dozen DRF fields for each event costs about as much as storing
    it, so a batch is first read in one plain pass that accepts only what
    ``FeedbackBatchIn`` accepts and yields the same values. A batch that pass is
    not sure of (a bad or unusual value anywhere) goes through the serializers
    event by event, so every refusal carries the serializer's errors.

    A batch whose events have problems raises InvalidEventsError naming every
    one: the field problems of all events, events that share a client event id
    but say different things, and what the events with valid fields name that
    is unknown or does not match their slate. A batch that is not a list of 1
    to ``API_MAX_EVENT_BATCH`` events raises DRF's ValidationError.
    """
    events = _plainly_valid_events(data)
    if events is None:
        valid, problems = _events_field_by_field(data)
    elif len({event["client_event_id"] for event in events}) == len(events):
        return events
    else:
        valid, problems = dict(enumerate(events)), []

    problems += _reused_client_event_ids(valid)
    if not problems:
        return list(valid.values())

    problems += feedback_reference_problems(valid)
    problems.sort(key=lambda problem: problem["index"])
    count = len({problem["index"] for problem in problems})
    raise InvalidEventsError(
        f"{count} events of the batch are invalid; nothing was stored.", problems
    )


def _events_field_by_field(
    data: Any,
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Validate each event with ``FeedbackEventIn``; return the valid ones by
    index and the field problems of the others."""
    events = data.get("events") if isinstance(data, dict) else None
    if type(events) is not list or not 0 < len(events) <= _MAX_EVENTS:
        batch = FeedbackBatchIn(data=data)
        batch.is_valid(raise_exception=True)
        return dict(enumerate(batch.validated_data["events"])), []

    valid, problems = {}, []
    for index, item in enumerate(events):
        event = FeedbackEventIn(data=item)
        if event.is_valid():
            valid[index] = event.validated_data
        else:
            problems += [
                {"index": index, **problem}
                for problem in flatten_validation_errors(event.errors, index)
            ]
    return valid, problems


def _reused_client_event_ids(
    events: dict[int, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Name every event that shares its client event id with another event of
    the batch that says something else."""
    indexes_of: dict[str, list[int]] = {}
    for index, event in events.items():
        indexes_of.setdefault(event["client_event_id"], []).append(index)
    problems = []
    for client_id, indexes in indexes_of.items():
        first = events[indexes[0]]
        if all(events[index] == first for index in indexes[1:]):
            continue
        listed = ", ".join(str(index) for index in indexes)
        problems += [
            {
                "index": index,
                "field": "client_event_id",
                "code": IdempotencyKeyReusedError.code,
                "message": f"Events {listed} share the client event id {client_id} "
                "but differ; give each event its own.",
            }
            for index in indexes
        ]
    return problems


class _NotPlain(Exception):
    """A value the plain pass leaves to the serializer to judge."""


# The serializer's own fields: the plain pass reads their limits, and parses
# the rarer decimal and UUID values with them.
_EVENT_FIELDS: dict[str, Any] = dict(FeedbackEventIn().fields)
# Read once, as FeedbackBatchIn reads it.
_MAX_EVENTS = settings.API_MAX_EVENT_BATCH
_EVENT_KINDS = frozenset(EventKind.values)
# Besides length, CharField refuses NUL and lone surrogates.
_UNSAFE_TEXT = re.compile(r"[\x00\ud800-\udfff]")


def _plainly_valid_events(data: Any) -> list[dict[str, Any]] | None:
    """Validate the batch in one pass, or return None to leave it to the serializer."""
    if not isinstance(data, dict):
        return None
    events = data.get("events")
    if type(events) is not list or not 0 < len(events) <= _MAX_EVENTS:
        return None
    zone = timezone.get_current_timezone()
    latest = _latest_occurrence()
    try:
        return [_plain_event(event, zone, latest) for event in events]
    except (_NotPlain, serializers.ValidationError, DjangoValidationError):
        return None


def _plain_event(event: Any, zone: dt.tzinfo, latest: dt.datetime) -> dict[str, Any]:
    """Read one event as FeedbackEventIn would, or raise _NotPlain."""
    if type(event) is not dict:
        raise _NotPlain
    kind = event.get("kind")
    if type(kind) is not str or kind not in _EVENT_KINDS:
        raise _NotPlain
    customer = event.get("customer")
    value = event.get("value")
    slate_id = event.get("slate_id")
    position = event.get("position")
    fields: dict[str, Any] = {
        "client_event_id": _text(event.get("client_event_id"), "client_event_id"),
        "kind": kind,
        "product": _text(event.get("product"), "product"),
        "customer": None if customer is None else _text(customer, "customer"),
        "session_id": _text(event.get("session_id", ""), "session_id"),
        "quantity": _whole(event.get("quantity", 1), "quantity"),
        "value": None
        if value is None
        else _EVENT_FIELDS["value"].run_validation(value),
        "occurred_at": _aware_time(event.get("occurred_at"), zone),
        "order_id": _text(event.get("order_id", ""), "order_id"),
        "slate_id": (
            None
            if slate_id is None
            else _EVENT_FIELDS["slate_id"].run_validation(slate_id)
        ),
        "position": None if position is None else _whole(position, "position"),
    }
    if not EARLIEST_TIME <= fields["occurred_at"] <= latest or _event_rule_problems(
        fields
    ):
        raise _NotPlain
    return fields


def _text(value: Any, name: str) -> str:
    """Read a CharField's value as DRF does: str or int, trimmed, within limits."""
    if type(value) is int:
        value = str(value)
    elif type(value) is not str:
        raise _NotPlain
    field = _EVENT_FIELDS[name]
    text = value.strip()
    if (
        not (text or field.allow_blank)
        or len(text) > field.max_length
        or _UNSAFE_TEXT.search(text)
    ):
        raise _NotPlain
    return text


def _whole(value: Any, name: str) -> int:
    field = _EVENT_FIELDS[name]
    if type(value) is not int or not field.min_value <= value <= field.max_value:
        raise _NotPlain
    return value


def _aware_time(value: Any, zone: dt.tzinfo) -> dt.datetime:
    """Read an AwareDateTimeField's value as DRF does for ISO 8601 with an offset."""
    if type(value) is not str:
        raise _NotPlain
    try:
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise _NotPlain
        return parsed.astimezone(zone)
    except (ValueError, OverflowError) as error:
        raise _NotPlain from error


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
    """One product of a sync. A stored product changes only in the fields sent;
    a new one needs a title and takes the defaults for the rest."""

    external_id = serializers.CharField(
        max_length=128, help_text="the SKU; once per batch"
    )
    merchant = serializers.CharField(
        max_length=128,
        required=False,
        help_text="merchant id; default merchant if absent. A stored SKU keeps "
        "its merchant: naming another refuses the batch",
    )
    title = serializers.CharField(
        max_length=500,
        required=False,
        help_text="required for a new product; a stored one keeps its title if absent",
    )
    description = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text='kept if absent; "" for a new product',
    )
    price = serializers.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=Decimal(0),
        required=False,
        allow_null=True,
        help_text="kept if absent; null clears it, and a new product has none",
    )
    is_active = serializers.BooleanField(
        required=False, help_text="kept if absent; true for a new product"
    )
    in_stock = serializers.BooleanField(
        required=False, help_text="kept if absent; true for a new product"
    )


class ProductBatchIn(serializers.Serializer):
    products: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=ProductIn(),
        allow_empty=False,
        max_length=settings.API_MAX_PRODUCT_BATCH,
        help_text="each SKU once; the batch is stored all or nothing",
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
    queued_for_embedding = serializers.IntegerField(
        help_text="new or retitled products whose embedding a worker was asked for"
    )
    embedding_deferred = serializers.IntegerField(
        help_text="such products left to the hourly embedding run, because the "
        "task queue could not take the task"
    )


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

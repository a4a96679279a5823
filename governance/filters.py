"""FilterSets of the staff pages' lists: the review queue, overrides and the log.

They read a page's query string. As on any GET form, a value that is not valid
(an unknown choice, a target too long) is left out and the other filters still
apply; a filter with a default reads such a value as its default.
"""

import datetime as dt
from typing import Any

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.http import HttpRequest, QueryDict
from django.utils import timezone
from django_filters.fields import ChoiceField

from commerce.models import Customer, Product
from governance.access import is_governance_admin
from governance.forms import PageForm
from governance.models import (
    OPEN_REVIEW_STATUSES,
    GovernanceEvent,
    Override,
    OverrideKind,
    ReviewItem,
    ReviewStatus,
    Severity,
    TargetType,
)
from governance.selectors import overrides_in_force

OPEN = "open"
"""The queue's default status: pending, claimed or escalated."""
ALL = "all"
"""The status or state that leaves the list unfiltered."""
ME = "me"
NOBODY = "none"


class DefaultChoiceField(ChoiceField):
    """A choice that reads as its default when it is missing or not a choice."""

    def __init__(self, *args: Any, default: str, **kwargs: Any) -> None:
        super().__init__(*args, empty_label=None, **kwargs)
        self.default = default

    def bound_data(self, data: Any, initial: Any) -> Any:
        return data if self.valid_value(data) else self.default

    def clean(self, value: Any) -> Any:
        return super().clean(value if self.valid_value(value) else self.default)


class DefaultChoiceFilter(django_filters.ChoiceFilter):
    """A choice filter that always filters, by its ``default`` when none is given."""

    field_class = DefaultChoiceField


class PageFilterSet(django_filters.FilterSet):
    """The filters of a staff page, read from its query string.

    The FilterSet is bound even to an empty query string, so that a filter's
    default applies on the page's first view too.
    """

    class Meta:
        form = PageForm

    def __init__(
        self, data: QueryDict, queryset: QuerySet[Any], *, request: HttpRequest
    ) -> None:
        super().__init__(data, queryset, request=request)

    def set_choices(self, name: str, choices: list[tuple[str, str]]) -> None:
        """Offer ``choices`` in filter ``name``; call before the form is built."""
        self.filters[name].extra["choices"] = choices


def parse_target(text: str) -> tuple[str, str]:
    """``product:42`` as (``product``, ``42``); a bare id has no type."""
    target_type, _, target_id = text.strip().rpartition(":")
    return target_type.strip(), target_id.strip()


class ReviewQueueFilter(PageFilterSet):
    """The review queue's filters; escalated items are a choice for admins only."""

    status = DefaultChoiceFilter(label="Status", default=OPEN, method="filter_status")
    severity = django_filters.ChoiceFilter(
        label="Severity", choices=Severity.choices, empty_label="any"
    )
    rule = django_filters.ChoiceFilter(label="Rule", empty_label="any")
    assignee = django_filters.ChoiceFilter(
        label="Assignee", empty_label="anyone", method="filter_assignee"
    )
    target = django_filters.CharFilter(
        label="Target",
        max_length=160,
        help_text="A SKU, a customer's id, or type:id such as product:85123A "
        "or customer:17838.",
        method="filter_target",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        include_escalated = is_governance_admin(self.request.user)
        self.set_choices(
            "status",
            [
                (OPEN, "open"),
                *(
                    (value, label)
                    for value, label in ReviewStatus.choices
                    if include_escalated or value != ReviewStatus.ESCALATED
                ),
                (ALL, "all"),
            ],
        )
        rules = ReviewItem.objects.order_by("rule").values_list("rule", flat=True)
        self.set_choices("rule", [(rule, rule) for rule in rules.distinct()])
        assignees = (
            get_user_model()
            .objects.filter(review_items__isnull=False)
            .distinct()
            .order_by("username")
            .values_list("username", flat=True)
        )
        self.set_choices(
            "assignee",
            [(ME, "me"), (NOBODY, "nobody"), *((name, name) for name in assignees)],
        )

    def filter_status(
        self, items: QuerySet[ReviewItem], name: str, status: str
    ) -> QuerySet[ReviewItem]:
        if status == OPEN:
            return items.filter(status__in=OPEN_REVIEW_STATUSES)
        if status == ALL:
            return items
        return items.filter(status=status)

    def filter_assignee(
        self, items: QuerySet[ReviewItem], name: str, assignee: str
    ) -> QuerySet[ReviewItem]:
        if assignee == ME:
            return items.filter(assignee_id=self.request.user.pk)
        if assignee == NOBODY:
            return items.filter(assignee__isnull=True)
        return items.filter(assignee__username=assignee)

    def filter_target(
        self, items: QuerySet[ReviewItem], name: str, target: str
    ) -> QuerySet[ReviewItem]:
        """Items on the target that ``target`` names, by the shop's id (a
        product's SKU, a customer's id) or by the stored database id."""
        target_type, reference = parse_target(target)
        named = Q(target_id=reference)
        if target_type in ("", TargetType.PRODUCT):
            named |= Q(
                target_type=TargetType.PRODUCT,
                target_id__in=_stored_ids(
                    Product.objects.filter(external_id=reference)
                ),
            )
        if target_type in ("", TargetType.CUSTOMER):
            named |= Q(
                target_type=TargetType.CUSTOMER,
                target_id__in=_stored_ids(
                    Customer.objects.filter(external_id=reference)
                ),
            )
        items = items.filter(named)
        return items.filter(target_type=target_type) if target_type else items


def _stored_ids(rows: QuerySet[Any]) -> list[str]:
    """The database ids of ``rows`` as a review item stores its target's."""
    return [str(pk) for pk in rows.values_list("pk", flat=True)]


class OverrideFilter(PageFilterSet):
    """The overrides' filters; the state is the one at ``now``."""

    state = DefaultChoiceFilter(
        label="State",
        default="active",
        choices=[
            ("active", "in force"),
            ("scheduled", "scheduled"),
            ("expired", "expired"),
            ("revoked", "revoked"),
            (ALL, "all"),
        ],
        method="filter_state",
    )
    kind = django_filters.ChoiceFilter(
        label="Kind", choices=OverrideKind.choices, empty_label="any"
    )
    product = django_filters.CharFilter(
        label="Product SKU", max_length=128, field_name="product__external_id"
    )

    def __init__(
        self, *args: Any, now: dt.datetime | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.now = now or timezone.now()

    def filter_state(
        self, overrides: QuerySet[Override], name: str, state: str
    ) -> QuerySet[Override]:
        now = self.now
        if state == "active":
            return overrides & overrides_in_force(now)
        if state == "scheduled":
            return overrides.filter(starts_at__gt=now, revoked_at__isnull=True)
        if state == "expired":
            return overrides.filter(expires_at__lte=now, revoked_at__isnull=True)
        if state == "revoked":
            return overrides.filter(revoked_at__isnull=False)
        return overrides


class EventLogFilter(PageFilterSet):
    """The governance event log's filters; actions and types are those logged."""

    action = django_filters.ChoiceFilter(label="Action", empty_label="any")
    target_type = django_filters.ChoiceFilter(label="Target type", empty_label="any")
    target_id = django_filters.CharFilter(label="Target id", max_length=128)
    actor = django_filters.CharFilter(
        label="Actor",
        max_length=150,
        help_text="A username, or a system label such as audit:3.",
        method="filter_actor",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        events = GovernanceEvent.objects.order_by()
        actions = events.values_list("action", flat=True).distinct()
        self.set_choices("action", [(a, a) for a in sorted(actions)])
        target_types = events.values_list("target_type", flat=True).distinct()
        self.set_choices("target_type", [(t, t) for t in sorted(target_types)])

    def filter_actor(
        self, events: QuerySet[GovernanceEvent], name: str, actor: str
    ) -> QuerySet[GovernanceEvent]:
        """A user by name, any case, or system labels that start with ``actor``."""
        return events.filter(
            Q(actor__username__iexact=actor) | Q(actor_label__istartswith=actor)
        )

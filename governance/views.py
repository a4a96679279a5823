"""The staff pages: the review queue, its items, overrides, audits and the log.

Views parse input with the forms and filter lists with the FilterSets, call
a service or read the models, and render a template. Every write goes through
``governance.services``; a domain error comes back as a message on the page
with a 4xx status.
"""

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import Case, Count, Q, QuerySet, Value, When
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from commerce.models import Customer, Merchant, Product, ServedSlateItem
from governance.access import (
    AdminRequiredMixin,
    StaffRequiredMixin,
    is_governance_admin,
    is_governance_staff,
)
from governance.charts import Series, chart
from governance.errors import GovernanceError, ReviewStateError, StaleReviewError
from governance.figures import chartable_series, figure_of, scalar_text
from governance.filters import EventLogFilter, OverrideFilter, ReviewQueueFilter
from governance.forms import (
    DecisionForm,
    EscalateForm,
    OverrideForm,
    RevokeOverrideForm,
    VersionForm,
)
from governance.models import (
    SEVERITY_PRIORITY,
    AuditRun,
    Decision,
    GovernanceEvent,
    Override,
    ReasonCode,
    ReviewItem,
    ReviewStatus,
    TargetType,
)
from governance.services import (
    claim_next_review_item,
    claim_review_item,
    create_override,
    decide_review_item,
    escalate_review_item,
    release_review_item,
    revoke_override,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
EXPOSURE_DAYS = 30
AUDIT_SECTIONS = ("fairness", "exposure", "anomalies", "quality")
"""The sections an audit run's metrics hold, in the order the page shows them."""


def render_page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> HttpResponse:
    context = {
        **context,
        "is_governance_staff": is_governance_staff(request.user),
        "is_governance_admin": is_governance_admin(request.user),
    }
    return render(request, f"governance/{template}", context, status=status)


def staff_user(request: HttpRequest) -> User:
    """The logged-in person; the access mixins have already admitted them."""
    if not isinstance(request.user, User):
        raise PermissionDenied("Log in first.")
    return request.user


def error_status(error: GovernanceError) -> int:
    """409 when the item moved on under the reviewer, else 400."""
    return 409 if isinstance(error, StaleReviewError | ReviewStateError) else 400


def paginate(request: HttpRequest, rows: QuerySet[Any]) -> Page:
    return Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))


def target_names(targets: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """How staff read each (type, id) target: a product by SKU and title, a
    customer or merchant by the shop's own id. Targets are stored by database
    id; one that no longer exists keeps its ``type:id``."""
    ids: dict[str, set[int]] = defaultdict(set)
    for target_type, target_id in targets:
        if target_id.isdigit():
            ids[target_type].add(int(target_id))
    names: dict[tuple[str, str], str] = {}
    for pk, sku, title in Product.objects.filter(
        pk__in=ids[TargetType.PRODUCT]
    ).values_list("id", "external_id", "title"):
        names[(TargetType.PRODUCT, str(pk))] = f"product {sku} ({title})"
    for pk, external_id in Customer.objects.filter(
        pk__in=ids[TargetType.CUSTOMER]
    ).values_list("id", "external_id"):
        names[(TargetType.CUSTOMER, str(pk))] = f"customer {external_id}"
    for pk, external_id in Merchant.objects.filter(
        pk__in=ids[TargetType.MERCHANT]
    ).values_list("id", "external_id"):
        names[(TargetType.MERCHANT, str(pk))] = f"merchant {external_id}"
    return names


def named_targets(rows: Iterable[Any]) -> list[tuple[Any, str]]:
    """Each item or flag with the name of its target."""
    rows = list(rows)
    names = target_names((row.target_type, row.target_id) for row in rows)
    return [
        (
            row,
            names.get(
                (row.target_type, row.target_id), f"{row.target_type}:{row.target_id}"
            ),
        )
        for row in rows
    ]


# The review queue.


class QueueView(StaffRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        items = (
            ReviewItem.objects.select_related("assignee")
            .annotate(flag_count=Count("flags"))
            .order_by("-priority", "due_at", "id")
        )
        if not is_governance_admin(request.user):
            items = items.exclude(status=ReviewStatus.ESCALATED)
        queue = ReviewQueueFilter(request.GET, items, request=request)

        pending_rules = ReviewItem.objects.filter(
            status=ReviewStatus.PENDING
        ).values_list("rule", flat=True)
        rule_families = sorted({rule.split(".")[0] for rule in pending_rules})
        page = paginate(request, queue.qs)
        return render_page(
            request,
            "queue.html",
            {
                "filter_form": queue.form,
                "page": page,
                "rows": named_targets(page),
                "rule_families": rule_families,
                "now": timezone.now(),
            },
        )


class ClaimNextView(StaffRequiredMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        rule_prefix = request.POST.get("rule_prefix", "").strip()
        item = claim_next_review_item(
            reviewer=staff_user(request), rule_prefix=rule_prefix
        )
        if item is None:
            messages.info(request, "Nothing is waiting in the queue.")
            return redirect("governance:queue")
        messages.success(request, f"You claimed item #{item.pk}.")
        return redirect("governance:item", pk=item.pk)


# One review item.


def review_item_for(request: HttpRequest, pk: int) -> ReviewItem:
    """The item, if this user may see it: escalated ones are for admins."""
    item = get_object_or_404(
        ReviewItem.objects.select_related("assignee", "decided_by"), pk=pk
    )
    if item.status == ReviewStatus.ESCALATED and not is_governance_admin(request.user):
        raise PermissionDenied("Escalated items are for governance administrators.")
    return item


class ReviewItemView(StaffRequiredMixin, View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        item = review_item_for(request, pk)
        return render_page(request, "item_detail.html", item_context(request, item))


@dataclass(frozen=True)
class ExposureDay:
    day: dt.date
    impressions: int
    share: float
    """The product's share of all slate items served that day."""


def daily_exposure(product_id: int, *, days: int) -> list[ExposureDay]:
    """How often the product was served on each of the last ``days`` days.

    Counts every slate item of the window to get the shares; the BRIN index
    on the slates' time keeps that a range scan.
    """
    today = timezone.localdate()
    first_day = today - dt.timedelta(days=days - 1)
    since = timezone.make_aware(dt.datetime.combine(first_day, dt.time.min))
    rows = (
        ServedSlateItem.objects.filter(slate__created_at__gte=since)
        .annotate(day=TruncDate("slate__created_at"))
        .values("day")
        .annotate(
            total=Count("id"), impressions=Count("id", filter=Q(product_id=product_id))
        )
    )
    by_day = {row["day"]: (row["impressions"], row["total"]) for row in rows}
    exposure = []
    for offset in range(days):
        day = first_day + dt.timedelta(days=offset)
        impressions, total = by_day.get(day, (0, 0))
        exposure.append(
            ExposureDay(day, impressions, impressions / total if total else 0.0)
        )
    return exposure


def charts_of(series: list[Series]) -> list[dict[str, Any]]:
    return [
        {
            "series": s,
            "svg": chart(s),
            "points": [(label, scalar_text(value)) for label, value in s.points],
        }
        for s in series
    ]


def item_target(item: ReviewItem) -> Product | Customer | None:
    if not item.target_id.isdigit():
        return None
    if item.target_type == TargetType.PRODUCT:
        return (
            Product.objects.select_related("merchant")
            .filter(pk=int(item.target_id))
            .first()
        )
    if item.target_type == TargetType.CUSTOMER:
        return Customer.objects.filter(pk=int(item.target_id)).first()
    return None


def item_context(
    request: HttpRequest,
    item: ReviewItem,
    *,
    decision_form: DecisionForm | None = None,
    escalate_form: EscalateForm | None = None,
    error: str = "",
) -> dict[str, Any]:
    user = staff_user(request)
    admin = is_governance_admin(user)
    flags = [
        {
            "flag": flag,
            "evidence": figure_of(flag.evidence),
            "thresholds": figure_of(flag.thresholds),
            "charts": charts_of(chartable_series(flag.evidence, "evidence")),
        }
        for flag in item.flags.select_related("audit_run").order_by("created_at", "id")
    ]
    target = item_target(item)
    target_key = (item.target_type, item.target_id)
    exposure: list[ExposureDay] = []
    exposure_chart = None
    if isinstance(target, Product):
        exposure = daily_exposure(target.pk, days=EXPOSURE_DAYS)
        exposure_chart = chart(
            Series(
                f"Slates showing {target.external_id} per day",
                [(day.day.isoformat(), day.impressions) for day in exposure],
                over_time=True,
            )
        )
    mine = item.status == ReviewStatus.CLAIMED and item.assignee_id == user.pk
    initial = {"version": item.version}
    return {
        "item": item,
        "target": target,
        "target_name": target_names([target_key]).get(
            target_key, f"{item.target_type}:{item.target_id}"
        ),
        "flags": flags,
        "exposure": exposure,
        "exposure_chart": exposure_chart,
        "mine": mine,
        "can_claim": item.status == ReviewStatus.PENDING
        or (item.status == ReviewStatus.ESCALATED and admin),
        "version_form": VersionForm(initial=initial),
        "decision_form": decision_form or DecisionForm(initial=initial),
        "escalate_form": escalate_form or EscalateForm(initial=initial),
        "overrides": item.overrides.select_related("product", "customer"),
        "history": GovernanceEvent.objects.filter(
            target_type="review_item", target_id=str(item.pk)
        )
        .select_related("actor")
        .order_by("occurred_at", "id"),
        "error": error,
    }


class ItemActionView(StaffRequiredMixin, View):
    """A button or form on the item page: call the service, then redirect.

    On bad input or a domain error the item page comes back with the message
    and the reviewer's input, and a 400 (or 409 when the item changed).
    """

    http_method_names = ["post"]
    form_class: type[VersionForm] = VersionForm

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        item = review_item_for(request, pk)
        form = self.form_class(request.POST)
        if not form.is_valid():
            return self.refused(
                request, item, form, "Nothing was changed: see the fields below.", 400
            )
        try:
            done = self.act(staff_user(request), item, form)
        except GovernanceError as error:
            logger.info(
                "Review action refused: %s",
                error.code,
                extra={"review_item_id": item.pk, "code": error.code},
            )
            item.refresh_from_db()
            if isinstance(error, StaleReviewError):
                # The page now shows the current item; a resubmit is informed.
                data = request.POST.copy()
                data["version"] = str(item.version)
                form = self.form_class(data)
                form.is_valid()
            return self.refused(request, item, form, error.message, error_status(error))
        return self.succeeded(request, done)

    def act(self, reviewer: User, item: ReviewItem, form: Any) -> ReviewItem:
        raise NotImplementedError

    def succeeded(self, request: HttpRequest, item: ReviewItem) -> HttpResponse:
        return redirect("governance:item", pk=item.pk)

    def refused(
        self,
        request: HttpRequest,
        item: ReviewItem,
        form: VersionForm,
        message: str,
        status: int,
    ) -> HttpResponse:
        context = item_context(
            request,
            item,
            error=message,
            decision_form=form if isinstance(form, DecisionForm) else None,
            escalate_form=form if isinstance(form, EscalateForm) else None,
        )
        return render_page(request, "item_detail.html", context, status=status)


class ClaimItemView(ItemActionView):
    def act(self, reviewer: User, item: ReviewItem, form: Any) -> ReviewItem:
        claimed = claim_review_item(
            reviewer=reviewer, item_id=item.pk, version=form.cleaned_data["version"]
        )
        messages.success(self.request, f"You claimed item #{item.pk}.")
        return claimed


class ReleaseItemView(ItemActionView):
    def act(self, reviewer: User, item: ReviewItem, form: Any) -> ReviewItem:
        released = release_review_item(
            reviewer=reviewer, item_id=item.pk, version=form.cleaned_data["version"]
        )
        messages.success(self.request, f"Item #{item.pk} is back in the queue.")
        return released

    def succeeded(self, request: HttpRequest, item: ReviewItem) -> HttpResponse:
        return redirect("governance:queue")


class EscalateItemView(ItemActionView):
    form_class = EscalateForm

    def act(self, reviewer: User, item: ReviewItem, form: Any) -> ReviewItem:
        escalated = escalate_review_item(
            reviewer=reviewer,
            item_id=item.pk,
            version=form.cleaned_data["version"],
            note=form.cleaned_data["note"],
        )
        messages.success(
            self.request, f"Item #{item.pk} is escalated to the administrators."
        )
        return escalated

    def succeeded(self, request: HttpRequest, item: ReviewItem) -> HttpResponse:
        return redirect("governance:queue")


class DecideItemView(ItemActionView):
    form_class = DecisionForm

    def act(self, reviewer: User, item: ReviewItem, form: Any) -> ReviewItem:
        data = form.cleaned_data
        decided = decide_review_item(
            reviewer=reviewer,
            item_id=item.pk,
            version=data["version"],
            decision=Decision(data["decision"]),
            reason_code=ReasonCode(data["reason_code"]),
            note=data["note"],
            override=form.decision_spec(),
        )
        messages.success(
            self.request,
            f"Item #{item.pk} decided: {decided.get_decision_display()}.",
        )
        return decided


# Overrides.


def override_state(override: Override, now: dt.datetime) -> str:
    if override.revoked_at is not None:
        return "revoked"
    if override.expires_at is not None and override.expires_at <= now:
        return "expired"
    if override.starts_at > now:
        return "scheduled"
    return "in force"


def overrides_page(
    request: HttpRequest, *, error: str = "", status: int = 200
) -> HttpResponse:
    now = timezone.now()
    overrides = Override.objects.select_related(
        "product", "customer", "created_by", "revoked_by", "review_item"
    ).order_by("-created_at", "-id")
    listed = OverrideFilter(request.GET, overrides, request=request, now=now)

    page = paginate(request, listed.qs)
    rows = [(override, override_state(override, now)) for override in page]
    return render_page(
        request,
        "override_list.html",
        {
            "filter_form": listed.form,
            "page": page,
            "rows": rows,
            "revoke_form": RevokeOverrideForm(),
            "error": error,
        },
        status=status,
    )


class OverrideListView(StaffRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return overrides_page(request)


class OverrideCreateView(AdminRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return render_page(request, "override_form.html", {"form": OverrideForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = OverrideForm(request.POST)
        error = ""
        if form.is_valid():
            try:
                override = create_override(
                    actor=staff_user(request), **form.service_arguments()
                )
            except GovernanceError as refused:
                error = refused.message
            else:
                messages.success(request, f"Override #{override.pk} is recorded.")
                return redirect("governance:overrides")
        else:
            error = "Nothing was recorded: see the fields below."
        return render_page(
            request, "override_form.html", {"form": form, "error": error}, status=400
        )


class RevokeOverrideView(AdminRequiredMixin, View):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = RevokeOverrideForm(request.POST)
        if not form.is_valid():
            return overrides_page(
                request, error="Give a reason for revoking the override.", status=400
            )
        try:
            revoke_override(
                actor=staff_user(request),
                override_id=pk,
                reason=form.cleaned_data["reason"],
            )
        except GovernanceError as error:
            return overrides_page(request, error=error.message, status=400)
        messages.success(request, f"Override #{pk} is revoked.")
        return redirect(reverse("governance:overrides") + "?state=revoked")


# Audits.


class AuditRunListView(StaffRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        runs = AuditRun.objects.annotate(flag_count=Count("flags")).order_by(
            "-started_at", "-id"
        )
        return render_page(
            request, "audit_list.html", {"page": paginate(request, runs)}
        )


class AuditRunView(StaffRequiredMixin, View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = get_object_or_404(AuditRun, pk=pk)
        metrics = run.metrics if isinstance(run.metrics, dict) else {"": run.metrics}
        # JSON keys come back in the database's order; known sections first.
        order = {name: rank for rank, name in enumerate(AUDIT_SECTIONS)}
        metrics = dict(
            sorted(
                metrics.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])
            )
        )
        sections = [
            {
                "name": name,
                "figure": figure_of(value),
                "charts": charts_of(chartable_series(value, str(name))),
            }
            for name, value in metrics.items()
        ]
        return render_page(
            request,
            "audit_detail.html",
            {
                "run": run,
                "sections": sections,
                "thresholds": figure_of(run.thresholds),
                "flags": named_targets(
                    run.flags.select_related("review_item")
                    .annotate(
                        severity_rank=Case(
                            *(
                                When(severity=severity, then=Value(rank))
                                for severity, rank in SEVERITY_PRIORITY.items()
                            ),
                            default=Value(0),
                        )
                    )
                    .order_by("-severity_rank", "rule", "id")
                ),
            },
        )


# The governance event log.


def event_changes(event: GovernanceEvent) -> list[tuple[str, str, str]]:
    """Each key that the event changed, with its value before and after.

    An event with nothing before (a creation) lists the values it set.
    """
    before = event.before if isinstance(event.before, dict) else {}
    after = event.after if isinstance(event.after, dict) else {}
    if not before:
        return [
            (key, "", scalar_text(value))
            for key, value in after.items()
            if value not in (None, "")
        ]
    return [
        (
            key,
            scalar_text(before.get(key)),
            scalar_text(after.get(key)) if key in after else "",
        )
        for key in dict.fromkeys([*before, *after])
        if before.get(key) != after.get(key)
    ]


def event_target_url(event: GovernanceEvent) -> str:
    if not event.target_id.isdigit():
        return ""
    if event.target_type == "review_item":
        return reverse("governance:item", args=[int(event.target_id)])
    if event.target_type == "audit_run":
        return reverse("governance:audit", args=[int(event.target_id)])
    return ""


class EventLogView(StaffRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        events = GovernanceEvent.objects.select_related("actor").order_by(
            "-occurred_at", "-id"
        )
        log = EventLogFilter(request.GET, events, request=request)

        page = paginate(request, log.qs)
        rows = [
            {
                "event": event,
                "changes": event_changes(event),
                "target_url": event_target_url(event),
            }
            for event in page
        ]
        return render_page(
            request,
            "event_log.html",
            {"filter_form": log.form, "page": page, "rows": rows},
        )

"""Every write of governance: the log, flags, the review queue and overrides.

Each function runs in one transaction and appends the governance events that
account for its change in that same transaction.
"""

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from commerce.models import Customer, Product
from governance.access import is_governance_admin
from governance.audits.findings import Finding
from governance.audits.sections import SECTIONS, run_sections
from governance.audits.thresholds import AuditThresholds
from governance.errors import (
    InvalidDecisionError,
    InvalidOverrideError,
    ReviewStateError,
    StaleReviewError,
)
from governance.models import (
    OPEN_REVIEW_STATUSES,
    PRODUCT_OVERRIDES,
    SEVERITY_PRIORITY,
    AuditRun,
    AuditStatus,
    Decision,
    Flag,
    GovernanceEvent,
    Override,
    OverrideKind,
    ReasonCode,
    ReviewItem,
    ReviewStatus,
    Severity,
    TargetType,
)
from governance.selectors import audit_log

logger = logging.getLogger(__name__)

Actor = User | None


def record_governance_event(
    *,
    action: str,
    target_type: str,
    target_id: str,
    actor: Actor = None,
    actor_label: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> GovernanceEvent:
    """Append one event; call it inside the transaction that makes the change."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("A governance event must be written with its change.")
    return GovernanceEvent.objects.create(
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor=actor,
        actor_label=actor_label,
        before=before,
        after=after,
        reason=reason,
    )


# Flags and the review queue.


@dataclass(frozen=True)
class FlagSpec:
    """What an audit found, before it is stored."""

    rule: str
    severity: Severity
    target_type: TargetType
    target_id: str
    summary: str
    evidence: dict[str, Any]
    thresholds: dict[str, Any]


def raise_flags(*, audit_run: AuditRun, flags: Iterable[FlagSpec]) -> list[Flag]:
    """Store an audit's flags and open (or join) a review item for each.

    A flag on a rule and target that already has an open review item joins
    it, raising its severity and priority if the new flag is worse, so one
    case is never queued twice.
    """
    stored = []
    with transaction.atomic():
        for spec in flags:
            item = _open_review_item(spec, audit_run)
            stored.append(
                Flag.objects.create(
                    audit_run=audit_run,
                    rule=spec.rule,
                    severity=spec.severity,
                    target_type=spec.target_type,
                    target_id=spec.target_id,
                    summary=spec.summary[:500],
                    evidence=spec.evidence,
                    thresholds=spec.thresholds,
                    review_item=item,
                )
            )
    return stored


def _open_review_item(spec: FlagSpec, audit_run: AuditRun) -> ReviewItem:
    priority = SEVERITY_PRIORITY[spec.severity]
    item = (
        ReviewItem.objects.select_for_update()
        .filter(
            rule=spec.rule,
            target_type=spec.target_type,
            target_id=spec.target_id,
            status__in=OPEN_REVIEW_STATUSES,
        )
        .first()
    )
    if item is not None:
        if priority > item.priority:
            before = _review_state(item)
            item.severity, item.priority = spec.severity, priority
            item.due_at = min(item.due_at, _due_at(spec.severity))
            item.version = F("version") + 1
            item.save(update_fields=["severity", "priority", "due_at", "version"])
            item.refresh_from_db()
            record_governance_event(
                action="review_item.raised",
                target_type="review_item",
                target_id=str(item.pk),
                actor_label=f"audit:{audit_run.pk}",
                before=before,
                after=_review_state(item),
                reason=spec.summary,
            )
        return item
    item = ReviewItem.objects.create(
        rule=spec.rule,
        target_type=spec.target_type,
        target_id=spec.target_id,
        title=spec.summary[:500],
        severity=spec.severity,
        priority=priority,
        due_at=_due_at(spec.severity),
    )
    record_governance_event(
        action="review_item.opened",
        target_type="review_item",
        target_id=str(item.pk),
        actor_label=f"audit:{audit_run.pk}",
        after=_review_state(item),
        reason=spec.summary,
    )
    return item


def _due_at(severity: str) -> dt.datetime:
    hours = float(settings.REVIEW_DUE_HOURS.get(str(severity), 72))
    return timezone.now() + dt.timedelta(hours=hours)


def _review_state(item: ReviewItem) -> dict[str, Any]:
    return {
        "status": item.status,
        "severity": item.severity,
        "priority": item.priority,
        "assignee": item.assignee_id,
        "decision": item.decision,
        "reason_code": item.reason_code,
        "version": item.version,
    }


def claim_next_review_item(
    *, reviewer: User, rule_prefix: str = ""
) -> ReviewItem | None:
    """Give the reviewer the most urgent pending item, or ``None``.

    ``SELECT ... FOR UPDATE SKIP LOCKED`` makes concurrent claims take
    different rows: a row another reviewer is claiming is skipped, not waited
    for, and never handed out twice.
    """
    with transaction.atomic():
        queue = ReviewItem.objects.filter(status=ReviewStatus.PENDING)
        if rule_prefix:
            queue = queue.filter(rule__startswith=rule_prefix)
        item = (
            queue.select_for_update(skip_locked=True)
            .order_by("-priority", "due_at", "id")
            .first()
        )
        if item is None:
            return None
        return _claim(item, reviewer)


def claim_review_item(*, reviewer: User, item_id: int, version: int) -> ReviewItem:
    """Claim one pending item the reviewer has chosen (escalated: administrators)."""
    with transaction.atomic():
        item = _locked(item_id, version)
        if item.status not in (ReviewStatus.PENDING, ReviewStatus.ESCALATED):
            raise ReviewStateError(
                f"Item {item.pk} is {item.status}; it cannot be claimed."
            )
        if item.status == ReviewStatus.ESCALATED and not is_governance_admin(reviewer):
            raise ReviewStateError(
                f"Item {item.pk} is escalated; only administrators may claim it."
            )
        return _claim(item, reviewer)


def _claim(item: ReviewItem, reviewer: User) -> ReviewItem:
    before = _review_state(item)
    item.status = ReviewStatus.CLAIMED
    item.assignee_id = reviewer.pk
    item.claimed_at = timezone.now()
    item.version += 1
    item.save(
        update_fields=["status", "assignee", "claimed_at", "version", "updated_at"]
    )
    record_governance_event(
        action="review_item.claimed",
        target_type="review_item",
        target_id=str(item.pk),
        actor=reviewer,
        before=before,
        after=_review_state(item),
    )
    return item


def _locked(item_id: int, version: int) -> ReviewItem:
    item = ReviewItem.objects.select_for_update().filter(pk=item_id).first()
    if item is None:
        raise ReviewStateError(f"Review item {item_id} does not exist.")
    if item.version != version:
        raise StaleReviewError(
            f"Review item {item_id} changed since it was loaded "
            f"(version {version}, now {item.version}); reload it and try again."
        )
    return item


def release_review_item(*, reviewer: User, item_id: int, version: int) -> ReviewItem:
    """Put a claimed item back in the queue."""
    with transaction.atomic():
        item = _locked(item_id, version)
        _require_claimed_by(item, reviewer)
        before = _review_state(item)
        item.status, item.assignee, item.claimed_at = ReviewStatus.PENDING, None, None
        item.version += 1
        item.save(
            update_fields=["status", "assignee", "claimed_at", "version", "updated_at"]
        )
        record_governance_event(
            action="review_item.released",
            target_type="review_item",
            target_id=str(item.pk),
            actor=reviewer,
            before=before,
            after=_review_state(item),
        )
        return item


def escalate_review_item(
    *, reviewer: User, item_id: int, version: int, note: str
) -> ReviewItem:
    """Hand a claimed item up to an administrator, with the reviewer's note."""
    if not note.strip():
        raise InvalidDecisionError("An escalation needs a note saying why.")
    with transaction.atomic():
        item = _locked(item_id, version)
        _require_claimed_by(item, reviewer)
        before = _review_state(item)
        item.status, item.assignee, item.claimed_at = ReviewStatus.ESCALATED, None, None
        item.escalation_note = note.strip()
        item.priority = max(item.priority, SEVERITY_PRIORITY[Severity.CRITICAL])
        item.version += 1
        item.save()
        record_governance_event(
            action="review_item.escalated",
            target_type="review_item",
            target_id=str(item.pk),
            actor=reviewer,
            before=before,
            after=_review_state(item),
            reason=note.strip(),
        )
        return item


def _require_claimed_by(item: ReviewItem, reviewer: User) -> None:
    if item.status != ReviewStatus.CLAIMED or item.assignee_id != reviewer.pk:
        raise ReviewStateError(
            f"Item {item.pk} is not claimed by you; claim it before acting on it."
        )


@dataclass(frozen=True)
class OverrideSpec:
    """The override a decision puts in force; its target comes from the item
    unless named."""

    kind: OverrideKind
    value: float | None = None
    group_attribute: str = ""
    group_value: str = ""
    expires_at: dt.datetime | None = None
    statement: str = ""
    product_id: int | None = None
    customer_id: int | None = None


def decide_review_item(
    *,
    reviewer: User,
    item_id: int,
    version: int,
    decision: Decision,
    reason_code: ReasonCode,
    note: str,
    override: OverrideSpec | None = None,
) -> ReviewItem:
    """Close a claimed item; an ``override`` decision puts its override in force.

    Refused when the reason code or note is missing, when an override
    decision names no override (or another decision names one), or when the
    item changed since the reviewer loaded ``version``.
    """
    if reason_code not in ReasonCode.values:
        raise InvalidDecisionError(f"Unknown reason code {reason_code!r}.")
    if decision not in Decision.values:
        raise InvalidDecisionError(f"Unknown decision {decision!r}.")
    if not note.strip():
        raise InvalidDecisionError("A decision needs a note.")
    if (decision == Decision.OVERRIDE) != (override is not None):
        raise InvalidDecisionError(
            "An override decision names exactly one override; other decisions none."
        )
    with transaction.atomic():
        item = _locked(item_id, version)
        _require_claimed_by(item, reviewer)
        before = _review_state(item)
        item.status = ReviewStatus.DECIDED
        item.decision, item.reason_code, item.note = decision, reason_code, note.strip()
        item.decided_by_id, item.decided_at = reviewer.pk, timezone.now()
        item.version += 1
        item.save()
        record_governance_event(
            action="review_item.decided",
            target_type="review_item",
            target_id=str(item.pk),
            actor=reviewer,
            before=before,
            after=_review_state(item),
            reason=f"{reason_code}: {note.strip()}",
        )
        if override is not None:
            product_id, customer_id = override.product_id, override.customer_id
            if product_id is None and customer_id is None:
                product_id, customer_id = _target_of(item, override.kind)
            create_override(
                actor=reviewer,
                kind=override.kind,
                product_id=product_id,
                customer_id=customer_id,
                value=override.value,
                group_attribute=override.group_attribute,
                group_value=override.group_value,
                expires_at=override.expires_at,
                reason_code=reason_code,
                statement=override.statement or ReasonCode(reason_code).label,
                review_item=item,
            )
        return item


def _target_of(item: ReviewItem, kind: OverrideKind) -> tuple[int | None, int | None]:
    if kind in PRODUCT_OVERRIDES and item.target_type == TargetType.PRODUCT:
        return int(item.target_id), None
    if (
        kind == OverrideKind.EXCLUDE_TRAINING
        and item.target_type == TargetType.CUSTOMER
    ):
        return None, int(item.target_id)
    raise InvalidDecisionError(
        f"A {kind} override does not fit a {item.target_type} item; name its target."
    )


def create_override(
    *,
    actor: User,
    kind: OverrideKind,
    reason_code: ReasonCode,
    statement: str,
    product_id: int | None = None,
    customer_id: int | None = None,
    value: float | None = None,
    group_attribute: str = "",
    group_value: str = "",
    starts_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    review_item: ReviewItem | None = None,
) -> Override:
    """Put an override in force, checked against its kind, and log it."""
    now = timezone.now()
    starts_at = starts_at or now
    _check_override(kind, product_id, customer_id, value, group_attribute, group_value)
    if expires_at is not None and expires_at <= starts_at:
        raise InvalidOverrideError("An override must expire after it starts.")
    if not statement.strip():
        raise InvalidOverrideError("An override needs a statement of its reasons.")
    if reason_code not in ReasonCode.values:
        raise InvalidOverrideError(f"Unknown reason code {reason_code!r}.")
    with transaction.atomic():
        if (
            product_id is not None
            and not Product.objects.filter(pk=product_id).exists()
        ):
            raise InvalidOverrideError(f"Product {product_id} does not exist.")
        if (
            customer_id is not None
            and not Customer.objects.filter(pk=customer_id).exists()
        ):
            raise InvalidOverrideError(f"Customer {customer_id} does not exist.")
        override = Override.objects.create(
            kind=kind,
            product_id=product_id,
            customer_id=customer_id,
            value=value,
            group_attribute=group_attribute,
            group_value=group_value,
            starts_at=starts_at,
            expires_at=expires_at,
            reason_code=reason_code,
            statement=statement.strip(),
            review_item=review_item,
            created_by=actor,
        )
        record_governance_event(
            action="override.created",
            target_type="override",
            target_id=str(override.pk),
            actor=actor,
            after=override_state(override),
            reason=f"{reason_code}: {statement.strip()}",
        )
    logger.info(
        "Override %s in force: %s",
        override.pk,
        override,
        extra={"override_id": override.pk, "kind": kind},
    )
    return override


def _check_override(
    kind: OverrideKind,
    product_id: int | None,
    customer_id: int | None,
    value: float | None,
    group_attribute: str,
    group_value: str,
) -> None:
    if kind not in OverrideKind.values:
        raise InvalidOverrideError(f"Unknown override kind {kind!r}.")
    if kind in PRODUCT_OVERRIDES and (product_id is None or customer_id is not None):
        raise InvalidOverrideError(
            f"A {kind} override names a product, not a customer."
        )
    if kind == OverrideKind.EXCLUDE_TRAINING and (
        customer_id is None or product_id is not None
    ):
        raise InvalidOverrideError("A training exclusion names a customer.")
    limits = {
        OverrideKind.CAP: (lambda v: 0 < v <= 1, "a share above 0 and at most 1"),
        OverrideKind.DEMOTE: (lambda v: 0 <= v < 1, "a multiplier from 0 to below 1"),
        OverrideKind.BOOST: (
            lambda v: 1 < v <= 100,
            "a multiplier above 1, at most 100",
        ),
        OverrideKind.PIN: (
            lambda v: v >= 1 and v == int(v) and v <= settings.SERVING_MAX_K,
            f"a whole position from 1 to {settings.SERVING_MAX_K}",
        ),
    }
    if kind in limits:
        accepts, wanted = limits[OverrideKind(kind)]
        if value is None or value != value or not accepts(value):
            raise InvalidOverrideError(f"A {kind} override's value must be {wanted}.")
    if bool(group_attribute) != bool(group_value):
        raise InvalidOverrideError(
            "A group scope names both the attribute and its value (or neither)."
        )
    if kind == OverrideKind.EXCLUDE_TRAINING and group_attribute:
        raise InvalidOverrideError(
            "A training exclusion leaves out all of the customer's events; "
            "it takes no group scope."
        )


def revoke_override(*, actor: User, override_id: int, reason: str) -> Override:
    """End an override now; it stays on record."""
    if not reason.strip():
        raise InvalidOverrideError("Revoking an override needs a reason.")
    with transaction.atomic():
        override = Override.objects.select_for_update().filter(pk=override_id).first()
        if override is None:
            raise InvalidOverrideError(f"Override {override_id} does not exist.")
        if override.revoked_at is not None:
            raise InvalidOverrideError(f"Override {override_id} is already revoked.")
        before = override_state(override)
        override.revoked_at, override.revoked_by_id = timezone.now(), actor.pk
        override.save(update_fields=["revoked_at", "revoked_by"])
        record_governance_event(
            action="override.revoked",
            target_type="override",
            target_id=str(override.pk),
            actor=actor,
            before=before,
            after=override_state(override),
            reason=reason.strip(),
        )
        return override


def override_state(override: Override) -> dict[str, Any]:
    return {
        "kind": override.kind,
        "product": override.product_id,
        "customer": override.customer_id,
        "value": override.value,
        "group": (
            f"{override.group_attribute}={override.group_value}"
            if override.group_attribute
            else "everyone"
        ),
        "starts_at": override.starts_at.isoformat(),
        "expires_at": override.expires_at.isoformat() if override.expires_at else None,
        "revoked_at": override.revoked_at.isoformat() if override.revoked_at else None,
        "reason_code": override.reason_code,
        "review_item": override.review_item_id,
    }


# Audits.

AUDIT_STAGES = ("load", *SECTIONS, "store")
"""What ``run_audit`` reports to ``on_progress``, in order, as each ends."""


def audit_thresholds() -> AuditThresholds:
    """The thresholds in force: each field from the setting ``AUDIT_<FIELD>``."""
    values = {
        field.name: getattr(settings, f"AUDIT_{field.name.upper()}")
        for field in fields(AuditThresholds)
    }
    values["burst_kinds"] = tuple(values["burst_kinds"])
    return AuditThresholds(**values)


def run_audit(
    *,
    since: dt.datetime,
    until: dt.datetime,
    triggered_by: str,
    on_progress: Callable[[str], None] | None = None,
) -> AuditRun:
    """Audit the slates and events of ``[since, until)``; store metrics and flags.

    The run is stored as running first, so that a long audit shows. Its
    metrics, its flags (each opening or joining a review item) and its final
    state are then written in one transaction with an ``audit.completed``
    event. A failure leaves nothing of that: the run is marked failed, with
    an ``audit.failed`` event, and the error raised again.
    """
    if until <= since:
        raise ValueError("An audit window must end after it starts.")
    thresholds = audit_thresholds()
    audit_run = AuditRun.objects.create(
        window_start=since,
        window_end=until,
        triggered_by=triggered_by,
        thresholds=asdict(thresholds),
    )
    progress = on_progress or (lambda stage: None)
    extra = {"audit_run_id": audit_run.pk}
    logger.info("Audit %s started: %s to %s", audit_run.pk, since, until, extra=extra)
    try:
        with transaction.atomic():
            started = time.perf_counter()
            log = audit_log(since=since, until=until)
            load_seconds = time.perf_counter() - started
            progress("load")

            outcome = run_sections(log, thresholds, on_section=progress)

            started = time.perf_counter()
            flags = raise_flags(
                audit_run=audit_run,
                flags=[_flag_spec(finding) for finding in outcome.findings],
            )
            audit_run.metrics = {
                **outcome.metrics,
                "seconds": {
                    "load": round(load_seconds, 3),
                    **{name: round(s, 3) for name, s in outcome.seconds.items()},
                    "store": round(time.perf_counter() - started, 3),
                },
            }
            audit_run.slate_count = len(log.slates)
            audit_run.slate_item_count = len(log.slate_items)
            audit_run.event_count = len(log.events)
            audit_run.status = AuditStatus.SUCCEEDED
            audit_run.finished_at = timezone.now()
            audit_run.save()
            record_governance_event(
                action="audit.completed",
                target_type="audit_run",
                target_id=str(audit_run.pk),
                actor_label=triggered_by,
                after=_audit_state(audit_run, flags),
                reason=f"{len(flags)} flags raised",
            )
            progress("store")
    except Exception as error:
        _fail_audit(audit_run, error)
        raise
    logger.info(
        "Audit %s succeeded: %s slates, %s events, %s flags",
        audit_run.pk,
        audit_run.slate_count,
        audit_run.event_count,
        len(flags),
        extra={**extra, "flags": len(flags)},
    )
    return audit_run


def _flag_spec(finding: Finding) -> FlagSpec:
    return FlagSpec(
        rule=finding.rule,
        severity=Severity(finding.severity),
        target_type=TargetType(finding.target_type),
        target_id=finding.target_id,
        summary=finding.summary,
        evidence=finding.evidence,
        thresholds=finding.thresholds,
    )


def _audit_state(audit_run: AuditRun, flags: list[Flag]) -> dict[str, Any]:
    flags_by_rule: dict[str, int] = {}
    for flag in flags:
        flags_by_rule[flag.rule] = flags_by_rule.get(flag.rule, 0) + 1
    return {
        "status": audit_run.status,
        "window_start": audit_run.window_start.isoformat(),
        "window_end": audit_run.window_end.isoformat(),
        "slates": audit_run.slate_count,
        "slate_items": audit_run.slate_item_count,
        "events": audit_run.event_count,
        "flags": flags_by_rule,
        "error": audit_run.error,
    }


def _fail_audit(audit_run: AuditRun, error: Exception) -> None:
    audit_run.status = AuditStatus.FAILED
    audit_run.error = f"{type(error).__name__}: {error}"[:5000]
    audit_run.finished_at = timezone.now()
    with transaction.atomic():
        audit_run.save(update_fields=["status", "error", "finished_at"])
        record_governance_event(
            action="audit.failed",
            target_type="audit_run",
            target_id=str(audit_run.pk),
            actor_label=audit_run.triggered_by,
            after=_audit_state(audit_run, []),
            reason=audit_run.error,
        )
    logger.error(
        "Audit %s failed: %s",
        audit_run.pk,
        audit_run.error,
        extra={"audit_run_id": audit_run.pk},
    )

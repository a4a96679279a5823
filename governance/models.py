"""The governance event log."""

from typing import Any

from django.conf import settings
from django.db import models


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete a logged governance event."""


class GovernanceEvent(models.Model):
    """An append-only record of a change that a person or the system accounts for.

    The actor is a user when a person acted, else ``actor_label`` names the
    system component (an importer, a scheduled audit).
    """

    occurred_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="governance_events",
    )
    actor_label = models.CharField(max_length=128, blank=True)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=128)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(
                fields=["target_type", "target_id"], name="gov_event_target_idx"
            ),
            models.Index(fields=["action", "occurred_at"], name="gov_event_action_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("Governance events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyError("Governance events cannot be deleted.")


class Severity(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


SEVERITY_PRIORITY = {
    Severity.LOW: 10,
    Severity.MEDIUM: 20,
    Severity.HIGH: 30,
    Severity.CRITICAL: 40,
}
"""A review item's default priority by its flag's severity (higher first)."""


class AuditStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AuditRun(models.Model):
    """One audit over a window of served slates and feedback events.

    ``metrics`` holds every figure the audit computed, by section (fairness,
    exposure, anomalies, quality); ``thresholds`` the settings it judged them by.
    """

    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=AuditStatus.choices, default=AuditStatus.RUNNING
    )
    triggered_by = models.CharField(max_length=128)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    slate_count = models.PositiveIntegerField(default=0)
    slate_item_count = models.PositiveIntegerField(default=0)
    event_count = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    thresholds = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(window_end__gt=models.F("window_start")),
                name="audit_window_not_empty",
            )
        ]

    def __str__(self) -> str:
        return (
            f"audit {self.pk} {self.window_start:%Y-%m-%d}..{self.window_end:%Y-%m-%d}"
        )


class TargetType(models.TextChoices):
    PRODUCT = "product"
    CUSTOMER = "customer"
    MERCHANT = "merchant"
    CUSTOMER_GROUP = "customer_group"
    CATALOGUE = "catalogue"


class Flag(models.Model):
    """Something an audit found that a person should look at.

    ``rule`` names the test that fired (``anomaly.burst``,
    ``quality.over_promotion``, ``fairness.ratio``...); ``evidence`` holds the
    figures behind it and ``thresholds`` the limits it crossed.
    """

    audit_run = models.ForeignKey(
        AuditRun, on_delete=models.CASCADE, related_name="flags"
    )
    rule = models.CharField(max_length=64)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    target_type = models.CharField(max_length=32, choices=TargetType.choices)
    target_id = models.CharField(max_length=128)
    summary = models.CharField(max_length=500)
    evidence = models.JSONField(default=dict, blank=True)
    thresholds = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    review_item = models.ForeignKey(
        "ReviewItem",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="flags",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["rule", "target_type", "target_id"], name="flag_target_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule} {self.target_type}:{self.target_id}"


class ReviewStatus(models.TextChoices):
    PENDING = "pending"
    CLAIMED = "claimed"
    ESCALATED = "escalated"
    DECIDED = "decided"


OPEN_REVIEW_STATUSES = (
    ReviewStatus.PENDING,
    ReviewStatus.CLAIMED,
    ReviewStatus.ESCALATED,
)


class Decision(models.TextChoices):
    APPROVE = "approve", "Approve (nothing to change)"
    OVERRIDE = "override", "Override"
    DISMISS = "dismiss", "Dismiss (false alarm)"


class ReasonCode(models.TextChoices):
    """Why a reviewer decided as they did; merchants see these labels."""

    LOW_QUALITY = "low_quality", "Poor quality signals (returns, ratings)"
    MANIPULATION = "manipulation", "Suspected manipulation of feedback"
    FRAUD = "fraud", "Fraudulent or automated customer activity"
    FAIRNESS = "fairness", "Unfair treatment of a customer group"
    OVER_EXPOSURE = "over_exposure", "Exposure out of proportion to merit"
    UNDER_EXPOSURE = "under_exposure", "Exposure too low for merit"
    POLICY_OK = "policy_ok", "Behaviour within policy"
    FALSE_POSITIVE = "false_positive", "The audit's signal was wrong"
    BUSINESS = "business", "Business or legal requirement"


class ReviewItem(models.Model):
    """A case in the human review queue, opened by one or more flags.

    Flags on the same rule and target join the open item rather than opening
    another. ``version`` rises with every change, so a decision made on a
    stale page can be refused.
    """

    rule = models.CharField(max_length=64)
    target_type = models.CharField(max_length=32, choices=TargetType.choices)
    target_id = models.CharField(max_length=128)
    title = models.CharField(max_length=500)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    priority = models.PositiveSmallIntegerField(default=0)
    due_at = models.DateTimeField()
    status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.PENDING
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="review_items",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    escalation_note = models.TextField(blank=True)
    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    reason_code = models.CharField(
        max_length=32, choices=ReasonCode.choices, blank=True
    )
    note = models.TextField(blank=True)
    """The reviewer's internal note; never shown to merchants."""
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="review_decisions",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "due_at", "id"]
        indexes = [
            models.Index(
                fields=["status", "-priority", "due_at", "id"], name="review_queue_idx"
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "target_type", "target_id"],
                condition=models.Q(status__in=OPEN_REVIEW_STATUSES),
                name="one_open_review_item_per_target",
            ),
            models.CheckConstraint(
                condition=models.Q(status=ReviewStatus.DECIDED) | models.Q(decision=""),
                name="decision_only_when_decided",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=ReviewStatus.DECIDED)
                | (~models.Q(decision="") & ~models.Q(reason_code="")),
                name="decided_items_have_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_REVIEW_STATUSES


class OverrideKind(models.TextChoices):
    SUPPRESS = "suppress", "Suppress (never show)"
    CAP = "cap", "Cap exposure share"
    DEMOTE = "demote", "Demote (score multiplier below 1)"
    BOOST = "boost", "Boost (score multiplier above 1)"
    PIN = "pin", "Pin at a position"
    EXCLUDE_TRAINING = "exclude_training", "Exclude customer's events from training"


PRODUCT_OVERRIDES = (
    OverrideKind.SUPPRESS,
    OverrideKind.CAP,
    OverrideKind.DEMOTE,
    OverrideKind.BOOST,
    OverrideKind.PIN,
)


class Override(models.Model):
    """A decision in force: what serving or training must do differently.

    ``value`` means, by kind: the cap's exposure share (0..1), the demotion's or
    boost's score multiplier, the pin's 1-based position; it is unused for
    suppression and training exclusion. The scope is everyone, or the
    customers whose ``group_attribute`` equals ``group_value`` (e.g. country).
    An override stops applying at ``expires_at`` or when revoked.
    """

    kind = models.CharField(max_length=32, choices=OverrideKind.choices)
    product = models.ForeignKey(
        "commerce.Product",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="overrides",
    )
    customer = models.ForeignKey(
        "commerce.Customer",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="overrides",
    )
    value = models.FloatField(null=True, blank=True)
    group_attribute = models.CharField(max_length=64, blank=True)
    group_value = models.CharField(max_length=128, blank=True)
    starts_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    reason_code = models.CharField(max_length=32, choices=ReasonCode.choices)
    statement = models.TextField()
    """The reasons in plain language, as merchants will read them."""
    review_item = models.ForeignKey(
        ReviewItem,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="overrides",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="overrides_created",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="overrides_revoked",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["kind", "expires_at"], name="override_kind_idx")
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(kind__in=PRODUCT_OVERRIDES)
                | models.Q(product__isnull=False, customer__isnull=True),
                name="product_override_names_product",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind=OverrideKind.EXCLUDE_TRAINING)
                | models.Q(customer__isnull=False, product__isnull=True),
                name="training_exclusion_names_customer",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind=OverrideKind.CAP)
                | models.Q(value__gt=0, value__lte=1),
                name="cap_is_a_share",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind=OverrideKind.DEMOTE)
                | models.Q(value__gte=0, value__lt=1),
                name="demotion_below_one",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind=OverrideKind.BOOST) | models.Q(value__gt=1),
                name="boost_above_one",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind=OverrideKind.PIN) | models.Q(value__gte=1),
                name="pin_position_from_one",
            ),
            models.CheckConstraint(
                condition=models.Q(group_attribute="", group_value="")
                | ~models.Q(group_attribute=""),
                name="group_scope_names_attribute",
            ),
        ]

    def __str__(self) -> str:
        target = self.product or self.customer
        return f"{self.get_kind_display()} {target}"

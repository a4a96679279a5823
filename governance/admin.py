"""Django admin for governance: every model, read-only.

Audits, flags, the queue and overrides change only through
``governance.services``, which check each change and log it in the same
transaction; an admin form would bypass both. So the admin reads them, and
the governance pages (or the services) change them.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from commerce.admin import ReadOnlyLogAdmin
from governance.models import AuditRun, Flag, GovernanceEvent, Override, ReviewItem


@admin.register(GovernanceEvent)
class GovernanceEventAdmin(ReadOnlyLogAdmin):
    """The log is append-only: the admin reads it and changes nothing."""

    list_display = [
        "occurred_at",
        "action",
        "target_type",
        "target_id",
        "actor",
        "actor_label",
    ]
    list_filter = ["action", "target_type"]
    search_fields = ["=target_id", "actor_label"]
    date_hierarchy = "occurred_at"


class FlagInline(admin.TabularInline):
    model = Flag
    fields = ("rule", "severity", "target_type", "target_id", "summary")
    readonly_fields = ("rule", "severity", "target_type", "target_id", "summary")
    extra = 0
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditRun)
class AuditRunAdmin(ReadOnlyLogAdmin):
    list_display = [
        "id",
        "window_start",
        "window_end",
        "status",
        "triggered_by",
        "slate_count",
        "event_count",
        "started_at",
    ]
    list_filter = ["status", "triggered_by"]
    date_hierarchy = "started_at"
    inlines = [FlagInline]


@admin.register(Flag)
class FlagAdmin(ReadOnlyLogAdmin):
    list_display = [
        "id",
        "rule",
        "severity",
        "target_type",
        "target_id",
        "audit_run",
        "review_item",
        "created_at",
    ]
    list_filter = ["severity", "rule", "target_type"]
    search_fields = ["=target_id", "summary"]
    list_select_related = ["audit_run", "review_item"]


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnlyLogAdmin):
    list_display = [
        "id",
        "title",
        "rule",
        "severity",
        "priority",
        "status",
        "assignee",
        "due_at",
        "decision",
    ]
    list_filter = ["status", "severity", "rule", "decision", "reason_code"]
    search_fields = ["=target_id", "title"]
    list_select_related = ["assignee"]
    inlines = [FlagInline]


@admin.register(Override)
class OverrideAdmin(ReadOnlyLogAdmin):
    list_display = [
        "id",
        "kind",
        "product",
        "customer",
        "value",
        "group_attribute",
        "group_value",
        "starts_at",
        "expires_at",
        "revoked_at",
        "reason_code",
    ]
    list_filter = ["kind", "reason_code", "group_attribute"]
    search_fields = ["product__external_id", "customer__external_id", "statement"]
    list_select_related = ["product", "customer"]
    raw_id_fields = ["product", "customer", "review_item"]

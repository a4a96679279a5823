from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from governance.models import GovernanceEvent


@admin.register(GovernanceEvent)
class GovernanceEventAdmin(admin.ModelAdmin):
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
    search_fields = ["target_id", "actor_label", "reason"]
    date_hierarchy = "occurred_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

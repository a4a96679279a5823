from django.contrib import admin

from commerce.admin import ReadOnlyLogAdmin
from governance.models import GovernanceEvent


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

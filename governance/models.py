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

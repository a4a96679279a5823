"""Writes to the governance log."""

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from governance.models import GovernanceEvent


def record_governance_event(
    *,
    action: str,
    target_type: str,
    target_id: str,
    actor: User | None = None,
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

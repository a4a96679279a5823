import pytest
from django.db import DatabaseError, connection, transaction

from governance.models import AppendOnlyError, GovernanceEvent
from governance.services import record_governance_event

pytestmark = pytest.mark.django_db


def logged_event() -> GovernanceEvent:
    with transaction.atomic():
        return record_governance_event(
            action="product.suppressed",
            target_type="product",
            target_id="42",
            actor_label="test",
            before={"suppressed": False},
            after={"suppressed": True},
            reason="returns",
        )


def test_event_is_written_with_before_and_after():
    event = logged_event()

    stored = GovernanceEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.target_id) == ("product.suppressed", "42")
    assert stored.before == {"suppressed": False}
    assert stored.after == {"suppressed": True}


def test_events_cannot_be_changed_or_deleted_through_the_orm():
    event = logged_event()
    event.reason = "rewritten"

    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()


def test_database_refuses_updates_and_deletes_too():
    event = logged_event()
    table = GovernanceEvent._meta.db_table

    for statement in (
        f"UPDATE {table} SET reason = 'rewritten' WHERE id = %s",
        f"DELETE FROM {table} WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [event.pk])
    assert GovernanceEvent.objects.get(pk=event.pk).reason == "returns"


@pytest.mark.django_db(transaction=True)
def test_an_event_outside_a_transaction_is_refused():
    with pytest.raises(RuntimeError, match="with its change"):
        record_governance_event(action="x", target_type="y", target_id="1")

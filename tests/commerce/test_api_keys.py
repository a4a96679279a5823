"""Revoking and rotating API keys, and the read-only admin of clients."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from commerce.models import ApiClient, ApiScope
from commerce.services import create_api_client
from governance.models import GovernanceEvent


def list_products(client, key: str):
    return client.get("/api/v1/products", HTTP_AUTHORIZATION=f"Api-Key {key}")


def revoke(name: str, *arguments: str) -> str:
    out = io.StringIO()
    call_command("revoke_api_client", name, *arguments, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_revoked_key_is_refused_with_the_api_error_body(client):
    key = create_api_client(name="shop-frontend", scopes=[ApiScope.CATALOGUE]).key
    before = list_products(client, key)

    output = revoke("shop-frontend", "--reason", "key leaked in a log")
    after = list_products(client, key)

    assert before.status_code == 200
    assert "shop-frontend is revoked" in output
    assert after.status_code == 401
    assert after.json() == {
        "error": {
            "code": "authentication_failed",
            "message": "Unknown or revoked API key.",
            "details": [],
        }
    }
    assert ApiClient.objects.get(name="shop-frontend").is_active is False


@pytest.mark.django_db
def test_revoking_writes_a_governance_event_with_the_person_and_reason():
    api_client = create_api_client(name="pos", scopes=[ApiScope.EVENTS]).client
    person = User.objects.create_user(username="ops-lead")

    revoke("pos", "--reason", "till replaced", "--user", "ops-lead")

    event = GovernanceEvent.objects.get(action="api_client.revoked")
    assert event.target_type == "api_client"
    assert event.target_id == str(api_client.pk)
    assert event.actor == person
    assert event.actor_label == "revoke_api_client"
    assert event.reason == "till replaced"
    assert event.before == {"is_active": True}
    assert event.after == {"is_active": False}


@pytest.mark.django_db
def test_rotation_keeps_the_source_and_serves_only_the_new_key(client):
    old = create_api_client(name="shop-2025", scopes=[ApiScope.CATALOGUE])
    new = create_api_client(
        name="shop-2026", scopes=[ApiScope.CATALOGUE], source=old.client.source
    )

    revoke("shop-2025", "--reason", "yearly rotation")

    assert new.client.source == "shop-2025"
    assert list_products(client, old.key).status_code == 401
    assert list_products(client, new.key).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("pos", "--reason", "again"), "[api_client_invalid] The client 'pos' is "),
        (
            ("till-9", "--reason", "gone"),
            "[api_client_invalid] No client named 'till-9'",
        ),
        (("pos", "--reason", " "), "[api_client_invalid] Revoking a client needs a"),
        (("pos", "--reason", "x", "--user", "nobody"), "No user 'nobody'."),
    ],
)
def test_revoking_twice_an_unknown_client_or_without_a_reason_fails(arguments, message):
    create_api_client(name="pos", scopes=[ApiScope.EVENTS])
    revoke("pos", "--reason", "first")

    with pytest.raises(CommandError) as raised:
        revoke(*arguments)

    assert str(raised.value).startswith(message)
    assert GovernanceEvent.objects.filter(action="api_client.revoked").count() == 1


@pytest.mark.django_db
def test_the_admin_lists_clients_read_only_and_never_shows_the_key_hash(
    admin_client,
):
    api_client = create_api_client(name="pos", scopes=[ApiScope.EVENTS]).client
    change_url = f"/admin/commerce/apiclient/{api_client.pk}/change/"

    listing = admin_client.get("/admin/commerce/apiclient/")
    detail = admin_client.get(change_url)
    edit = admin_client.post(change_url, {"is_active": ""})

    assert listing.status_code == 200
    assert api_client.key_prefix in listing.content.decode()
    assert detail.status_code == 200
    for page in (listing, detail):
        assert api_client.key_hash not in page.content.decode()
    assert edit.status_code == 403
    assert admin_client.get("/admin/commerce/apiclient/add/").status_code == 403
    assert ApiClient.objects.get(pk=api_client.pk).is_active is True

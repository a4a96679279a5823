"""POST /api/v1/events: idempotent batches, refused bad input, scoped keys."""

import json
import threading
from typing import Any

import pytest
from django.db import connections
from django.test import Client

from commerce.models import ApiScope, FeedbackEvent
from commerce.services import create_api_client
from tests.factories import CustomerFactory, ProductFactory

URL = "/api/v1/events"


@pytest.fixture
def catalogue() -> dict[str, Any]:
    return {
        "customer": CustomerFactory.create(external_id="17850"),
        "product": ProductFactory.create(external_id="85123A"),
    }


def key_for(*scopes: str, name: str = "shop-frontend") -> str:
    return create_api_client(name=name, scopes=list(scopes)).key


def post(client: Client, key: str | None, body: Any) -> Any:
    headers = {"Authorization": f"Api-Key {key}"} if key else {}
    payload = body if isinstance(body, str) else json.dumps(body)
    return client.post(URL, payload, content_type="application/json", headers=headers)


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "client_event_id": f"evt-{n}",
        "kind": "click",
        "product": "85123A",
        "customer": "17850",
        "occurred_at": "2011-11-02T10:15:00+00:00",
        **fields,
    }


@pytest.mark.django_db
def test_a_batch_is_stored_and_each_event_reported(client, catalogue):
    key = key_for(ApiScope.EVENTS)
    body = {
        "events": [
            event(1, kind="impression", slate_id=None),
            event(2, kind="purchase", quantity=3, value="7.65", order_id="581000"),
            event(3, customer=None, session_id="s-9", kind="add_to_cart"),
        ]
    }

    response = post(client, key, body)

    assert response.status_code == 200, response.json()
    answer = response.json()
    assert (answer["created"], answer["duplicates"]) == (3, 0)
    assert [r["status"] for r in answer["results"]] == ["created"] * 3
    purchase = FeedbackEvent.objects.get(client_event_id="evt-2")
    assert (purchase.kind, purchase.quantity, str(purchase.value)) == (
        "purchase",
        3,
        "7.6500",
    )
    assert purchase.source == "shop-frontend"
    assert answer["results"][1]["event_id"] == purchase.pk
    assert FeedbackEvent.objects.get(client_event_id="evt-3").session_id == "s-9"


@pytest.mark.django_db
def test_a_resent_batch_returns_the_original_result_and_stores_nothing(
    client, catalogue
):
    key = key_for(ApiScope.EVENTS)
    body = {"events": [event(1), event(2)]}
    first = post(client, key, body).json()

    again = post(client, key, {"events": [event(2), event(1), event(3)]})

    assert again.status_code == 200
    results = again.json()["results"]
    assert [(r["client_event_id"], r["status"]) for r in results] == [
        ("evt-2", "duplicate"),
        ("evt-1", "duplicate"),
        ("evt-3", "created"),
    ]
    original_ids = {r["client_event_id"]: r["event_id"] for r in first["results"]}
    assert results[0]["event_id"] == original_ids["evt-2"]
    assert results[1]["event_id"] == original_ids["evt-1"]
    assert FeedbackEvent.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_identical_batches_sent_at_once_are_stored_once(catalogue):
    key = key_for(ApiScope.EVENTS)
    body = {"events": [event(n) for n in range(50)]}
    answers: list[Any] = []
    start = threading.Barrier(4)

    def send() -> None:
        start.wait()
        answers.append(post(Client(), key, body))
        connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [answer.status_code for answer in answers] == [200] * 4
    assert FeedbackEvent.objects.count() == 50
    created = sum(answer.json()["created"] for answer in answers)
    assert created == 50
    ids = {tuple(r["event_id"] for r in a.json()["results"]) for a in answers}
    assert len(ids) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad_event", "field", "code"),
    [
        ({"product": "NO-SUCH-SKU"}, "product", "unknown_product"),
        ({"customer": "99999"}, "customer", "unknown_customer"),
        ({"kind": "purchase", "quantity": -2}, "quantity", "min_value"),
        ({"occurred_at": "2011-11-02T10:15:00"}, "occurred_at", "timezone_required"),
        ({"kind": "teleport"}, "kind", "invalid_choice"),
        ({"value": "-1"}, "value", "min_value"),
        ({"customer": None}, "customer", "required"),
        (
            {"slate_id": "0b6f9c1e-1111-4c4c-9a9a-222222222222"},
            "slate_id",
            "unknown_slate",
        ),
    ],
)
def test_a_bad_event_refuses_the_batch_naming_index_and_field(
    client, catalogue, bad_event, field, code
):
    key = key_for(ApiScope.EVENTS)
    body = {"events": [event(1), event(2, **bad_event), event(3)]}

    response = post(client, key, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] in {"invalid_request", "invalid_events"}
    assert {"index": 1, "field": field, "code": code} in [
        {k: d.get(k) for k in ("index", "field", "code")} for d in error["details"]
    ]
    assert FeedbackEvent.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_by_field(client, catalogue, literal):
    key = key_for(ApiScope.EVENTS)
    good = json.dumps(event(1))
    bad = json.dumps(event(2, value="PLACEHOLDER")).replace('"PLACEHOLDER"', literal)

    response = post(client, key, f'{{"events": [{good}, {bad}]}}')

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert [(d["index"], d["field"]) for d in details] == [(1, "value")]
    assert FeedbackEvent.objects.count() == 0


@pytest.mark.django_db
def test_an_oversized_batch_is_refused(client, catalogue, settings):
    key = key_for(ApiScope.EVENTS)
    body = {"events": [event(n) for n in range(settings.API_MAX_EVENT_BATCH + 1)]}

    response = post(client, key, body)

    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["code"] == "max_length"
    assert FeedbackEvent.objects.count() == 0


@pytest.mark.django_db
def test_malformed_json_gets_a_stable_code(client, catalogue):
    response = post(client, key_for(ApiScope.EVENTS), '{"events": [')

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request"


@pytest.mark.django_db
def test_keys_without_the_scope_or_unknown_keys_are_refused(client, catalogue):
    catalogue_only = key_for(ApiScope.CATALOGUE)
    body = {"events": [event(1)]}

    wrong_scope = post(client, catalogue_only, body)
    no_key = post(client, None, body)
    bad_key = post(client, "grk_not-a-real-key", body)

    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["error"]["code"] == "permission_denied"
    assert no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "not_authenticated"
    assert bad_key.status_code == 401
    assert bad_key.json()["error"]["code"] == "authentication_failed"
    assert FeedbackEvent.objects.count() == 0


@pytest.mark.django_db
def test_only_a_hash_of_the_key_is_stored():
    issued = create_api_client(name="pos", scopes=[ApiScope.EVENTS])

    issued.client.refresh_from_db()
    assert issued.key not in (issued.client.key_hash, issued.client.key_prefix)
    assert issued.key.startswith(issued.client.key_prefix)


@pytest.mark.django_db
def test_health_is_open_and_reports_the_database(client):
    response = client.get("/api/v1/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}

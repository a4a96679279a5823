"""POST /api/v1/events: idempotent batches, refused bad input, scoped keys."""

import datetime as dt
import json
import random
import threading
import time
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test import Client

from commerce.api.serializers import FeedbackBatchIn, _plainly_valid_events
from commerce.models import ApiScope, FeedbackEvent, Product
from commerce.services import ServedItem, create_api_client, log_served_slate
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
def test_an_event_repeated_within_a_batch_is_stored_once(client, catalogue):
    key = key_for(ApiScope.EVENTS)

    response = post(client, key, {"events": [event(1), event(2), event(1)]})

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["created", "created", "duplicate"]
    assert results[2]["event_id"] == results[0]["event_id"]
    assert FeedbackEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_product_deleted_while_a_batch_is_stored_is_refused_not_a_500(catalogue):
    key = key_for(ApiScope.EVENTS)
    doomed = ProductFactory.create(external_id="DOOMED")
    answers: list[Any] = []

    def send() -> None:
        sender = Client(raise_request_exception=False)
        answers.append(post(sender, key, {"events": [event(1, product="DOOMED")]}))
        connections.close_all()

    with transaction.atomic():
        Product.objects.filter(pk=doomed.pk).delete()
        thread = threading.Thread(target=send)
        thread.start()
        _wait_until_a_query_waits_for_a_lock()
    thread.join()

    assert answers[0].status_code == 400
    details = answers[0].json()["error"]["details"]
    assert [(d["index"], d["field"], d["code"]) for d in details] == [
        (0, "product", "unknown_product")
    ]
    assert FeedbackEvent.objects.count() == 0


def problems_of(response: Any) -> list[tuple[int, str, str]]:
    return [
        (d["index"], d["field"], d["code"]) for d in response.json()["error"]["details"]
    ]


@pytest.fixture
def slates(catalogue) -> dict[str, str]:
    """A k=5 slate served to customer 12347 and one served to session s-1."""
    CustomerFactory.create(external_id="12348")
    shown = [ProductFactory.create(external_id=f"SHOWN-{n}") for n in range(1, 6)]
    items = [ServedItem(product.pk, 1.0, 0.2, "model") for product in shown]
    served = {
        "customer": log_served_slate(
            customer_id=CustomerFactory.create(external_id="12347").pk,
            session_id="",
            context={},
            policy_version="",
            items=items,
        ),
        "session": log_served_slate(
            customer_id=None,
            session_id="s-1",
            context={},
            policy_version="",
            items=items,
        ),
    }
    return {name: str(slate.id) for name, slate in served.items()}


def on_slate(n: int, slate_id: str | None, **fields: Any) -> dict[str, Any]:
    """A click at position 3 of a slate, by customer 12347 unless fields say."""
    shown = {
        "customer": "12347",
        "product": "SHOWN-3",
        "slate_id": slate_id,
        "position": 3,
    }
    return event(n, **{**shown, **fields})


@pytest.mark.django_db
def test_events_that_match_their_slate_are_stored_with_it(client, slates):
    key = key_for(ApiScope.EVENTS)
    body = {
        "events": [
            on_slate(1, slates["customer"], kind="impression"),
            on_slate(2, slates["customer"], position=None),
            on_slate(3, slates["session"], customer=None, session_id="s-1"),
            on_slate(4, slates["customer"], kind="rating", value="4.5"),
        ]
    }

    response = post(client, key, body)

    assert response.status_code == 200, response.json()
    assert response.json()["created"] == 4
    stored = FeedbackEvent.objects.order_by("client_event_id")
    assert [(str(e.slate_id), e.slate_position) for e in stored] == [
        (slates["customer"], 3),
        (slates["customer"], None),
        (slates["session"], 3),
        (slates["customer"], 3),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("slate", "fields", "field", "code"),
    [
        ("customer", {"customer": "12348"}, "customer", "slate_customer_mismatch"),
        (
            "session",
            {"customer": None, "session_id": "s-2"},
            "session_id",
            "slate_customer_mismatch",
        ),
        ("session", {}, "customer", "slate_customer_mismatch"),
        ("customer", {"product": "85123A"}, "product", "not_in_slate"),
        ("customer", {"position": 77}, "position", "wrong_position"),
        ("customer", {"position": 2}, "position", "wrong_position"),
        (None, {}, "position", "slate_id_required"),
        ("customer", {"kind": "rating", "value": "99"}, "value", "out_of_scale"),
        ("customer", {"kind": "rating", "value": "0.5"}, "value", "out_of_scale"),
        ("customer", {"kind": "rating"}, "value", "required"),
        ("customer", {"kind": "rating", "value": None}, "value", "required"),
        ("customer", {"value": "3"}, "value", "not_allowed"),
        ("customer", {"kind": "impression", "quantity": 2}, "quantity", "not_allowed"),
    ],
)
def test_an_event_that_does_not_fit_its_slate_or_kind_refuses_the_batch(
    client, slates, slate, fields, field, code
):
    key = key_for(ApiScope.EVENTS)
    slate_id = slates[slate] if slate else None
    body = {
        "events": [
            on_slate(1, slates["customer"]),
            on_slate(2, slate_id, **fields),
            on_slate(3, slates["customer"]),
        ]
    }

    response = post(client, key, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_events"
    assert problems_of(response) == [(1, field, code)]
    assert FeedbackEvent.objects.count() == 0


@pytest.mark.django_db
def test_quantity_and_value_follow_the_kind(client, catalogue):
    key = key_for(ApiScope.EVENTS)
    body = {
        "events": [
            event(1, kind="add_to_cart", quantity=4),
            event(2, kind="purchase", quantity=2, value="15.30"),
            event(3, kind="return", quantity=1, value="7.65"),
            event(4, kind="rating", value="1"),
            event(5, kind="rating", value="5"),
        ]
    }

    response = post(client, key, body)

    assert response.status_code == 200, response.json()
    assert response.json()["created"] == 5


@pytest.mark.django_db
def test_an_event_from_the_future_is_refused(client, catalogue, settings):
    settings.API_EVENT_MAX_CLOCK_SKEW_SECONDS = 300
    key = key_for(ApiScope.EVENTS)
    now = dt.datetime.now(dt.UTC)
    body = {
        "events": [
            event(1, occurred_at=(now + dt.timedelta(seconds=60)).isoformat()),
            event(2, occurred_at="2099-01-01T00:00:00+00:00"),
            event(3, occurred_at=(now + dt.timedelta(minutes=10)).isoformat()),
            event(4, occurred_at="2011-11-02T10:15:00+00:00"),
        ]
    }

    response = post(client, key, body)

    assert response.status_code == 400
    assert problems_of(response) == [
        (1, "occurred_at", "occurred_in_future"),
        (2, "occurred_at", "occurred_in_future"),
    ]
    assert FeedbackEvent.objects.count() == 0

    body["events"] = [body["events"][0], body["events"][3]]
    assert post(client, key, body).status_code == 200
    assert FeedbackEvent.objects.count() == 2


@pytest.mark.django_db
def test_one_answer_names_every_problem_of_the_batch(client, slates):
    key = key_for(ApiScope.EVENTS)
    body = {
        "events": [
            event(1, customer="99999"),
            event(2, slate_id="0b6f9c1e-1111-4c4c-9a9a-222222222222"),
            event(3, customer=None),
            on_slate(4, slates["customer"], customer="12348", position=4),
            event(5, quantity=0, product="NO-SUCH-SKU"),
            event(6),
        ]
    }

    response = post(client, key, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_events"
    assert problems_of(response) == [
        (0, "customer", "unknown_customer"),
        (1, "slate_id", "unknown_slate"),
        (2, "customer", "required"),
        (3, "customer", "slate_customer_mismatch"),
        (3, "position", "wrong_position"),
        (4, "quantity", "min_value"),
    ]
    assert FeedbackEvent.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "changed"),
    [
        ({"kind": "add_to_cart"}, "kind"),
        (
            {"product": "85123A", "slate_id": None, "position": None},
            "product_id, slate_id, slate_position",
        ),
        ({"customer": "12348"}, "customer_id"),
        ({"session_id": "s-9", "slate_id": "customer"}, "session_id, slate_id"),
        ({"kind": "purchase", "quantity": 2}, "kind, quantity"),
        ({"kind": "purchase", "value": "7.65"}, "kind, value"),
        ({"occurred_at": "2011-11-02T10:16:00+00:00"}, "occurred_at"),
        ({"order_id": "581000"}, "order_id"),
        ({"slate_id": "customer"}, "slate_id"),
        ({"product": "SHOWN-2", "position": 2}, "product_id, slate_position"),
    ],
)
def test_a_resent_client_event_id_that_says_something_else_is_refused(
    client, slates, change, changed
):
    key = key_for(ApiScope.EVENTS)
    # By customer 12347 in session s-1: either slate fits it.
    original = on_slate(1, slates["session"], session_id="s-1")
    assert post(client, key, {"events": [original]}).status_code == 200
    if change.get("slate_id"):
        change["slate_id"] = slates[change["slate_id"]]

    response = post(client, key, {"events": [event(2), {**original, **change}]})

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert problems_of(response) == [(1, "client_event_id", "idempotency_key_reused")]
    assert f"another {changed};" in error["details"][0]["message"]
    assert list(FeedbackEvent.objects.values_list("client_event_id", flat=True)) == [
        "evt-1"
    ]


@pytest.mark.django_db
def test_a_resend_of_the_same_event_is_a_duplicate_whatever_its_spelling(
    client, catalogue
):
    key = key_for(ApiScope.EVENTS)
    original = event(1, kind="purchase", quantity=2, value="7.65")
    first = post(client, key, {"events": [original]}).json()["results"][0]
    respelled = {
        **original,
        "value": "7.6500",
        "quantity": 2,
        "occurred_at": "2011-11-02T11:15:00+01:00",
        "session_id": "",
    }

    response = post(client, key, {"events": [respelled]})

    assert response.status_code == 200
    assert response.json()["results"][0] == {**first, "status": "duplicate"}
    assert FeedbackEvent.objects.count() == 1


@pytest.mark.django_db
def test_events_sharing_a_client_event_id_in_a_batch_must_say_the_same(
    client, catalogue
):
    key = key_for(ApiScope.EVENTS)
    body = {"events": [event(1), event(2), event(1, kind="add_to_cart")]}

    response = post(client, key, body)

    assert response.status_code == 400
    assert problems_of(response) == [
        (0, "client_event_id", "idempotency_key_reused"),
        (2, "client_event_id", "idempotency_key_reused"),
    ]
    assert FeedbackEvent.objects.count() == 0


def _wait_until_a_query_waits_for_a_lock(seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    pytest.fail("The batch never waited for the deleted product's lock.")


# Values that FeedbackEventIn accepts, reads in its own way, or refuses; MISSING
# leaves the field out.
MISSING = object()
EDGE_VALUES: dict[str, list[Any]] = {
    "client_event_id": [
        "evt-1",
        " evt-2 ",
        "",
        "  ",
        "x" * 128,
        "x" * 129,
        f" {'x' * 128} ",
        17,
        1.5,
        True,
        None,
        ["evt"],
        "a\x00b",
        "\ud800",
        "é",
        MISSING,
    ],
    "kind": [
        "click",
        "purchase",
        "return",
        "rating",
        "CLICK",
        "",
        None,
        1,
        ["click"],
        MISSING,
    ],
    "product": ["85123A", " 85123A", "", None, 85123, {"sku": 1}, MISSING],
    "customer": ["17850", "", " ", None, 17850, False, 1.0, MISSING],
    "session_id": ["s-9", "", "  ", None, 9, MISSING],
    "quantity": [1, 3, 0, -2, 1_000_000, 1_000_001, "3", 3.0, True, None, "x", MISSING],
    "value": [
        "7.65",
        "5",
        "99",
        "-1",
        "0",
        "-0",
        7.65,
        2,
        "NaN",
        float("nan"),
        float("inf"),
        "",
        "  ",
        None,
        "1e3",
        "12345678901.1234",
        "1.23456",
        True,
        [],
        MISSING,
    ],
    "occurred_at": [
        "2011-11-02T10:15:00+00:00",
        "2011-11-02T10:15:00Z",
        "2011-11-02T10:15:00",
        "2011-11-02",
        "2011-11-02T10:15:00+05:30",
        "2011-11-02 10:15:00.123456-08:00",
        "20111102T101500Z",
        "9999-12-31T23:59:59-10:00",
        "2099-01-01T00:00:00+00:00",
        "not a time",
        1320228900,
        None,
        MISSING,
    ],
    "order_id": ["581000", "", None, 581000, MISSING],
    "slate_id": [
        "0b6f9c1e-1111-4c4c-9a9a-222222222222",
        "0b6f9c1e11114c4c9a9a222222222222",
        "not-a-uuid",
        5,
        "",
        None,
        MISSING,
    ],
    "position": [1, 1000, 0, 1001, "2", True, None, MISSING],
}


def test_the_plain_pass_accepts_only_what_the_serializer_accepts_and_reads_it_alike():
    rng = random.Random(20111102)
    plain = 0
    for n in range(3000):
        candidate = event(
            n, kind="purchase", session_id="s-1", order_id="581000", value="1.5"
        )
        for name in rng.sample(sorted(EDGE_VALUES), k=rng.choice([1, 1, 2, 3])):
            candidate[name] = rng.choice(EDGE_VALUES[name])
        data = {"events": [{k: v for k, v in candidate.items() if v is not MISSING}]}

        read = _plainly_valid_events(data)

        if read is None:
            continue
        plain += 1
        batch = FeedbackBatchIn(data=data)
        assert batch.is_valid(), (data, batch.errors)
        expected = batch.validated_data["events"]
        assert [{k: repr(v) for k, v in e.items()} for e in read] == [
            {k: repr(v) for k, v in e.items()} for e in expected
        ], data
    assert plain > 1000


def test_the_plain_pass_reads_an_ordinary_batch():
    data = {"events": [event(1), event(2, kind="purchase", value="7.65")]}

    assert _plainly_valid_events(data) is not None


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
@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+00:00", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"],
)
def test_a_time_before_1970_is_refused_by_field(client, catalogue, moment):
    key = key_for(ApiScope.EVENTS)

    response = post(client, key, {"events": [event(1), event(2, occurred_at=moment)]})

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert [(d["index"], d["field"], d["code"]) for d in details] == [
        (1, "occurred_at", "too_early")
    ]
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

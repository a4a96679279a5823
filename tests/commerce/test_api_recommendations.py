"""POST /api/v1/recommendations with a live policy trained on the real first week."""

import datetime as dt
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from commerce.models import (
    ApiScope,
    Customer,
    EventKind,
    FeedbackEvent,
    Product,
    ServedSlate,
)
from commerce.services import create_api_client
from governance.models import OverrideKind, ReasonCode
from governance.services import create_override
from rl_engine.models import PolicyVersion
from rl_engine.services import promote_policy, train_policy_version
from rl_engine.serving import eligible_catalogue, live_policy, popularity

pytestmark = pytest.mark.django_db

URL = "/api/v1/recommendations"
SMALL = {
    "epochs": 1,
    "batch_size": 64,
    "max_actions": 16,
    "policy": {"hidden": 8, "sequence_length": 10, "max_history_items": 32},
}


@pytest.fixture(autouse=True)
def fresh_caches(settings) -> Any:
    settings.POLICY_RELOAD_SECONDS = 0
    settings.CATALOGUE_CACHE_SECONDS = 0
    for cache in (eligible_catalogue, popularity):
        cache.clear()
    live_policy.refresh()
    yield
    live_policy.refresh()


@pytest.fixture
def headers() -> dict[str, str]:
    key = create_api_client(name="frontend", scopes=[ApiScope.RECOMMENDATIONS]).key
    return {"Authorization": f"Api-Key {key}"}


@pytest.fixture
def store(import_file, first_week_path, settings, tmp_path) -> None:
    settings.POLICY_ARTIFACT_DIR = tmp_path / "policies"
    import_file(first_week_path)


@pytest.fixture
def live(store) -> PolicyVersion:
    version = train_policy_version(
        before=dt.datetime(2010, 12, 8), config_overrides=SMALL
    )
    return promote_policy(version=version, actor=None, reason="test", force=True)


def ask(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return client.post(
        URL, json.dumps(body), content_type="application/json", headers=headers
    )


def regular_customer() -> Customer:
    """A customer with several baskets in the first week."""
    return Customer.objects.get(external_id="17850")


def test_a_known_customer_gets_a_logged_slate_from_the_live_policy(
    client, headers, live
):
    response = ask(client, headers, customer="17850", k=10)

    assert response.status_code == 200, response.json()
    answer = response.json()
    assert answer["policy_version"] == live.label
    assert [item["position"] for item in answer["items"]] == list(range(1, 11))
    assert {item["reason"] for item in answer["items"]} <= {"model", "exploration"}
    assert all(0 < item["propensity"] <= 1 for item in answer["items"])
    slate = ServedSlate.objects.get(pk=answer["slate_id"])
    assert slate.customer == regular_customer()
    logged = list(
        slate.items.order_by("position").values_list(
            "product__external_id", "propensity"
        )
    )
    assert logged == [
        (i["product"], pytest.approx(i["propensity"])) for i in answer["items"]
    ]


def test_business_rules_and_exclusions_hold(client, headers, live):
    first = ask(client, headers, customer="17850", k=5).json()
    excluded = first["items"][0]["product"]
    out_of_stock = first["items"][1]["product"]
    Product.objects.filter(external_id=out_of_stock).update(in_stock=False)
    bought = set(
        FeedbackEvent.objects.filter(
            customer=regular_customer(), kind=EventKind.PURCHASE
        ).values_list("product__external_id", flat=True)
    )

    second = ask(
        client,
        headers,
        customer="17850",
        k=50,
        context={"exclude": [excluded]},
        # The log ends in 2011: reach back to it from today.
        exclude_bought_within_days=9000,
    ).json()

    shown = {item["product"] for item in second["items"]}
    assert len(shown) == 50
    assert excluded not in shown
    assert out_of_stock not in shown
    assert not shown & bought
    # The slate log keeps what the request left out.
    logged = ServedSlate.objects.get(pk=second["slate_id"]).context
    assert logged["exclude"] == [excluded]
    assert logged["exclude_bought_within_days"] == 9000


def test_governance_suppressions_and_pins_shape_the_slate(client, headers, live):
    reviewer = User.objects.create_user("reviewer-1")
    first = ask(client, headers, customer="17850", k=50).json()
    top = Product.objects.get(external_id=first["items"][0]["product"])
    pinned = Product.objects.get(external_id=first["items"][-1]["product"])
    for kind, product, value in (
        (OverrideKind.SUPPRESS, top, None),
        (OverrideKind.PIN, pinned, 3),
    ):
        create_override(
            actor=reviewer,
            kind=kind,
            product_id=product.pk,
            value=value,
            reason_code=ReasonCode.LOW_QUALITY,
            statement="Reviewed.",
        )

    second = ask(client, headers, customer="17850", k=10).json()

    products = [item["product"] for item in second["items"]]
    assert top.external_id not in products
    third = second["items"][2]
    assert third["product"] == pinned.external_id
    assert third["reason"] == "boost"
    assert third["propensity"] == 1.0
    assert len(products) == len(set(products)) == 10


def test_cold_start_and_no_policy_fall_back_to_popularity(client, headers, store):
    no_policy = ask(client, headers, customer="17850", k=5).json()
    anonymous = ask(client, headers, session={"id": "s-1", "items": []}, k=5).json()

    for answer in (no_policy, anonymous):
        assert answer["policy_version"] == ""
        assert [item["reason"] for item in answer["items"]] == ["fallback"] * 5
    assert [i["product"] for i in no_policy["items"]] == [
        i["product"] for i in anonymous["items"]
    ]


def test_the_fallback_fills_the_slate_and_ignores_future_dated_purchases(
    client, headers, store
):
    before = ask(client, headers, session={"id": "s-0", "items": []}, k=20).json()
    one_product = Product.objects.order_by("-external_id").first()
    assert one_product is not None
    FeedbackEvent.objects.create(
        kind=EventKind.PURCHASE,
        product=one_product,
        session_id="s-future",
        occurred_at=timezone.now() + dt.timedelta(days=365),
        source="test",
        client_event_id="future-1",
    )
    popularity.clear()

    after = ask(client, headers, session={"id": "s-0", "items": []}, k=20).json()

    # A purchase dated next year does not move the window to an empty year.
    assert [i["product"] for i in after["items"]] == [
        i["product"] for i in before["items"]
    ]
    # Counted orders first, most first; then unbought products fill the slate.
    scores = [i["score"] for i in after["items"]]
    assert len(scores) == 20
    assert scores == sorted(scores, reverse=True)


def test_a_replayed_fallback_counts_only_purchases_before_its_day(
    client, headers, store
):
    day = dt.datetime(2010, 12, 3, 15, tzinfo=dt.UTC)
    answer = ask(
        client, headers, session={"id": "s-1", "items": []}, k=5, as_of=day.isoformat()
    ).json()
    orders = {
        sku: FeedbackEvent.objects.filter(
            kind=EventKind.PURCHASE,
            product__external_id=sku,
            occurred_at__lt=dt.datetime(2010, 12, 3, tzinfo=dt.UTC),
        )
        .values("order_id")
        .distinct()
        .count()
        for sku in (i["product"] for i in answer["items"])
    }

    assert [i["score"] for i in answer["items"]] == [
        orders[i["product"]] for i in answer["items"]
    ]


def test_an_unknown_customer_with_session_items_is_served_by_the_policy(
    client, headers, live
):
    answer = ask(
        client,
        headers,
        customer="new-visitor",
        session={"id": "s-2", "items": ["85123A", "71053"]},
        k=5,
    ).json()

    assert answer["policy_version"] == live.label
    assert {item["reason"] for item in answer["items"]} <= {"model", "exploration"}
    slate = ServedSlate.objects.get(pk=answer["slate_id"])
    assert slate.customer is None
    assert slate.session_id == "s-2"


def test_the_non_personalised_flag_gives_everyone_the_same_slate(client, headers, live):
    customers = list(
        FeedbackEvent.objects.filter(kind=EventKind.PURCHASE, customer__isnull=False)
        .values_list("customer__external_id", flat=True)
        .distinct()[:2]
    )

    slates = [
        ask(client, headers, customer=customer, k=10, non_personalised=True).json()
        for customer in customers
    ]

    assert len(set(customers)) == 2
    assert [i["product"] for i in slates[0]["items"]] == [
        i["product"] for i in slates[1]["items"]
    ]
    assert {i["reason"] for i in slates[0]["items"]} == {"fallback"}


def test_a_promotion_is_picked_up_without_a_restart(client, headers, live):
    assert (
        ask(client, headers, customer="17850", k=3).json()["policy_version"]
        == live.label
    )
    newer = train_policy_version(
        before=dt.datetime(2010, 12, 8), config_overrides={**SMALL, "seed": 9}
    )
    promote_policy(version=newer, actor=None, reason="test", force=True)

    assert (
        ask(client, headers, customer="17850", k=3).json()["policy_version"]
        == newer.label
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer": "17850", "k": 0}, "k"),
        ({"customer": "17850", "k": 101}, "k"),
        ({"k": 5}, "customer"),
        (
            {"customer": "17850", "exclude_bought_within_days": -1},
            "exclude_bought_within_days",
        ),
        ({"customer": "17850", "as_of": "0001-01-01T00:00:00+00:00"}, "as_of"),
        ({"customer": "17850", "as_of": "1969-12-31T23:59:59Z"}, "as_of"),
    ],
)
def test_bad_requests_are_refused(client, headers, store, body, field):
    response = client.post(
        URL, json.dumps(body), content_type="application/json", headers=headers
    )

    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == field
    assert ServedSlate.objects.count() == 0


def test_readiness_needs_a_live_policy(client, store):
    not_ready = client.get("/api/v1/ready")

    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {
        "database": "ok",
        "policy": "none (fallback)",
        "broker": "in-process",
    }


def test_readiness_reports_the_loaded_policy(client, live):
    ready = client.get("/api/v1/ready")

    assert ready.status_code == 200
    assert ready.json()["checks"]["policy"] == f"loaded {live.label}"


def test_as_of_serves_from_the_history_before_that_moment(client, headers, live):
    customer = regular_customer()
    first_order = (
        FeedbackEvent.objects.filter(customer=customer, kind=EventKind.PURCHASE)
        .order_by("occurred_at")
        .first()
    )
    assert first_order is not None

    before_any = ask(
        client,
        headers,
        customer="17850",
        k=5,
        as_of=first_order.occurred_at.isoformat(),
    ).json()
    later = ask(client, headers, customer="17850", k=5).json()

    # Before the customer's first purchase there is no history: cold start.
    assert {item["reason"] for item in before_any["items"]} == {"fallback"}
    assert {item["reason"] for item in later["items"]} <= {"model", "exploration"}
    slate = ServedSlate.objects.get(pk=before_any["slate_id"])
    assert slate.context["as_of"] == first_order.occurred_at.isoformat()

"""Catalogue sync: products and customers upserted in bulk by their ids."""

import json
from decimal import Decimal
from typing import Any

import pytest

from commerce import services
from commerce.models import ApiScope, Customer, Merchant, Product
from commerce.services import create_api_client
from governance.models import GovernanceEvent
from rl_engine.models import ProductEmbedding
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def headers() -> dict[str, str]:
    key = create_api_client(name="catalogue-feed", scopes=[ApiScope.CATALOGUE]).key
    return {"Authorization": f"Api-Key {key}"}


def post(client: Any, url: str, body: Any, headers: dict[str, str]) -> Any:
    return client.post(
        url, json.dumps(body), content_type="application/json", headers=headers
    )


def vase(**fields: Any) -> dict[str, Any]:
    return {
        "external_id": "VASE1",
        "title": "BLUE GLASS VASE",
        "price": "4.95",
        **fields,
    }


def test_products_are_created_then_only_changes_count(client, headers):
    first = post(
        client,
        "/api/v1/products",
        {"products": [vase(), vase(external_id="MUG")]},
        headers,
    )
    same = post(client, "/api/v1/products", {"products": [vase()]}, headers)
    restock = post(
        client, "/api/v1/products", {"products": [vase(in_stock=False)]}, headers
    )

    assert first.json() == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "queued_for_embedding": 2,
    }
    assert same.json() == {
        "created": 0,
        "updated": 0,
        "unchanged": 1,
        "queued_for_embedding": 0,
    }
    assert restock.json() == {
        "created": 0,
        "updated": 1,
        "unchanged": 0,
        "queued_for_embedding": 0,
    }
    assert Product.objects.get(external_id="VASE1").in_stock is False
    assert GovernanceEvent.objects.filter(action="catalogue.synced").count() == 3


def test_a_changed_title_is_embedded_again(
    client, headers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post(client, "/api/v1/products", {"products": [vase()]}, headers)
    old_hash = Product.objects.get().text_hash

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        renamed = post(
            client,
            "/api/v1/products",
            {"products": [vase(title="CERULEAN GLASS VASE")]},
            headers,
        )

    assert len(callbacks) == 1
    assert renamed.json()["queued_for_embedding"] == 1
    new_hash = Product.objects.get().text_hash
    assert new_hash != old_hash
    # Without a broker the embedding task ran in-process after the commit.
    assert set(ProductEmbedding.objects.values_list("text_hash", flat=True)) == {
        old_hash,
        new_hash,
    }


def test_bad_products_are_refused_by_index_and_field(client, headers):
    response = post(
        client,
        "/api/v1/products",
        {"products": [vase(), vase(external_id="X", price="-1"), {"external_id": "Y"}]},
        headers,
    )

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert {(d["index"], d["field"]) for d in details} == {(1, "price"), (2, "title")}
    assert Product.objects.count() == 0


def test_a_sku_sold_by_another_merchant_refuses_the_whole_batch(client, headers):
    post(
        client, "/api/v1/products", {"products": [vase(merchant="lights-ltd")]}, headers
    )

    response = post(
        client,
        "/api/v1/products",
        {
            "products": [
                vase(external_id="MUG", merchant="candles-co"),
                vase(merchant="candles-co", title="CANDLE VASE"),
                vase(merchant="lights-ltd", in_stock=False),
                vase(title="DEFAULT VASE"),
            ]
        },
        headers,
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "sku_owned_by_other_merchant"
    assert error["message"] == (
        "2 of 4 products have a SKU that another merchant sells; nothing was stored."
    )
    assert [(d["index"], d["field"], d["code"]) for d in error["details"]] == [
        (1, "external_id", "sku_owned_by_other_merchant"),
        (3, "external_id", "sku_owned_by_other_merchant"),
    ]
    assert error["details"][1]["message"] == (
        "SKU VASE1 belongs to merchant 'lights-ltd', not 'default'. "
        "A SKU names one product across merchants."
    )
    stored = Product.objects.get()
    assert (stored.external_id, stored.merchant.external_id) == ("VASE1", "lights-ltd")
    assert (stored.title, stored.in_stock) == ("BLUE GLASS VASE", True)
    assert not Merchant.objects.filter(external_id="candles-co").exists()
    assert GovernanceEvent.objects.filter(action="catalogue.synced").count() == 1


def test_one_sku_given_to_two_merchants_in_a_batch_is_refused(client, headers):
    response = post(
        client,
        "/api/v1/products",
        {"products": [vase(merchant="lights-ltd"), vase(merchant="candles-co")]},
        headers,
    )

    assert response.status_code == 409
    details = response.json()["error"]["details"]
    assert [(d["index"], d["field"]) for d in details] == [(1, "external_id")]
    assert details[0]["message"].startswith(
        "SKU VASE1 is given to merchant 'lights-ltd' at index 0 of this batch, "
        "not 'candles-co'."
    )
    assert Product.objects.count() == 0


def test_a_sku_updated_by_its_own_merchant_stays_one_product(client, headers):
    post(
        client, "/api/v1/products", {"products": [vase(merchant="lights-ltd")]}, headers
    )

    response = post(
        client,
        "/api/v1/products",
        {"products": [vase(merchant="lights-ltd", price="5.25")]},
        headers,
    )

    assert response.status_code == 200
    assert response.json()["updated"] == 1
    stored = Product.objects.get()
    assert (stored.merchant.external_id, stored.price) == (
        "lights-ltd",
        Decimal("5.25"),
    )


def test_a_sku_stored_concurrently_by_another_merchant_refuses_the_batch(
    client, headers, monkeypatch
):
    """A sync that looked the SKU up before another one stored it meets the
    unique index on insert; its second pass sees the stored product."""
    ProductFactory.create(
        external_id="VASE1",
        merchant=Merchant.objects.create(external_id="lights-ltd", name="Lights"),
    )
    lock_products = services._lock_products
    lookups: list[set[str]] = []

    def lock_products_before_the_other_commit(skus: set[str]) -> dict[str, Product]:
        lookups.append(skus)
        return {} if len(lookups) == 1 else lock_products(skus)

    monkeypatch.setattr(
        services, "_lock_products", lock_products_before_the_other_commit
    )

    response = post(client, "/api/v1/products", {"products": [vase()]}, headers)

    assert len(lookups) == 2
    assert response.status_code == 409
    assert response.json()["error"]["details"][0]["index"] == 0
    assert Product.objects.get().merchant.external_id == "lights-ltd"
    assert not Merchant.objects.filter(external_id="default").exists()


def test_products_are_listed_in_pages(client, headers):
    post(
        client,
        "/api/v1/products",
        {"products": [vase(external_id=f"P{n}") for n in range(5)]},
        headers,
    )

    page = client.get("/api/v1/products?limit=2&offset=1", headers=headers)

    assert page.status_code == 200
    assert [p["external_id"] for p in page.json()] == ["P1", "P2"]
    assert page.json()[0]["merchant"] == "default"


def test_customers_are_upserted_and_consent_changes_are_logged(client, headers):
    customer = {
        "external_id": "17850",
        "country": "United Kingdom",
        "group_attributes": {"age_band": "35-44"},
        "group_attributes_consent": True,
    }
    created = post(client, "/api/v1/customers", {"customers": [customer]}, headers)
    withdrawn = post(
        client,
        "/api/v1/customers",
        {"customers": [{**customer, "group_attributes_consent": False}]},
        headers,
    )

    assert created.json() == {"created": 1, "updated": 0}
    assert withdrawn.json() == {"created": 0, "updated": 1}
    assert Customer.objects.get().group_attributes_consent is False
    last = (
        GovernanceEvent.objects.filter(action="customers.synced").order_by("id").last()
    )
    assert last is not None
    assert last.after is not None
    assert last.after["consent_changed"] == ["17850"]


def test_an_events_key_cannot_sync_the_catalogue(client):
    key = create_api_client(name="events-only", scopes=[ApiScope.EVENTS]).key

    response = post(
        client,
        "/api/v1/products",
        {"products": [vase()]},
        {"Authorization": f"Api-Key {key}"},
    )

    assert response.status_code == 403
    assert Product.objects.count() == 0

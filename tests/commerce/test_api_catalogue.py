"""Catalogue sync: products and customers upserted in bulk by their ids."""

import json
import logging
import socket
from decimal import Decimal
from typing import Any

import pytest

from commerce import services
from commerce.models import ApiScope, Customer, Merchant, Product
from commerce.services import create_api_client
from config.celery import app as celery_app
from governance.models import GovernanceEvent
from rl_engine import services as rl_services
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
        "embedding_deferred": 0,
    }
    assert same.json() == {
        "created": 0,
        "updated": 0,
        "unchanged": 1,
        "queued_for_embedding": 0,
        "embedding_deferred": 0,
    }
    assert restock.json() == {
        "created": 0,
        "updated": 1,
        "unchanged": 0,
        "queued_for_embedding": 0,
        "embedding_deferred": 0,
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
        {
            "products": [
                vase(),
                vase(external_id="X", price="-1"),
                {"external_id": "Y", "title": ""},
            ]
        },
        headers,
    )

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert {(d["index"], d["field"]) for d in details} == {(1, "price"), (2, "title")}
    assert Product.objects.count() == 0


def test_a_sync_changes_only_the_fields_it_sends(
    client, headers, django_capture_on_commit_callbacks
):
    post(
        client,
        "/api/v1/products",
        {"products": [vase(description="Hand blown.", is_active=False)]},
        headers,
    )

    with django_capture_on_commit_callbacks() as callbacks:
        sold_out = post(
            client,
            "/api/v1/products",
            {
                "products": [
                    {
                        "external_id": "VASE1",
                        "title": "BLUE GLASS VASE",
                        "in_stock": False,
                    }
                ]
            },
            headers,
        )
        title_only = post(
            client,
            "/api/v1/products",
            {"products": [{"external_id": "VASE1", "title": "BLUE GLASS VASE"}]},
            headers,
        )

    assert sold_out.json() == {
        "created": 0,
        "updated": 1,
        "unchanged": 0,
        "queued_for_embedding": 0,
        "embedding_deferred": 0,
    }
    assert title_only.json()["unchanged"] == 1
    assert callbacks == []
    stored = Product.objects.get()
    assert (stored.description, stored.price) == ("Hand blown.", Decimal("4.95"))
    assert (stored.is_active, stored.in_stock) == (False, False)


def test_a_sent_null_clears_the_price_and_a_new_description_is_embedded(
    client, headers, django_capture_on_commit_callbacks
):
    post(client, "/api/v1/products", {"products": [vase()]}, headers)

    with django_capture_on_commit_callbacks() as callbacks:
        response = post(
            client,
            "/api/v1/products",
            {
                "products": [
                    {"external_id": "VASE1", "price": None, "description": "Tall."}
                ]
            },
            headers,
        )

    assert response.json()["updated"] == 1
    assert response.json()["queued_for_embedding"] == 1
    assert len(callbacks) == 1
    stored = Product.objects.get()
    assert (stored.title, stored.description, stored.price) == (
        "BLUE GLASS VASE",
        "Tall.",
        None,
    )


def test_a_new_product_takes_the_defaults(client, headers):
    response = post(
        client,
        "/api/v1/products",
        {"products": [{"external_id": "MUG", "title": "ENAMEL MUG"}]},
        headers,
    )

    assert response.json()["created"] == 1
    stored = Product.objects.get()
    assert (stored.title, stored.description, stored.price) == ("ENAMEL MUG", "", None)
    assert (stored.is_active, stored.in_stock) == (True, True)


def test_a_new_product_without_a_title_refuses_the_batch(client, headers):
    post(client, "/api/v1/products", {"products": [vase()]}, headers)

    response = post(
        client,
        "/api/v1/products",
        {
            "products": [
                {"external_id": "VASE1", "in_stock": False},
                {"external_id": "MUG", "price": "2.50"},
            ]
        },
        headers,
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_products"
    assert error["details"] == [
        {
            "index": 1,
            "field": "title",
            "code": "required",
            "message": "SKU MUG is not stored yet: a new product needs a title.",
        }
    ]
    assert Product.objects.get().in_stock is True
    assert GovernanceEvent.objects.filter(action="catalogue.synced").count() == 1


def test_the_audit_event_records_only_what_changed(client, headers):
    post(
        client,
        "/api/v1/products",
        {"products": [vase(), vase(external_id="MUG", title="MUG")]},
        headers,
    )
    post(
        client,
        "/api/v1/products",
        {
            "products": [
                {"external_id": "VASE1", "in_stock": False, "price": "4.95"},
                {"external_id": "MUG", "title": "MUG"},
            ]
        },
        headers,
    )

    created, restocked = GovernanceEvent.objects.filter(
        action="catalogue.synced"
    ).order_by("id")
    assert created.before == {"products": {}}
    assert created.after is not None
    assert created.after["products"]["VASE1"] == {
        "title": "BLUE GLASS VASE",
        "description": "",
        "price": "4.9500",
        "is_active": True,
        "in_stock": True,
    }
    assert restocked.before == {"products": {"VASE1": {"in_stock": True}}}
    assert restocked.after == {
        "created": 0,
        "updated": 1,
        "received": 2,
        "products": {"VASE1": {"in_stock": False}},
    }


def test_a_sku_sold_by_another_merchant_refuses_the_whole_batch(client, headers):
    post(
        client,
        "/api/v1/products",
        {
            "products": [
                vase(merchant="lights-ltd"),
                vase(external_id="LAMP", title="DESK LAMP", merchant="lights-ltd"),
            ]
        },
        headers,
    )

    response = post(
        client,
        "/api/v1/products",
        {
            "products": [
                vase(external_id="MUG", merchant="candles-co"),
                vase(merchant="candles-co", title="CANDLE VASE"),
                vase(external_id="SHADE", title="SHADE", merchant="lights-ltd"),
                {"external_id": "LAMP", "title": "DEFAULT LAMP"},
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
        "SKU LAMP belongs to merchant 'lights-ltd', not 'default'. "
        "A SKU names one product across merchants."
    )
    assert sorted(Product.objects.values_list("external_id", "title")) == [
        ("LAMP", "DESK LAMP"),
        ("VASE1", "BLUE GLASS VASE"),
    ]
    assert not Merchant.objects.filter(external_id="candles-co").exists()
    assert GovernanceEvent.objects.filter(action="catalogue.synced").count() == 1


def test_a_sku_given_twice_in_a_batch_is_refused(client, headers):
    response = post(
        client,
        "/api/v1/products",
        {
            "products": [
                vase(),
                vase(external_id="MUG"),
                vase(price="5.25"),
                vase(merchant="candles-co"),
            ]
        },
        headers,
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_products"
    assert [(d["index"], d["field"], d["code"]) for d in error["details"]] == [
        (0, "external_id", "duplicate_in_batch"),
        (2, "external_id", "duplicate_in_batch"),
        (3, "external_id", "duplicate_in_batch"),
    ]
    assert error["details"][0]["message"] == (
        "Products 0, 2, 3 of this batch share the SKU VASE1; give each SKU once."
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


@pytest.fixture
def unreachable_broker(monkeypatch):
    """Send tasks to a broker URL on a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Fresh pools, so that the app connects to this URL.
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)
    monkeypatch.setitem(celery_app.conf, "broker_url", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


@pytest.mark.django_db(transaction=True)
def test_a_sync_stands_when_the_broker_cannot_take_the_embedding(
    client, headers, unreachable_broker, caplog
):
    with caplog.at_level(logging.WARNING, logger="commerce.services"):
        first = post(client, "/api/v1/products", {"products": [vase()]}, headers)
    again = post(client, "/api/v1/products", {"products": [vase()]}, headers)

    assert first.status_code == 200
    assert first.json() == {
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "queued_for_embedding": 0,
        "embedding_deferred": 1,
    }
    assert again.json()["unchanged"] == 1
    assert "could not take the embedding of 1 changed products" in caplog.text
    # The scheduled embedding run embeds every text without a vector.
    product = Product.objects.get()
    assert not ProductEmbedding.objects.filter(text_hash=product.text_hash).exists()
    assert rl_services.embed_products().embedded == 1
    assert ProductEmbedding.objects.filter(text_hash=product.text_hash).exists()

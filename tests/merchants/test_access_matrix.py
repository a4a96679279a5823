"""Who may read what: every role against every page and API resource.

Merchant A (alice) and merchant B (bob) each see their own products only; a
reviewer (rita) opens the staff pages but not the portal; a shop's API key
opens neither; anonymous visitors are sent to log in. The transparency page
is open to all. No read of one merchant's product by another succeeds: it
answers 404, as for a product that does not exist.
"""

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from commerce.models import Product, ServedSlate, ServedSlateItem
from tests.factories import CustomerFactory
from tests.merchants.conftest import INTERNAL_NOTE, Shops, decide_with_override

pytestmark = pytest.mark.django_db

MISSING = 10**9
"""A product id nobody has."""

Resource = Callable[[Shops, ServedSlate], str]

PORTAL: dict[str, Resource] = {
    "product list": lambda s, _: "/merchants/",
    "product page": lambda s, _: f"/merchants/products/{s.a_products[0].pk}/",
    "why-not page": lambda s, _: (
        f"/merchants/products/{s.a_products[0].pk}/why-not/?country=United+Kingdom"
    ),
}
API: dict[str, Resource] = {
    "api products": lambda s, _: "/api/v1/merchant/products",
    "api product": lambda s, _: f"/api/v1/merchant/products/{s.a_products[0].pk}",
    "api why recommended": lambda s, _: (
        f"/api/v1/merchant/products/{s.a_products[0].pk}/why-recommended"
    ),
    "api why not": lambda s, _: (
        f"/api/v1/merchant/products/{s.a_products[0].pk}/why-not?country=France"
    ),
    "api governance": lambda s, _: (
        f"/api/v1/merchant/products/{s.a_products[0].pk}/governance"
    ),
    "api decisions": lambda s, _: "/api/v1/merchant/decisions",
    "api ranking": lambda s, _: "/api/v1/merchant/ranking",
}
STAFF: dict[str, Resource] = {
    "review queue": lambda s, _: "/governance/",
    "slate explanation": lambda s, slate: f"/governance/slates/{slate.pk}/",
}
PUBLIC: dict[str, Resource] = {"transparency": lambda s, _: "/transparency/"}

A_PRODUCT = {
    "product page",
    "why-not page",
    "api product",
    "api why recommended",
    "api why not",
    "api governance",
}
"""Resources about one of merchant A's products."""

LOGIN = "login"
OK, FORBIDDEN, NOT_FOUND = 200, 403, 404


def expected(role: str, resource: str) -> int | str:
    """The answer ``role`` gets for ``resource``: a status, or ``login``."""
    if resource in PUBLIC:
        return OK
    if resource in STAFF:
        if role == "reviewer":
            return OK
        return FORBIDDEN if role in ("merchant A", "merchant B") else LOGIN
    api = resource in API
    if role in ("anonymous", "API client"):
        return FORBIDDEN if api else LOGIN
    if role == "reviewer":
        return FORBIDDEN
    if role == "merchant B" and resource in A_PRODUCT:
        return NOT_FOUND
    return OK


ROLES = ["merchant A", "merchant B", "reviewer", "API client", "anonymous"]
RESOURCES = {**PORTAL, **API, **STAFF, **PUBLIC}


def client_for(role: str, shops: Shops) -> tuple[Client, dict[str, str]]:
    client = Client()
    users = {"merchant A": shops.alice, "merchant B": shops.bob, "reviewer": shops.rita}
    if role in users:
        client.force_login(users[role])
    headers = (
        {"Authorization": f"Api-Key {shops.api_key}"} if role == "API client" else {}
    )
    return client, headers


@pytest.fixture
def slate(shops: Shops) -> ServedSlate:
    customer = CustomerFactory.create(country="United Kingdom")
    served = ServedSlate.objects.create(customer=customer, context={"k": 1})
    ServedSlateItem.objects.create(
        slate=served,
        product=shops.a_products[0],
        position=1,
        score=3.0,
        propensity=1.0,
        reason="fallback",
    )
    return served


@pytest.mark.parametrize("resource", list(RESOURCES))
@pytest.mark.parametrize("role", ROLES)
def test_the_role_matrix(role: str, resource: str, shops: Shops, slate: ServedSlate):
    client, headers = client_for(role, shops)
    url = RESOURCES[resource](shops, slate)

    response = client.get(url, headers=headers)

    want = expected(role, resource)
    if want == LOGIN:
        assert response.status_code == 302, response.content[:300]
        assert response["Location"].startswith("/accounts/login/?next=")
        return
    assert response.status_code == want, response.content[:300]
    if resource in API and want != OK:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"}
        assert (
            error["code"]
            == {
                NOT_FOUND: "not_found",
                FORBIDDEN: "permission_denied"
                if role == "reviewer"
                else "not_authenticated",
            }[want]
        )
    if want == NOT_FOUND:
        assert shops.a_products[0].external_id not in response.text


def test_the_matrix_covers_every_role_and_resource_kind():
    answers = {
        (role, name): expected(role, name) for role in ROLES for name in RESOURCES
    }

    # Every cross-merchant read of a product is refused as not found.
    assert {answers["merchant B", name] for name in A_PRODUCT} == {NOT_FOUND}
    assert {answers["merchant A", name] for name in {**PORTAL, **API}} == {OK}
    assert {answers[role, "transparency"] for role in ROLES} == {OK}


def test_no_cross_merchant_read_succeeds(client, shops: Shops):
    a_product, b_product = shops.a_products[0], shops.b_products[0]
    decide_with_override(a_product, shops.rita, statement="Acme's own statement.")
    client.force_login(shops.bob)

    for url in (
        f"/merchants/products/{a_product.pk}/",
        f"/merchants/products/{a_product.pk}/why-not/",
        f"/api/v1/merchant/products/{a_product.pk}",
        f"/api/v1/merchant/products/{a_product.pk}/why-recommended",
        f"/api/v1/merchant/products/{a_product.pk}/why-not",
        f"/api/v1/merchant/products/{a_product.pk}/governance",
    ):
        response = client.get(url)
        assert response.status_code == 404, url

    # A product of another merchant reads exactly like one that does not exist.
    missing = client.get(f"/api/v1/merchant/products/{MISSING}")
    other = client.get(f"/api/v1/merchant/products/{a_product.pk}")
    assert (
        missing.json()
        == other.json()
        == {
            "error": {
                "code": "not_found",
                "message": "No product with this id among yours.",
                "details": [],
            }
        }
    )

    listed = client.get("/api/v1/merchant/products").json()
    assert {row["id"] for row in listed["results"]} == {p.pk for p in shops.b_products}
    assert {row["merchant"] for row in listed["results"]} == {"bolt"}
    page = client.get("/merchants/").text
    assert b_product.external_id in page
    assert all(p.external_id not in page for p in shops.a_products)
    decisions = client.get("/api/v1/merchant/decisions").json()
    assert decisions == {"overrides": [], "decisions": []}
    assert "Acme's own statement." not in client.get("/merchants/").text


def test_a_merchant_of_two_sees_both_and_nothing_else(client, shops: Shops):
    shops.merchant_b.members.add(shops.alice)
    third = Product.objects.create(
        merchant=type(shops.merchant_a).objects.create(external_id="cobalt", name="C"),
        external_id="C1",
        title="Third merchant's",
    )
    client.force_login(shops.alice)

    listed = client.get("/api/v1/merchant/products").json()

    assert {row["id"] for row in listed["results"]} == {
        p.pk for p in [*shops.a_products, *shops.b_products]
    }
    assert (
        client.get(f"/api/v1/merchant/products/{shops.b_products[0].pk}").status_code
        == 200
    )
    assert client.get(f"/api/v1/merchant/products/{third.pk}").status_code == 404
    assert client.get(f"/merchants/products/{third.pk}/").status_code == 404


def test_the_product_page_shows_decisions_without_notes_or_reviewers(
    client, shops: Shops
):
    product = shops.a_products[0]
    decide_with_override(
        product, shops.rita, statement="Returned by one buyer in three."
    )
    client.force_login(shops.alice)

    page = client.get(f"/merchants/products/{product.pk}/").text
    api = client.get(f"/api/v1/merchant/products/{product.pk}/governance").json()

    assert "Returned by one buyer in three." in page
    assert "Poor quality signals (returns, ratings)" in page
    assert INTERNAL_NOTE not in page
    assert "rita" not in page
    assert api["overrides"][0]["statement"] == "Returned by one buyer in three."
    assert api["overrides"][0]["sku"] == product.external_id
    assert api["overrides"][0]["product_id"] == product.pk
    assert api["decisions"][0]["reason_code"] == "low_quality"
    every = client.get("/api/v1/merchant/decisions").json()
    assert [o["sku"] for o in every["overrides"]] == [product.external_id]
    text = json.dumps(api)
    assert INTERNAL_NOTE not in text
    assert "rita" not in text
    assert "note" not in {key for row in api["decisions"] for key in row}


def test_an_api_key_is_refused_even_with_a_merchant_session(client, shops: Shops):
    """The key is not how the merchant API authenticates: the session is."""
    client.force_login(shops.alice)
    headers: dict[str, Any] = {"Authorization": f"Api-Key {shops.api_key}"}

    with_session = client.get("/api/v1/merchant/products", headers=headers)
    key_only = Client().get("/api/v1/merchant/products", headers=headers)

    assert with_session.status_code == 200
    assert key_only.status_code == 403
    assert (
        "API keys do not open the merchant API" in key_only.json()["error"]["message"]
    )


def test_the_schema_describes_the_merchant_api_with_session_auth_only(client):
    schema = client.get("/api/v1/schema", {"format": "json"}).json()

    merchant = {
        path: operations
        for path, operations in schema["paths"].items()
        if "/merchant/" in path
    }
    assert set(merchant) == {
        "/api/v1/merchant/products",
        "/api/v1/merchant/products/{id}",
        "/api/v1/merchant/products/{id}/why-recommended",
        "/api/v1/merchant/products/{id}/why-not",
        "/api/v1/merchant/products/{id}/governance",
        "/api/v1/merchant/decisions",
        "/api/v1/merchant/ranking",
    }
    for operations in merchant.values():
        assert set(operations) == {"get"}
        assert operations["get"]["security"] == [{"cookieAuth": []}]
        assert "200" in operations["get"]["responses"]
    product = merchant["/api/v1/merchant/products/{id}"]["get"]
    assert product["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"
    }
    why_not = schema["components"]["schemas"]["WhyNotOut"]["properties"]
    assert {"reason", "message", "override", "ranking"} <= set(why_not)

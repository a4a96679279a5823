"""The shop API's error answers: always the JSON error body, and documented."""

import json
import re
from typing import Any

import jsonschema
import pytest
from django.contrib.staticfiles import finders

from commerce.models import ApiScope
from commerce.services import create_api_client

CLIENT_ENDPOINTS = ["/api/v1/recommendations", "/api/v1/events", "/api/v1/products"]
BODY_ENDPOINTS = [*CLIENT_ENDPOINTS, "/api/v1/customers"]


@pytest.fixture
def headers(db) -> dict[str, str]:
    key = create_api_client(name="shop-frontend", scopes=list(ApiScope.values)).key
    return {"Authorization": f"Api-Key {key}"}


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/recommendations/",
        "/api/v1/merchant/products/abc",
        "/api/v1/",
        "/api/v1",
        "/api/v2/recommendations",
    ],
)
def test_an_unknown_api_path_answers_json_404(client, settings, debug, path):
    settings.DEBUG = debug

    for response in (client.get(path), client.post(path, {}, "application/json")):
        assert response.status_code == 404
        error = error_of(response)
        assert error["code"] == "not_found"
        assert path in error["message"]
        assert error["details"] == []


@pytest.mark.django_db
def test_a_trailing_slash_is_named_in_the_404(client):
    error = error_of(client.post("/api/v1/recommendations/", {}, "application/json"))

    assert "without a slash" in error["message"]


@pytest.mark.django_db
def test_pages_outside_the_api_keep_their_html_404(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
def test_a_body_over_the_upload_limit_answers_json_413(client, headers, path):
    body = json.dumps({"events": [], "padding": "x" * 5_500_000})

    response = client.post(path, body, "application/json", headers=headers)

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "payload_too_large"
    assert "2,621,440 bytes" in error["message"]


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
def test_json_nested_too_deeply_answers_400(client, headers, path):
    body = "[" * 100_000 + "]" * 100_000

    response = client.post(path, body, "application/json", headers=headers)

    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_request"


def test_a_wrong_method_answers_json_405(client, headers):
    response = client.get("/api/v1/events", headers=headers)

    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=XyZ"],
)
def test_a_form_body_answers_415(client, headers, path, content_type):
    response = client.post(path, "customer=17850", content_type, headers=headers)

    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


@pytest.fixture
def openapi(client) -> dict[str, Any]:
    response = client.get("/api/v1/schema", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/api/v1/recommendations", {400, 401, 403, 413, 415, 429}),
        ("post", "/api/v1/events", {400, 401, 403, 409, 413, 415, 429}),
        ("get", "/api/v1/products", {400, 401, 403, 429}),
        ("post", "/api/v1/products", {400, 401, 403, 409, 413, 415, 429}),
        ("post", "/api/v1/customers", {400, 401, 403, 413, 415, 429}),
    ],
)
def test_the_schema_documents_each_error_with_the_error_body(
    openapi, method, path, statuses
):
    operation = openapi["paths"][path][method]

    documented = {int(code) for code in operation["responses"]} - {200}
    assert documented == statuses
    for code in statuses:
        content = operation["responses"][str(code)]["content"]
        assert content == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
        }
    if "requestBody" in operation:
        assert list(operation["requestBody"]["content"]) == ["application/json"]


def test_real_error_bodies_match_the_documented_error_body(client, headers, openapi):
    error_schema = {
        "$ref": "#/components/schemas/ErrorOut",
        "components": openapi["components"],
    }
    batch = {"events": [{"kind": "click", "product": "85123A"}]}
    answers = [
        client.post("/api/v1/events", batch, "application/json", headers=headers),
        client.post("/api/v1/recommendations", {}, "application/json"),
        client.get("/api/v1/nope"),
        client.post("/api/v1/events", "{", "application/json", headers=headers),
    ]

    assert [answer.status_code for answer in answers] == [400, 401, 404, 400]
    assert answers[0].json()["error"]["details"][0]["index"] == 0
    for answer in answers:
        jsonschema.validate(answer.json(), error_schema)


@pytest.mark.django_db
def test_the_docs_page_loads_its_assets_from_this_server(client):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui-dist@" not in page
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page)
    assert urls
    external = [url for url in urls if re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", url)]
    assert external == []
    bundle = "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    assert f"/static/{bundle}" in page
    assert finders.find(bundle) is not None

"""Schemathesis over the OpenAPI schema: no request it generates gets a 5xx, and
every answer has a documented status code and body."""

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from commerce.models import ApiScope
from commerce.services import create_api_client
from config.wsgi import application
from tests.factories import CustomerFactory, ProductFactory

# Readiness answers 503 by design until a policy is live; it is tested apart.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema", application).exclude(
    path="/api/v1/ready"
)


@pytest.fixture
def in_test_transaction() -> Iterator[None]:
    """Keep the test's connection open across WSGI requests, as Django's test
    client does: a request's end would otherwise close it mid-transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(db, in_test_transaction) -> str:
    CustomerFactory.create(external_id="17850")
    ProductFactory.create(external_id="85123A")
    return create_api_client(name="fuzzer", scopes=list(ApiScope.values)).key


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_generated_requests_get_no_server_error(case, api_key):
    case.call_and_validate(
        headers={"Authorization": f"Api-Key {api_key}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            response_schema_conformance,
        ],
    )

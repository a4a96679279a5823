"""Views of the shop API: parse, call a service or selector, render."""

from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.api.authentication import HasScope
from commerce.api.parsers import LenientJSONParser
from commerce.api.schema import error_responses
from commerce.api.serializers import (
    CustomerBatchIn,
    CustomerSyncOut,
    FeedbackBatchIn,
    FeedbackBatchOut,
    HealthOut,
    ProductBatchIn,
    ProductListQuery,
    ProductOut,
    ProductSyncOut,
    RecommendationIn,
    RecommendationOut,
    validate_feedback_batch,
)
from commerce.models import ApiClient, ApiScope
from commerce.selectors import products_page
from commerce.services import record_feedback_events, sync_customers, sync_products
from config.celery import app as celery_app
from rl_engine.serving import SlateRequest, live_policy, recommend

# The errors a client endpoint can answer, by the kind of input it reads.
QUERY_ERRORS = (400, 401, 403, 429)
BODY_ERRORS = (400, 401, 403, 413, 415, 429)


class ClientView(APIView):
    """A view for API clients: the key must carry ``required_scope``."""

    permission_classes = [HasScope]
    required_scope: str

    @property
    def api_client(self) -> ApiClient:
        client = self.request.auth
        if not isinstance(client, ApiClient):  # HasScope lets only clients in
            raise TypeError("ClientView served a request without an API client")
        return client


class EventBatchView(ClientView):
    """Record a batch of feedback events.

    All or nothing: if any event is invalid (a bad field, a broken rule of its
    kind, an unknown product, customer or slate, or a mismatch with the slate
    it names) the answer is 400 naming the index and field of every problem,
    and nothing of the batch is stored. Events already stored under the same
    client event id are not stored again; they answer ``duplicate`` with the
    original event's id, and a resend that says something else answers 409.
    """

    required_scope = ApiScope.EVENTS
    parser_classes = [LenientJSONParser]
    throttle_scope = "events"

    @extend_schema(
        request=FeedbackBatchIn,
        responses={
            200: FeedbackBatchOut,
            **error_responses(
                *BODY_ERRORS,
                conflict="A client event id was already stored with other "
                "content (`idempotency_key_reused`); `details` names each event.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        outcomes = record_feedback_events(
            source=self.api_client.source, events=validate_feedback_batch(request.data)
        )
        created = sum(outcome.status == "created" for outcome in outcomes)
        # FeedbackBatchOut's shape, built directly: running its fields over a
        # hundred results would be a noticeable share of this endpoint's time.
        body = {
            "created": created,
            "duplicates": len(outcomes) - created,
            "results": [
                {
                    "index": outcome.index,
                    "client_event_id": outcome.client_event_id,
                    "event_id": outcome.event_id,
                    "status": outcome.status,
                }
                for outcome in outcomes
            ],
        }
        return Response(body, status=status.HTTP_200_OK)


class RecommendationView(ClientView):
    """Serve a slate of products for a customer or an anonymous session.

    The answer always carries a slate: with no live policy, for a customer
    with no history, or when ``non_personalised`` is set, the most popular
    eligible products, each with reason ``fallback``.
    """

    required_scope = ApiScope.RECOMMENDATIONS
    throttle_scope = "recommendations"

    @extend_schema(
        request=RecommendationIn,
        responses={200: RecommendationOut, **error_responses(*BODY_ERRORS)},
    )
    def post(self, request: Request) -> Response:
        query = RecommendationIn(data=request.data)
        query.is_valid(raise_exception=True)
        fields = query.validated_data
        session = fields["session"] or {"id": "", "items": []}
        context = fields["context"]
        served = recommend(
            SlateRequest(
                customer_external_id=fields["customer"],
                session_id=session["id"],
                session_items=session["items"],
                k=fields["k"],
                context={k: v for k, v in context.items() if k != "exclude"},
                exclude=set(context.get("exclude", [])),
                exclude_bought_within_days=fields["exclude_bought_within_days"],
                non_personalised=fields["non_personalised"],
                as_of=fields["as_of"],
            ),
            rng=_rng(),
        )
        body = RecommendationOut(
            {
                "slate_id": served.slate.pk,
                "policy_version": served.policy_version,
                "items": [
                    {
                        "product": sku,
                        "position": position,
                        "score": item.score,
                        "propensity": item.propensity,
                        "reason": item.reason,
                    }
                    for position, (sku, item) in enumerate(served.items, start=1)
                ],
            }
        )
        return Response(body.data)


def _rng() -> np.random.Generator:
    return np.random.default_rng()


class HealthView(APIView):
    """Report whether the database answers. Open without a key."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthOut, 503: HealthOut})
    def get(self, request: Request) -> Response:
        checks = {"database": _database_check()}
        healthy = all(value == "ok" for value in checks.values())
        return Response(
            {"status": "ok" if healthy else "degraded", "checks": checks},
            status=status.HTTP_200_OK
            if healthy
            else status.HTTP_503_SERVICE_UNAVAILABLE,
        )


class ReadinessView(APIView):
    """Report whether this process can serve: database, live policy, broker.

    503 until every check passes. With no broker configured, tasks run in
    process and the broker check passes as ``in-process``.
    """

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthOut, 503: HealthOut})
    def get(self, request: Request) -> Response:
        checks = {
            "database": _database_check(),
            "policy": _policy_check(),
            "broker": _broker_check(),
        }
        ready = checks["database"] == "ok" and not any(
            value.startswith(("unreachable", "none")) for value in checks.values()
        )
        return Response(
            {"status": "ok" if ready else "degraded", "checks": checks},
            status=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
        )


def _policy_check() -> str:
    try:
        live = live_policy.get()
    except Exception as error:  # a missing or corrupt artifact
        return f"unreachable: {type(error).__name__}"
    return f"loaded {live.label}" if live.policy is not None else "none (fallback)"


def _broker_check() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "in-process"
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # any failure means "not reachable" here
        return f"unreachable: {type(error).__name__}"
    return "ok"


def _database_check() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any failure means "not reachable" here
        return f"unreachable: {type(error).__name__}"
    return "ok"


class ProductsView(ClientView):
    """List the catalogue, or create and update products in bulk by SKU.

    A stored product changes only in the fields sent; a new one needs a title.
    A sync is all or nothing: a bad field, a SKU given twice
    (``duplicate_in_batch``) or a new product without a title answers 400, and
    a product given to another merchant than the one that sells its SKU
    answers 409 ``sku_owned_by_other_merchant``, each naming the index and
    field of every such product; nothing of the batch is stored either way.
    A stored sync answers 200 even when the task queue cannot take the
    embedding of its new texts: ``embedding_deferred`` counts those products.
    """

    required_scope = ApiScope.CATALOGUE
    throttle_scope = "catalogue"

    @extend_schema(
        parameters=[ProductListQuery],
        responses={200: ProductOut(many=True), **error_responses(*QUERY_ERRORS)},
    )
    def get(self, request: Request) -> Response:
        query = ProductListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        products = products_page(**query.validated_data)
        return Response(ProductOut(products, many=True).data)

    @extend_schema(
        request=ProductBatchIn,
        responses={
            200: ProductSyncOut,
            **error_responses(
                *BODY_ERRORS,
                conflict="A product is given to another merchant than the one "
                "that sells its SKU (`sku_owned_by_other_merchant`); `details` "
                "names each product.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        batch = ProductBatchIn(data=request.data)
        batch.is_valid(raise_exception=True)
        result = sync_products(
            products=batch.validated_data["products"],
            default_merchant=settings.IMPORT_DEFAULT_MERCHANT,
            actor_label=f"api:{self.api_client.name}",
        )
        to_embed = len(result.changed_text)
        deferred = to_embed if result.embedding_deferred else 0
        return Response(
            ProductSyncOut(
                {
                    "created": result.created,
                    "updated": result.updated,
                    "unchanged": result.unchanged,
                    "queued_for_embedding": to_embed - deferred,
                    "embedding_deferred": deferred,
                }
            ).data
        )


class CustomersView(ClientView):
    """Create or update customers in bulk by their external id."""

    required_scope = ApiScope.CATALOGUE
    throttle_scope = "catalogue"

    @extend_schema(
        request=CustomerBatchIn,
        responses={200: CustomerSyncOut, **error_responses(*BODY_ERRORS)},
    )
    def post(self, request: Request) -> Response:
        batch = CustomerBatchIn(data=request.data)
        batch.is_valid(raise_exception=True)
        created, updated = sync_customers(
            customers=batch.validated_data["customers"],
            actor_label=f"api:{self.api_client.name}",
        )
        return Response(CustomerSyncOut({"created": created, "updated": updated}).data)


class NotFoundView(APIView):
    """Answer a path under /api/ that names no endpoint: 404 ``not_found``.

    Routed after every API path, so that a client gets the API's error body
    rather than Django's HTML page.
    """

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    schema = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        hint = " (API paths end without a slash)" if request.path.endswith("/") else ""
        raise exceptions.NotFound(f"No endpoint at {request.path}{hint}.")

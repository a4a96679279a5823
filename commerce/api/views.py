"""Views of the shop API: parse, call a service or selector, render."""

from typing import Any

from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.api.authentication import HasScope
from commerce.api.serializers import (
    FeedbackBatchIn,
    FeedbackBatchOut,
    HealthOut,
)
from commerce.models import ApiClient, ApiScope
from commerce.services import record_feedback_events


class LenientJSONParser(JSONParser):
    """Accept NaN and Infinity so the field they sit in can be named in the error."""

    strict = False


class EventBatchView(APIView):
    """Record a batch of feedback events.

    All or nothing: if any event is invalid (a bad field, an unknown product,
    customer or slate) the answer is 400 naming the index and field of every
    problem, and nothing of the batch is stored. Events already stored under the
    same client event id are not stored again; they answer ``duplicate`` with
    the original event's id.
    """

    required_scope = ApiScope.EVENTS
    permission_classes = [HasScope]
    parser_classes = [LenientJSONParser]
    throttle_scope = "events"

    @extend_schema(request=FeedbackBatchIn, responses={200: FeedbackBatchOut})
    def post(self, request: Request) -> Response:
        batch = FeedbackBatchIn(data=request.data)
        batch.is_valid(raise_exception=True)
        client = request.auth
        assert isinstance(client, ApiClient)  # HasScope let only clients in
        outcomes = record_feedback_events(
            source=client.source, events=batch.validated_data["events"]
        )
        created = sum(outcome.status == "created" for outcome in outcomes)
        body = FeedbackBatchOut(
            {
                "created": created,
                "duplicates": len(outcomes) - created,
                "results": outcomes,
            }
        )
        return Response(body.data, status=status.HTTP_200_OK)


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


def _database_check() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any failure means "not reachable" here
        return f"unreachable: {type(error).__name__}"
    return "ok"

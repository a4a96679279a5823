"""One error format for the whole API, with stable codes.

Every error answers ``{"error": {"code", "message", "details"}}``. ``details``
lists field problems as ``{"index", "field", "code", "message"}``, where
``index`` is the position in a batch (absent for single objects).
"""

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from commerce.errors import (
    CommerceError,
    IdempotencyKeyReusedError,
    InvalidEventsError,
    InvalidProductsError,
    SkuOwnedByOtherMerchantError,
)
from rl_engine.errors import PolicyError

# Request fields that hold a batch: their errors carry each item's index.
BATCH_FIELDS = {"events", "products", "customers"}

DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid_request",
}


def api_exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(error, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return _error(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            "payload_too_large",
            f"The request body is larger than {limit:,} bytes; send smaller batches.",
            [],
        )
    if isinstance(error, InvalidEventsError | InvalidProductsError):
        return _error(
            status.HTTP_400_BAD_REQUEST, error.code, error.message, error.details
        )
    if isinstance(error, IdempotencyKeyReusedError | SkuOwnedByOtherMerchantError):
        return _error(
            status.HTTP_409_CONFLICT, error.code, error.message, error.details
        )
    if isinstance(error, CommerceError | PolicyError):
        return _error(status.HTTP_400_BAD_REQUEST, error.code, error.message, [])

    response = exception_handler(error, context)
    if response is None:
        return None
    code = next(
        (code for kind, code in DRF_CODES.items() if isinstance(error, kind)),
        "error",
    )
    if isinstance(error, exceptions.ValidationError):
        details = flatten_validation_errors(error.detail)
        message = "The request is invalid; see details."
    else:
        details = []
        message = str(getattr(error, "detail", error))
    response.data = {"error": {"code": code, "message": message, "details": details}}
    return response


def flatten_validation_errors(
    detail: Any, index: int | None = None, field: str = ""
) -> list[dict[str, Any]]:
    """Turn DRF's nested error detail into a flat list with batch indexes."""
    problems: list[dict[str, Any]] = []
    if isinstance(detail, dict) and field in BATCH_FIELDS:
        # DRF keys a list serializer's errors by the position of each bad item.
        for position, value in detail.items():
            if str(position).isdigit():
                problems += flatten_validation_errors(value, int(position), "")
            else:
                problems += flatten_validation_errors(value, index, field)
    elif isinstance(detail, dict):
        for name, value in detail.items():
            child = name if name != "non_field_errors" else field
            nested = f"{field}.{child}" if field and child != field else child
            problems += flatten_validation_errors(value, index, nested)
    elif isinstance(detail, list):
        batch = field in BATCH_FIELDS and all(isinstance(item, dict) for item in detail)
        for position, value in enumerate(detail):
            if batch:
                problems += flatten_validation_errors(value, position, "")
            else:
                problems += flatten_validation_errors(value, index, field)
    else:
        problem: dict[str, Any] = {
            "field": field,
            "code": getattr(detail, "code", "invalid"),
            "message": str(detail),
        }
        if index is not None:
            problem["index"] = index
        problems.append(problem)
    return problems


def _error(
    http_status: int, code: str, message: str, details: list[dict[str, Any]]
) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "details": details}},
        status=http_status,
    )

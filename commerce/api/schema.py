"""OpenAPI description of the API-key scheme and the error body, for drf-spectacular."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "commerce.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "The client's key after the word Api-Key: `Api-Key grk_...`",
        }


class ProblemOut(serializers.Serializer):
    index = serializers.IntegerField(
        required=False, help_text="Position in the batch; absent for single objects."
    )
    field = serializers.CharField(help_text="Dotted path of the field; may be empty.")
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorBodyOut(serializers.Serializer):
    code = serializers.CharField(
        help_text="Stable error code, e.g. `invalid_request`, `not_found`, "
        "`explanation_unavailable`."
    )
    message = serializers.CharField()
    details = ProblemOut(many=True)


class ErrorOut(serializers.Serializer):
    """Every error of the API: ``{"error": {"code", "message", "details"}}``.

    The body that ``commerce.api.errors`` builds, for the shop's and the
    merchants' endpoints alike.
    """

    error = ErrorBodyOut()


ERROR_DESCRIPTIONS = {
    400: "The request is invalid (`invalid_request`, `malformed_request` or a "
    "domain code); `details` names each problem.",
    401: "No API key, or an unknown or revoked one (`not_authenticated`, "
    "`authentication_failed`).",
    403: "The API key lacks this endpoint's scope (`permission_denied`).",
    413: "The request body is larger than the server accepts (`payload_too_large`).",
    415: "The body is not JSON (`unsupported_media_type`).",
    429: "The client's rate for this endpoint is spent (`throttled`); see Retry-After.",
}


def error_responses(
    *statuses: int, conflict: str | None = None
) -> dict[int, OpenApiResponse]:
    """The error answers an endpoint can give, each with the one error body.

    ``conflict`` describes the endpoint's 409, when it has one.
    """
    responses = {
        code: OpenApiResponse(ErrorOut, description=ERROR_DESCRIPTIONS[code])
        for code in statuses
    }
    if conflict is not None:
        responses[409] = OpenApiResponse(ErrorOut, description=conflict)
    return dict(sorted(responses.items()))

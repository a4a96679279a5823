"""API-key authentication and per-scope permissions."""

import hashlib
import hmac
from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from commerce.models import ApiClient

KEY_PREFIX_LENGTH = 12
HEADER_PREFIX = "Api-Key "


def hash_key(key: str) -> str:
    """Hash an API key. Keys are 256-bit random, so a plain SHA-256 suffices."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiClientPrincipal:
    """The ``request.user`` of an API call: the client, never a person."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.pk = None

    def __str__(self) -> str:
        return f"api-client:{self.client.name}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Read ``Authorization: Api-Key <key>`` and find the client it belongs to."""

    def authenticate(
        self, request: Request
    ) -> tuple[ApiClientPrincipal, ApiClient] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith(HEADER_PREFIX):
            return None
        key = header.removeprefix(HEADER_PREFIX).strip()
        client = ApiClient.objects.filter(
            key_prefix=key[:KEY_PREFIX_LENGTH], is_active=True
        ).first()
        if client is None or not hmac.compare_digest(client.key_hash, hash_key(key)):
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return ApiClientPrincipal(client), client

    def authenticate_header(self, request: Request) -> str:
        return "Api-Key"


class HasScope(permissions.BasePermission):
    """Let a client in only if its key carries the view's ``required_scope``."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.auth
        return isinstance(client, ApiClient) and client.has_scope(view.required_scope)

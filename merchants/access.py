"""Which merchants a user may see, and so which products.

A merchant account is a user in a merchant's ``members``. It sees the
products of its merchants and nothing of any other merchant's: every read
goes through :func:`visible_products`, so another merchant's product is simply
not there and answers 404, exactly like a product that does not exist.
Governance staff and API clients are not merchant accounts and are refused
(403); anonymous visitors are sent to log in. Pages and the merchant API
authenticate by session only.
"""

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render

from commerce.models import Merchant, Product


def _is_person(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "pk", None) is not None
    )


def visible_merchants(user: Any) -> QuerySet[Merchant]:
    """The merchants whose products ``user`` may see; none for non-members."""
    if not _is_person(user):
        return Merchant.objects.none()
    return Merchant.objects.filter(members=user).order_by("name", "id")


def is_merchant_member(user: Any) -> bool:
    return _is_person(user) and visible_merchants(user).exists()


def visible_products(user: Any) -> QuerySet[Product]:
    """The products of the user's merchants, each once."""
    return Product.objects.filter(
        merchant__in=visible_merchants(user).values("id")
    ).select_related("merchant")


def product_for(user: Any, pk: int) -> Product:
    """The product if it is one of the user's merchants', else 404."""
    return get_object_or_404(visible_products(user), pk=pk)


class MerchantRequiredMixin(LoginRequiredMixin, UserPassesTestMixin):
    """Admit merchant accounts; log in anonymous visitors, refuse others."""

    def test_func(self) -> bool:
        return is_merchant_member(self.request.user)  # type: ignore[attr-defined]

    # Refused members get the portal's own page, not the governance one.
    def handle_no_permission(self) -> HttpResponse:  # type: ignore[override]
        request = self.request  # type: ignore[attr-defined]
        if not request.user.is_authenticated:
            return super().handle_no_permission()
        return render(request, "merchants/403.html", status=403)

"""The read-only merchant API: the portal's figures and explanations as JSON.

Session authentication only: a merchant account logged in to the portal. An
API key opens none of it. Every product is read through
``merchants.access.visible_products``, so another merchant's product id
answers 404 ``not_found``, exactly like an id that does not exist.
"""

from typing import Any, NoReturn

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, permissions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.api.schema import ErrorOut
from commerce.models import Product
from governance.errors import GovernanceError
from governance.explanations import why_not, why_recommended
from merchants.access import is_merchant_member, visible_merchants, visible_products
from merchants.api.serializers import (
    GovernanceOut,
    MerchantProductDetailOut,
    MerchantProductListOut,
    MerchantProductListQuery,
    RankingOut,
    WhyNotOut,
    WhyNotQuery,
    WhyRecommendedOut,
    WindowQuery,
)
from merchants.ranking import popularity_only, ranking_weights
from merchants.selectors import (
    Window,
    daily_figures,
    default_last_day,
    merchants_product_figures,
    position_counts,
    product_figures,
    product_overrides,
    review_decisions,
    serving_policy,
)

TAGS = ["merchant"]
REFUSED = {
    400: OpenApiResponse(ErrorOut, description="a query parameter is invalid"),
    403: OpenApiResponse(ErrorOut, description="not logged in as a merchant account"),
}
ERRORS = {
    **REFUSED,
    404: OpenApiResponse(ErrorOut, description="no such product among yours"),
}
UNEXPLAINED = {
    409: OpenApiResponse(ErrorOut, description="no explanation can be given"),
}


class IsMerchantMember(permissions.BasePermission):
    message = "Only merchant accounts may read the merchant API."

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_merchant_member(request.user)


def explanation_unavailable(error: GovernanceError) -> Response:
    """409 in the API's error format, with the explanation error's own code."""
    return Response(
        {"error": {"code": error.code, "message": error.message, "details": []}},
        status=status.HTTP_409_CONFLICT,
    )


class MerchantView(APIView):
    """A read of the merchant's own products, for a logged-in merchant account."""

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsMerchantMember]

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        if request.user is None:
            raise exceptions.NotAuthenticated(
                "Log in to the merchant portal first; API keys do not open "
                "the merchant API."
            )
        super().permission_denied(request, message, code)

    def product(self, pk: int) -> Product:
        product = visible_products(self.request.user).filter(pk=pk).first()
        if product is None:
            raise exceptions.NotFound("No product with this id among yours.")
        return product


def _window(request: Request, query_class: type[WindowQuery] = WindowQuery) -> Any:
    """The window asked for; without ``until``, up to the latest day with
    activity on the user's merchants' products, as the portal shows it."""
    query = query_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    fields = query.validated_data
    until = fields.get("until") or default_last_day(
        visible_merchants(request.user).values_list("id", flat=True)
    )
    return Window.ending(until, fields["days"]), fields


def _product_row(product: Product, figures: Any) -> dict[str, Any]:
    return {"product": product, "figures": figures}


class ProductListView(MerchantView):
    """List your products with their figures over a window of days, most
    exposed first."""

    @extend_schema(
        tags=TAGS,
        parameters=[MerchantProductListQuery],
        responses={200: MerchantProductListOut, **REFUSED},
        operation_id="merchant_products_list",
    )
    def get(self, request: Request) -> Response:
        window, fields = _window(request, MerchantProductListQuery)
        figures = merchants_product_figures(
            visible_merchants(request.user).values_list("id", flat=True), window
        )
        products: QuerySet[Product] = visible_products(request.user)
        rows = sorted(
            (_product_row(product, figures[product.pk]) for product in products),
            key=lambda row: (
                -row["figures"].exposure,
                -row["figures"].purchases,
                row["product"].external_id,
            ),
        )
        start = fields["offset"]
        body = MerchantProductListOut(
            {
                "window": window,
                "count": len(rows),
                "results": rows[start : start + fields["limit"]],
            }
        )
        return Response(body.data)


class ProductDetailView(MerchantView):
    """One product's figures, per day, and its positions in the slates."""

    @extend_schema(
        tags=TAGS,
        parameters=[WindowQuery],
        responses={200: MerchantProductDetailOut, **ERRORS},
        operation_id="merchant_product_retrieve",
    )
    def get(self, request: Request, pk: int) -> Response:
        product = self.product(pk)
        window, _ = _window(request)
        siblings = Product.objects.filter(merchant_id=product.merchant_id)
        body = MerchantProductDetailOut(
            {
                "product": product,
                "figures": product_figures(siblings, window)[product.pk],
                "window": window,
                "daily": daily_figures(product, window),
                "positions": [
                    {"position": position, "count": count}
                    for position, count in position_counts(product, window).items()
                ],
            }
        )
        return Response(body.data)


class WhyRecommendedView(MerchantView):
    """To whom the product is shown, what in a customer's history raises its
    score (an attribution of the live policy's Q-value), and the products
    with the nearest descriptions."""

    @extend_schema(
        tags=TAGS,
        parameters=[WindowQuery],
        responses={200: WhyRecommendedOut, **ERRORS, **UNEXPLAINED},
        operation_id="merchant_product_why_recommended",
    )
    def get(self, request: Request, pk: int) -> Response:
        product = self.product(pk)
        window, _ = _window(request)
        label, policy = serving_policy()
        try:
            answer = why_recommended(product, policy=policy, since=window.since)
        except GovernanceError as error:
            return explanation_unavailable(error)
        body = answer.to_dict()
        own = dict(
            visible_products(request.user)
            .filter(external_id__in=[n["sku"] for n in body["nearest"]])
            .values_list("external_id", "id")
        )
        for neighbour in body["nearest"]:
            neighbour["product_id"] = own.get(neighbour["sku"])
        body["policy_version"] = label
        return Response(WhyRecommendedOut(body).data)


class WhyNotView(MerchantView):
    """Why the product is not shown to customers of a country: the first rule
    or governance override that removes it, or its rank and score gap."""

    @extend_schema(
        tags=TAGS,
        parameters=[WhyNotQuery],
        responses={200: WhyNotOut, **ERRORS, **UNEXPLAINED},
        operation_id="merchant_product_why_not",
    )
    def get(self, request: Request, pk: int) -> Response:
        product = self.product(pk)
        query = WhyNotQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        country = query.validated_data["country"].strip()
        _, policy = serving_policy()
        try:
            answer = why_not(
                product,
                {"country": country} if country else {},
                policy=policy,
                k=query.validated_data["k"],
            )
        except GovernanceError as error:
            return explanation_unavailable(error)
        return Response(WhyNotOut(answer.to_dict()).data)


class GovernanceView(MerchantView):
    """The overrides on the product and the reviewers' decisions about it,
    with reason codes and statements; never a reviewer's note or name."""

    @extend_schema(
        tags=TAGS,
        responses={200: GovernanceOut, **ERRORS},
        operation_id="merchant_product_governance",
    )
    def get(self, request: Request, pk: int) -> Response:
        product = self.product(pk)
        one = Product.objects.filter(pk=product.pk)
        body = GovernanceOut(
            {"overrides": product_overrides(one), "decisions": review_decisions(one)}
        )
        return Response(body.data)


class MerchantDecisionsView(MerchantView):
    """Every override on your products and every decision about them or
    your merchant account, newest first."""

    @extend_schema(
        tags=TAGS,
        responses={200: GovernanceOut, 403: REFUSED[403]},
        operation_id="merchant_decisions",
    )
    def get(self, request: Request) -> Response:
        products = visible_products(request.user)
        merchants = list(visible_merchants(request.user).values_list("id", flat=True))
        body = GovernanceOut(
            {
                "overrides": product_overrides(products),
                "decisions": review_decisions(products, merchants),
            }
        )
        return Response(body.data)


class RankingView(MerchantView):
    """The main parameters of ranking and how much each weighs for the live
    policy, as the public transparency page states them."""

    @extend_schema(
        tags=TAGS,
        responses={200: RankingOut, 403: REFUSED[403]},
        operation_id="merchant_ranking",
    )
    def get(self, request: Request) -> Response:
        label, policy = serving_policy()
        weights = (
            ranking_weights.get(policy, label)
            if policy is not None
            else popularity_only()
        )
        return Response(RankingOut(weights).data)

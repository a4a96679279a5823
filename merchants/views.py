"""The merchant portal, the public transparency page, and the staff page that
explains one served slate.

Views parse input with the forms, read through ``merchants.selectors``,
``merchants.access`` and ``governance.explanations``, and render a template.
Nothing here writes.
"""

import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from commerce.models import Product, ServedSlate
from governance.access import (
    StaffRequiredMixin,
    is_governance_admin,
    is_governance_staff,
)
from governance.charts import Series, bar_chart
from governance.errors import GovernanceError
from governance.explanations import (
    NeighbourProduct,
    WhyRecommended,
    explain_slate,
    why_not,
    why_recommended,
)
from governance.models import OverrideKind
from governance.selectors import overrides_in_force
from governance.views import charts_of, render_page
from merchants.access import (
    MerchantRequiredMixin,
    is_merchant_member,
    product_for,
    visible_merchants,
    visible_products,
)
from merchants.forms import WhyNotForm, WindowForm
from merchants.ranking import RankingWeights, ranking_weights
from merchants.selectors import (
    ProductFigures,
    daily_figures,
    merchants_product_figures,
    position_buckets,
    position_counts,
    product_figures,
    product_overrides,
    review_decisions,
    serving_policy,
)
from rl_engine.core.config import RewardConfig
from rl_engine.services import training_config

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
SHARE_CHART_PRODUCTS = 15
"""Products, by exposure, in the list's exposure-against-sales charts."""


def merchant_page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> HttpResponse:
    context = {**context, "merchants": visible_merchants(request.user)}
    return render(request, f"merchants/{template}", context, status=status)


class HomeView(View):
    """Where a person lands after logging in: the pages their role opens."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if is_governance_staff(request.user):
            return redirect("governance:queue")
        if is_merchant_member(request.user):
            return redirect("merchants:products")
        return redirect("transparency")


# The portal.


def window_form(request: HttpRequest) -> WindowForm:
    """The window of days asked for, defaulting to the user's merchants' latest
    activity; the same window on every page of the portal."""
    return WindowForm(
        request.GET or None,
        merchant_ids=visible_merchants(request.user).values_list("id", flat=True),
    )


@dataclass(frozen=True)
class ProductRow:
    product: Product
    figures: ProductFigures


class ProductListView(MerchantRequiredMixin, View):
    def get(self, request: HttpRequest) -> HttpResponse:
        form = window_form(request)
        window = form.window()
        search = request.GET.get("q", "").strip()

        figures = merchants_product_figures(
            visible_merchants(request.user).values_list("id", flat=True), window
        )
        products = visible_products(request.user)
        if search:
            products = products.filter(
                Q(external_id__icontains=search) | Q(title__icontains=search)
            )
        rows = sorted(
            (ProductRow(product, figures[product.pk]) for product in products),
            key=lambda row: (
                -row.figures.exposure,
                -row.figures.purchases,
                row.product.external_id,
            ),
        )
        active = [row for row in rows if row.figures.shown or row.figures.purchases]
        top = active[:SHARE_CHART_PRODUCTS]
        charts = charts_of(
            [
                Series(
                    "Share of your exposure",
                    [
                        (row.product.external_id, row.figures.exposure_share)
                        for row in top
                    ],
                ),
                Series(
                    "Share of your sales",
                    [(row.product.external_id, row.figures.sales_share) for row in top],
                ),
            ]
            if top
            else []
        )
        return merchant_page(
            request,
            "product_list.html",
            {
                "window_form": form,
                "window": window,
                "search": search,
                "page": Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page")),
                "charts": charts,
                "several_merchants": visible_merchants(request.user).count() > 1,
            },
        )


def _own_neighbours(
    user: Any, nearest: list[NeighbourProduct]
) -> list[tuple[NeighbourProduct, int | None]]:
    """Each neighbour with the id of the user's own product of that SKU, if any."""
    own = dict(
        visible_products(user)
        .filter(external_id__in=[n.sku for n in nearest])
        .values_list("external_id", "id")
    )
    return [(neighbour, own.get(neighbour.sku)) for neighbour in nearest]


def explanation_context(
    request: HttpRequest, product: Product, window: Any
) -> dict[str, Any]:
    """Why the product is recommended, for the product page."""
    label, policy = serving_policy()
    try:
        why = why_recommended(product, policy=policy, since=window.since)
    except GovernanceError as error:
        logger.warning(
            "No explanation for product %s: %s",
            product.pk,
            error.code,
            extra={"product_id": product.pk, "code": error.code},
        )
        return {"policy_version": label, "why": None, "why_error": error.message}
    return {
        "policy_version": label,
        "why": why,
        "why_error": "",
        "audience_charts": charts_of(audience_series(why)),
        "nearest": _own_neighbours(request.user, why.nearest),
    }


def audience_series(why: WhyRecommended) -> list[Series]:
    audience = why.audience
    series = [
        Series(
            "Shown to customers in", [(c.label, c.share) for c in audience.countries]
        ),
        Series(
            "Shown to customers with a history of",
            [(c.label, c.share) for c in audience.history_kinds],
        ),
    ]
    return [s for s in series if s.points]


class ProductDetailView(MerchantRequiredMixin, View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        product = product_for(request.user, pk)
        form = window_form(request)
        window = form.window()

        siblings = Product.objects.filter(merchant_id=product.merchant_id)
        figures = product_figures(siblings, window)[product.pk]
        days = daily_figures(product, window)
        positions = position_counts(product, window)

        def per_day(title: str, attribute: str) -> Series:
            return Series(
                title,
                [(day.day.isoformat(), getattr(day, attribute)) for day in days],
                over_time=True,
            )

        over_time = charts_of(
            [
                per_day("Times shown per day", "shown"),
                per_day("Exposure per day (position-weighted)", "exposure"),
                per_day("Clicks per day", "clicks"),
                per_day("Purchases per day", "purchases"),
                per_day("Returns per day", "returns"),
            ]
        )
        ranking = charts_of(
            [
                Series(
                    "Times shown at each position",
                    [(label, float(n)) for label, n in position_buckets(positions)],
                ),
                Series(
                    f"Share of {product.merchant.name}'s exposure and sales",
                    [
                        ("exposure", figures.exposure_share),
                        ("sales", figures.sales_share),
                    ],
                ),
            ]
        )
        this_product = Product.objects.filter(pk=product.pk)
        return merchant_page(
            request,
            "product_detail.html",
            {
                "product": product,
                "window_form": form,
                "window": window,
                "figures": figures,
                "days": days,
                "over_time_charts": over_time,
                "ranking_charts": ranking,
                "positions": sorted(positions.items()),
                "why_not_form": WhyNotForm(),
                "overrides": product_overrides(this_product),
                "decisions": review_decisions(this_product),
                **explanation_context(request, product, window),
            },
        )


class WhyNotView(MerchantRequiredMixin, View):
    """Why a product is not shown to a group of customers."""

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        product = product_for(request.user, pk)
        form = WhyNotForm(request.GET or None)
        answer, error = None, ""
        if form.is_bound and form.is_valid():
            _, policy = serving_policy()
            try:
                answer = why_not(
                    product, form.groups(), policy=policy, k=form.slate_size()
                )
            except GovernanceError as refused:
                error = refused.message
        status = 400 if form.is_bound and not form.is_valid() else 200
        return merchant_page(
            request,
            "why_not.html",
            {"product": product, "form": form, "answer": answer, "error": error},
            status=status,
        )


# The public page.


@dataclass(frozen=True)
class RewardLine:
    label: str
    value: float


REWARD_LABELS = {
    "purchase": "The customer buys the product",
    "return_": "The customer sends it back (added to the purchase's reward)",
}
"""The rewards training learns from: it builds its steps from baskets bought
and returned (``rl_engine.core.transitions``). Clicks, carts and impressions
are recorded and audited, and the page says they are not learned from yet."""


def reward_lines(rewards: RewardConfig) -> list[RewardLine]:
    return [
        RewardLine(label, float(getattr(rewards, name)))
        for name, label in REWARD_LABELS.items()
    ]


def exploration_text() -> str:
    """How serving departs from the best scores, in words, from the settings."""
    kind = settings.SERVING_EXPLORATION
    candidates = settings.SERVING_CANDIDATES
    if kind == "softmax":
        temperature = settings.SERVING_TEMPERATURE
        odds = math.exp(-1.0)
        return (
            f"Each place of the list is drawn at random among the {candidates} "
            f"best-scored products still left, with chances proportional to "
            f"exp(score / {temperature:g}): a product that scores {temperature:g} "
            f"less than another is {odds:.0%} as likely to be drawn. Better-scored "
            "products are much more likely to come first, and others get a chance "
            "to be seen, so the model keeps learning about them."
        )
    if kind == "epsilon_greedy":
        epsilon = settings.SERVING_EPSILON
        return (
            f"Each place of the list takes the best-scored product left, except "
            f"with a {epsilon:.0%} chance a product drawn at random among the "
            f"{candidates} best-scored, so the model keeps learning about others."
        )
    return "Each place of the list takes the best-scored product left."


def weights_chart(weights: RankingWeights) -> Any:
    return bar_chart(
        "Share of the differences between products' scores",
        [(w.part.label, w.share) for w in weights.weights],
    )


class TransparencyView(View):
    """How ranking works, in plain language; open to everyone."""

    def get(self, request: HttpRequest) -> HttpResponse:
        label, policy = serving_policy()
        weights = ranking_weights.get(policy, label) if policy is not None else None
        rewards = policy.config.rewards if policy is not None else None
        in_force = dict(
            overrides_in_force().values_list("kind").annotate(n=Count("id")).order_by()
        )
        context = {
            "policy_version": label,
            "weights": weights,
            "weights_chart": weights_chart(weights) if weights else None,
            "trained_rewards": rewards is not None,
            "rewards": reward_lines(rewards or training_config().rewards),
            "exploration": exploration_text(),
            "popularity_days": settings.POPULARITY_WINDOW_DAYS,
            "history_length": policy.config.policy.sequence_length if policy else None,
            "recent_baskets": policy.config.policy.recent_baskets if policy else None,
            "overrides_in_force": [
                (kind.label, in_force.get(kind.value, 0))
                for kind in OverrideKind
                if kind != OverrideKind.EXCLUDE_TRAINING
            ],
            "return_rate_max": settings.AUDIT_RETURN_RATE_MAX,
            "rating_min": settings.AUDIT_RATING_MIN,
            "max_k": settings.SERVING_MAX_K,
            "is_governance_staff": is_governance_staff(request.user),
            "is_governance_admin": is_governance_admin(request.user),
            "is_merchant": is_merchant_member(request.user),
        }
        return render(request, "transparency.html", context)


# For staff: one slate.


class SlateExplanationView(StaffRequiredMixin, View):
    """Why this slate went to this customer: history, picks, overrides, scores."""

    def get(self, request: HttpRequest, slate_id: uuid.UUID) -> HttpResponse:
        slate = get_object_or_404(ServedSlate, pk=slate_id)
        label, policy = serving_policy()
        same_version = bool(slate.policy_version) and slate.policy_version == label
        explanation, error = None, ""
        try:
            explanation = explain_slate(
                str(slate.pk), policy=policy if same_version else None
            )
        except GovernanceError as refused:
            error = refused.message
        return render_page(
            request,
            "slate.html",
            {"slate": slate, "explanation": explanation, "error": error},
        )

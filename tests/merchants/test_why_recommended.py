"""A merchant's "why recommended" names none of another merchant's products
in the attributed customer's history, on the page and in the API."""

import json

import pytest
from django.utils.html import escape

from commerce.models import Product
from governance.explanations import (
    OTHER_MERCHANTS_LABEL,
    customer_state,
    explain_score,
)
from rl_engine.serving import live_policy
from tests.factories import MerchantFactory
from tests.merchants.conftest import merchant_account, serve_customers


def history_table(html: str) -> str:
    start = html.index('<table class="figures history-attribution">')
    return html[start : html.index("</table>", start)]


@pytest.mark.django_db
def test_a_merchant_never_reads_another_merchants_products_in_a_basket(
    client, live_version
):
    slate = serve_customers()
    assert slate.customer is not None
    explained = slate.items.get(position=1).product
    policy = live_policy.get().policy
    assert policy is not None
    state = customer_state(policy, slate.customer, slate.created_at)
    assert state is not None
    # Staff see every product of the history by name.
    full = explain_score(policy, state, explained.external_id, top_history=1000)
    named = [part.sku for part in full.history if part.sku != explained.external_id]
    assert len(named) >= 2
    # The merchant owns the explained product and one product of the basket.
    acme = MerchantFactory.create(external_id="acme", name="Acme")
    own_skus = {explained.external_id, named[0]}
    Product.objects.filter(external_id__in=own_skus).update(merchant=acme)
    others = Product.objects.filter(external_id__in=named[1:])
    assert others.exclude(merchant=acme).count() == len(named) - 1
    client.force_login(merchant_account("alice", acme))

    answer = client.get(
        f"/api/v1/merchant/products/{explained.pk}/why-recommended"
    ).json()
    page = client.get(f"/merchants/products/{explained.pk}/").text

    attribution = answer["attribution"]
    assert attribution is not None
    assert {part["sku"] for part in attribution["history"]} <= own_skus
    pooled = attribution["other_merchants"]
    assert pooled["label"] == OTHER_MERCHANTS_LABEL
    assert pooled["contribution"] == pytest.approx(
        pooled["sequence"] + pooled["co_purchase"] + pooled["repeat"], abs=1e-9
    )
    # What the merchant reads still adds up to the attribution sum.
    listed = sum(part["contribution"] for part in attribution["history"])
    assert listed + pooled["contribution"] + attribution["unassigned"] == (
        pytest.approx(attribution["attribution_sum"], abs=1e-9)
    )
    # The pooled part is what the other merchants' products add for staff.
    assert pooled["contribution"] == pytest.approx(
        sum(part.contribution for part in full.history if part.sku not in own_skus),
        abs=1e-6,
    )
    text = json.dumps(attribution)
    table = history_table(page)
    assert "Products of other merchants, together" in table
    for product in others:
        assert product.external_id not in text
        assert product.title not in text
        assert f"<code>{escape(product.external_id)}</code>" not in table
        assert f"<td>{escape(product.title)}</td>" not in table
    # The nearest products by text are the merchant's own: the one other.
    assert [near["sku"] for near in answer["nearest"]] == [named[0]]

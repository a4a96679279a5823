"""A merchant opens a product in a real browser: its charts and why it is
recommended; another merchant's product is refused.

Chromium runs against pytest-django's live server (see ``browser``). The
slates come from the live policy trained on the sample.
"""

import re

from django.db.models import Count

from commerce.models import Product, ServedSlateItem
from tests.e2e.browser import browser_page, expect, log_in, needs_chromium
from tests.factories import MerchantFactory
from tests.merchants.conftest import PASSWORD, merchant_account, serve_customers

pytestmark = needs_chromium


def test_a_merchant_sees_charts_and_explanations_of_their_own_product_only(
    live_server, live_version
):
    serve_customers()
    shown = (
        ServedSlateItem.objects.filter(reason__in=["model", "exploration"])
        .values("product")
        .annotate(times=Count("id"))
        .order_by("-times", "product")
    )
    own_id, others_id = shown[0]["product"], shown[1]["product"]
    acme = MerchantFactory.create(external_id="acme", name="Acme")
    bolt = MerchantFactory.create(external_id="bolt", name="Bolt")
    Product.objects.filter(pk=own_id).update(merchant=acme)
    Product.objects.filter(pk=others_id).update(merchant=bolt)
    # Six more of Acme's, for its product's nearest products by text.
    stock = Product.objects.exclude(pk__in=[own_id, others_id]).order_by("pk")[:6]
    Product.objects.filter(pk__in=[p.pk for p in stock]).update(merchant=acme)
    acme_skus = set(
        Product.objects.filter(merchant=acme).values_list("external_id", flat=True)
    )
    own = Product.objects.get(pk=own_id)
    times_shown = shown[0]["times"]
    merchant_account("alice", acme)
    merchant_account("bob", bolt)

    with browser_page() as page:
        log_in(page, live_server.url, "/merchants/", "alice", PASSWORD)
        expect(page.get_by_role("heading", name="Your products")).to_be_visible()
        rows = page.locator("#products tbody tr")
        expect(rows).to_have_count(7)
        expect(rows.first).to_contain_text(own.external_id)

        rows.get_by_role("link", name=own.external_id).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(own.external_id)
        expect(page.locator("#product-figures")).to_contain_text(f"{times_shown} times")
        expect(
            page.locator("#over-time").get_by_role(
                "img", name=re.compile("^Times shown per day")
            )
        ).to_be_visible()
        expect(
            page.locator("#ranking").get_by_role(
                "img", name=re.compile("^Times shown at each position")
            )
        ).to_be_visible()
        why = page.locator("#why-recommended")
        expect(
            why.get_by_role("img", name=re.compile("^Shown to customers in"))
        ).to_be_visible()
        expect(why).to_contain_text("Score with no history")
        expect(why.locator(".history-attribution tbody tr").first).to_be_visible()
        nearest = why.locator("#nearest tbody tr")
        expect(nearest).to_have_count(5)
        for row in nearest.all():
            assert row.locator("code").first.inner_text() in acme_skus

        refused = page.goto(f"{live_server.url}/merchants/products/{others_id}/")
        assert refused is not None
        assert refused.status == 404
        expect(page.locator("body")).not_to_contain_text("Bolt")

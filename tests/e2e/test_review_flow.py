"""A reviewer suppresses an over-promoted product in a real browser.

Chromium runs against pytest-django's live server (see ``browser``).
"""

import datetime as dt
import json
import re
import urllib.request

from django.contrib.auth.models import Group, User
from django.utils import timezone

from commerce.models import ApiScope, Customer, Product
from commerce.services import create_api_client
from governance.access import REVIEWER_GROUP
from governance.models import (
    AuditRun,
    Decision,
    Override,
    ReviewItem,
    ReviewStatus,
    Severity,
    TargetType,
)
from governance.services import FlagSpec, raise_flags
from tests.e2e.browser import browser_page, expect, log_in, needs_chromium

PASSWORD = "correct horse battery staple"
NOTE = "Two in five sales come back; shown to every visitor regardless."
K = 20

pytestmark = needs_chromium


def recommended(base_url: str, api_key: str, customer: str) -> list[str]:
    """The SKUs that POST /api/v1/recommendations serves the customer."""
    request = urllib.request.Request(
        f"{base_url}/api/v1/recommendations",
        data=json.dumps({"customer": customer, "k": K}).encode(),
        headers={
            "Authorization": f"Api-Key {api_key}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        answer = json.load(response)
    assert {item["reason"] for item in answer["items"]} == {"fallback"}
    return [item["product"] for item in answer["items"]]


def flag_over_promotion(product: Product) -> None:
    end = timezone.now()
    run = AuditRun.objects.create(
        window_start=end - dt.timedelta(days=7), window_end=end, triggered_by="test"
    )
    raise_flags(
        audit_run=run,
        flags=[
            FlagSpec(
                rule="quality.over_promotion",
                severity=Severity.HIGH,
                target_type=TargetType.PRODUCT,
                target_id=str(product.pk),
                summary=f"{product.external_id} is promoted despite its returns",
                evidence={
                    "return_rate": 0.4,
                    "exposure_share": 0.11,
                    "exposure_share_by_country": {
                        "United Kingdom": 0.12,
                        "France": 0.04,
                    },
                },
                thresholds={"return_rate_max": 0.2},
            )
        ],
    )


def test_a_reviewer_suppresses_a_flagged_product_and_serving_obeys(
    live_server, import_file, sample_path, settings
):
    settings.CATALOGUE_CACHE_SECONDS = 0
    import_file(sample_path)
    customer = Customer.objects.order_by("external_id").values_list(
        "external_id", flat=True
    )[0]
    api_key = create_api_client(name="frontend", scopes=[ApiScope.RECOMMENDATIONS]).key
    before = recommended(live_server.url, api_key, customer)
    # The fallback ranks by popularity: the first pick is the most popular.
    sku = before[0]
    product = Product.objects.get(external_id=sku)
    flag_over_promotion(product)
    reviewer = User.objects.create_user("rita", password=PASSWORD)
    reviewer.groups.add(Group.objects.get_or_create(name=REVIEWER_GROUP)[0])

    with browser_page() as page:
        log_in(page, live_server.url, "/governance/", "rita", PASSWORD)
        expect(page.get_by_role("heading", name="Review queue")).to_be_visible()

        page.get_by_role("button", name="Claim next").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(
            f"{sku} is promoted despite its returns"
        )
        claimed = re.search(r"/governance/items/(\d+)/$", page.url)
        assert claimed is not None, page.url
        item_id = claimed.group(1)
        expect(page.locator("#item-status")).to_have_text("Claimed")
        expect(
            page.get_by_role("img", name="exposure_share_by_country")
        ).to_be_visible()

        page.get_by_role("radio", name="Override").check()
        page.get_by_label("Reason", exact=True).select_option("low_quality")
        page.get_by_label("Note", exact=True).fill(NOTE)
        page.get_by_label("Override kind").select_option("suppress")
        page.get_by_label("Statement for merchants").fill("Returned too often.")
        page.get_by_role("button", name="Record decision").click()
        expect(page.locator("#item-status")).to_have_text("Decided")
        expect(page.locator("#item-decision")).to_contain_text("Override")

        after = recommended(live_server.url, api_key, customer)

        page.goto(f"{live_server.url}/governance/log/")
        decided = page.locator("#event-log tbody tr").filter(
            has_text="review_item.decided"
        )
        expect(decided).to_have_count(1)
        expect(decided).to_contain_text(f"review_item:{item_id}")
        expect(decided).to_contain_text("rita")
        expect(decided).to_contain_text(f"low_quality: {NOTE}")
        expect(
            page.locator("#event-log tbody tr").filter(has_text="override.created")
        ).to_have_count(1)

    assert sku in before
    assert sku not in after
    assert len(after) == K
    item = ReviewItem.objects.get(pk=int(item_id))
    assert (item.status, item.decision, item.decided_by) == (
        ReviewStatus.DECIDED,
        Decision.OVERRIDE,
        reviewer,
    )
    override = Override.objects.get(review_item=item)
    assert (override.kind, override.product) == ("suppress", product)

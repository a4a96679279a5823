"""The whole Online Retail file against the figures its README publishes."""

import pytest
from django.db.models import Count

from commerce.models import Customer, EventKind, FeedbackEvent, Product

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

# From data/online-retail/README.md (the data set's own known figures).
PUBLISHED = {
    "rows_read": 541_909,
    "distinct_codes_in_file": 4_070,
    "customers": 4_372,
    "guest_lines": 135_080,
    "cancellation_lines": 9_288,
    "countries": 38,
    "duplicate_lines": 5_268,
}
# What the importer makes of the rest, each line accounted for once:
# 541,909 = 5,268 duplicates + 2,989 non-product + 1,324 adjustments
#           + 523,660 purchases + 8,668 returns.
DERIVED = {
    "bad_rows": 0,
    "non_product_lines": 2_989,
    "adjustment_lines": 1_324,
    "purchase_lines": 523_660,
    "return_lines": 8_668,
    "guest_events": 132_639,
    "products": 3_926,
}


def test_full_file_matches_published_figures_and_reimports_to_no_change(
    import_file, online_retail_path
):
    first = import_file(online_retail_path)

    for name, expected in {**PUBLISHED, **DERIVED}.items():
        assert first.counts[name] == expected, name
    events = dict(
        FeedbackEvent.objects.values_list("kind").annotate(n=Count("id")).order_by()
    )
    assert events == {EventKind.PURCHASE: 523_660, EventKind.RETURN: 8_668}
    assert Customer.objects.count() == 4_372
    assert Customer.objects.values("country").distinct().count() <= 38
    assert Product.objects.count() == 3_926
    assert FeedbackEvent.objects.filter(customer__isnull=True).count() == 132_639

    second = import_file(online_retail_path)

    assert second.counts["events_added"] == 0
    assert second.counts["products_added"] == second.counts["products_updated"] == 0
    assert second.counts["customers_added"] == 0
    assert FeedbackEvent.objects.count() == 532_328
    assert Product.objects.count() == 3_926
    assert Customer.objects.count() == 4_372

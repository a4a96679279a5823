"""The portal's window of days: by default it ends on the merchant's latest
day of activity, so an imported or replayed history is not shown as zeros."""

import datetime as dt

import pytest
from django.utils import timezone

from commerce.models import EventKind, ServedSlate
from merchants.selectors import default_last_day, latest_activity_day
from tests.factories import FeedbackEventFactory, MerchantFactory, ProductFactory
from tests.merchants.test_selectors import serve

pytestmark = pytest.mark.django_db


def at_noon(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(12)))


@pytest.fixture
def history(shops):
    """Acme's slate replayed today as at 2011-12-01 and a purchase on
    2011-12-09; Bolt's click on 2012-03-01."""
    a1, a2 = shops.a_products
    replay = serve(0, [a1, a2])
    ServedSlate.objects.filter(pk=replay.pk).update(
        created_at=timezone.now(),
        context={"as_of": at_noon(dt.date(2011, 12, 1)).isoformat()},
    )
    FeedbackEventFactory.create(
        product=a2, kind=EventKind.PURCHASE, occurred_at=at_noon(dt.date(2011, 12, 9))
    )
    FeedbackEventFactory.create(
        product=shops.b_products[0],
        kind=EventKind.CLICK,
        occurred_at=at_noon(dt.date(2012, 3, 1)),
    )
    return shops


def test_the_default_end_is_the_latest_day_with_slates_or_events(history):
    acme, bolt = history.merchant_a.pk, history.merchant_b.pk
    quiet = MerchantFactory.create()
    ProductFactory.create(merchant=quiet)
    ahead = MerchantFactory.create()
    FeedbackEventFactory.create(
        product=ProductFactory.create(merchant=ahead),
        kind=EventKind.CLICK,
        occurred_at=timezone.now() + dt.timedelta(days=3),
    )

    assert latest_activity_day([acme]) == dt.date(2011, 12, 9)
    assert latest_activity_day([bolt]) == dt.date(2012, 3, 1)
    assert latest_activity_day([acme, bolt]) == dt.date(2012, 3, 1)
    assert latest_activity_day([quiet.pk]) is None
    assert default_last_day([acme]) == dt.date(2011, 12, 9)
    # Nothing yet, or activity dated past today: the window ends today.
    assert default_last_day([quiet.pk]) == timezone.localdate()
    assert default_last_day([ahead.pk]) == timezone.localdate()


def test_a_replayed_slate_counts_on_the_day_it_stands_for(shops):
    serve(0, shops.a_products, as_of_days_ago=400)

    # ``serve`` counts days back from 2011-11-10: the replay is on 2010-10-06.
    assert latest_activity_day([shops.merchant_a.pk]) == dt.date(2010, 10, 6)


def test_the_portal_opens_on_the_latest_activity_and_says_so(client, history):
    client.force_login(history.alice)
    a1, a2 = history.a_products

    opened = client.get("/merchants/")
    asked = client.get("/merchants/", {"until": "2011-12-05", "days": "7"})
    too_long = client.get("/merchants/", {"days": "367"})
    detail = client.get(f"/merchants/products/{a1.pk}/")

    window = opened.context["window"]
    assert (window.first_day, window.last_day) == (
        dt.date(2011, 11, 10),
        dt.date(2011, 12, 9),
    )
    assert (
        "Figures for 2011-11-10 to 2011-12-09, up to the latest day with slates "
        "or customer events for your products"
    ) in opened.text
    figures = {row.product.pk: row.figures for row in opened.context["page"]}
    assert (figures[a1.pk].shown, figures[a2.pk].purchases) == (1, 1)

    window = asked.context["window"]
    assert (window.first_day, window.last_day) == (
        dt.date(2011, 11, 29),
        dt.date(2011, 12, 5),
    )
    assert "Figures for 2011-11-29 to 2011-12-05." in asked.text
    assert asked.context["page"][0].figures.shown == 1

    # Past the 366-day cap the input is refused and the default window shown.
    assert too_long.context["window"] == opened.context["window"]

    assert detail.context["window"] == opened.context["window"]
    assert detail.context["figures"].shown == 1


def test_the_api_defaults_to_the_same_window(client, history):
    client.force_login(history.alice)
    a1 = history.a_products[0]

    listed = client.get("/api/v1/merchant/products")
    asked = client.get("/api/v1/merchant/products", {"until": "2011-11-30"})
    one = client.get(f"/api/v1/merchant/products/{a1.pk}", {"days": "366"})
    too_long = client.get("/api/v1/merchant/products", {"days": "367"})

    assert listed.status_code == 200
    assert listed.json()["window"] == {
        "first_day": "2011-11-10",
        "last_day": "2011-12-09",
    }
    assert {row["sku"]: row["figures"]["shown"] for row in listed.json()["results"]}[
        a1.external_id
    ] == 1
    assert asked.json()["window"] == {
        "first_day": "2011-11-01",
        "last_day": "2011-11-30",
    }
    assert one.json()["window"] == {"first_day": "2010-12-09", "last_day": "2011-12-09"}
    assert len(one.json()["daily"]) == 366
    assert too_long.status_code == 400


@pytest.mark.parametrize("until", ["0001-01-01", "1969-12-31", "9999-12-31"])
def test_a_day_out_of_range_is_refused_by_the_api_and_ignored_by_the_page(
    client, history, until
):
    client.force_login(history.alice)
    a1 = history.a_products[0]

    answer = client.get(f"/api/v1/merchant/products/{a1.pk}", {"until": until})
    page = client.get(f"/merchants/products/{a1.pk}/", {"until": until})
    opened = client.get(f"/merchants/products/{a1.pk}/")

    assert answer.status_code == 400
    assert answer.json()["error"]["details"][0]["field"] == "until"
    assert page.status_code == 200
    assert page.context["window"] == opened.context["window"]

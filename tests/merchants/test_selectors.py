"""The portal's figures on a small world built by hand, worked out exactly."""

import datetime as dt
import math
from dataclasses import fields

import pytest
from django.utils import timezone

from commerce.models import EventKind, Product, ServedSlate, ServedSlateItem
from governance.models import Decision, ReasonCode
from merchants.selectors import (
    DecisionRecord,
    OverrideRecord,
    Window,
    daily_figures,
    merchants_product_figures,
    position_buckets,
    position_counts,
    product_figures,
    product_overrides,
    review_decisions,
)
from tests.factories import FeedbackEventFactory, ProductFactory
from tests.merchants.conftest import INTERNAL_NOTE, decide_with_override

pytestmark = pytest.mark.django_db

TODAY = dt.date(2011, 11, 10)
WINDOW = Window.ending(TODAY, days=7)
SECOND = 1 / math.log2(3)
"""Position weight of the second place."""


def noon(days_ago: int) -> dt.datetime:
    day = TODAY - dt.timedelta(days=days_ago)
    return timezone.make_aware(dt.datetime.combine(day, dt.time(12)))


def serve(
    days_ago: int, products: list[Product], *, as_of_days_ago: int | None = None
) -> ServedSlate:
    """A slate logged ``days_ago``, standing for ``as_of_days_ago`` if a replay."""
    context = (
        {} if as_of_days_ago is None else {"as_of": noon(as_of_days_ago).isoformat()}
    )
    slate = ServedSlate.objects.create(context=context)
    ServedSlate.objects.filter(pk=slate.pk).update(created_at=noon(days_ago))
    for position, product in enumerate(products, start=1):
        ServedSlateItem.objects.create(
            slate=slate,
            product=product,
            position=position,
            score=1.0 / position,
            propensity=1.0,
            reason="model",
        )
    return slate


def events(product: Product, kind: str, days_ago: int, count: int = 1) -> None:
    for _ in range(count):
        FeedbackEventFactory.create(
            product=product, kind=kind, occurred_at=noon(days_ago)
        )


@pytest.fixture
def world(shops):
    """Acme's a1 and a2 (and a3, never shown or bought); Bolt's b1.

    Inside the 7-day window: a1 shown 1st today, 3rd yesterday, and 2nd in a
    replay logged long ago for two days ago; a2 shown 2nd today and 1st
    yesterday. Outside: a1 1st ten days ago, a2 1st in a replay logged today
    for twenty days ago.
    """
    a1, a2 = shops.a_products
    a3 = ProductFactory.create(merchant=shops.merchant_a)
    b1 = shops.b_products[0]
    filler = ProductFactory.create(merchant=shops.merchant_b)
    serve(0, [a1, a2, b1])
    serve(1, [a2, filler, a1])
    serve(40, [filler, a1], as_of_days_ago=2)
    serve(10, [a1])
    serve(0, [a2], as_of_days_ago=20)

    events(a1, EventKind.CLICK, 0, 2)
    events(a1, EventKind.PURCHASE, 0, 3)
    events(a1, EventKind.RETURN, 1)
    events(a1, EventKind.PURCHASE, 10)
    events(a1, EventKind.IMPRESSION, 0)
    events(a2, EventKind.PURCHASE, 1)
    events(a2, EventKind.CLICK, 2)
    events(b1, EventKind.PURCHASE, 0, 5)
    return {"a1": a1, "a2": a2, "a3": a3, "b1": b1, "shops": shops}


def test_a_window_counts_whole_days_in_the_site_zone():
    assert WINDOW.first_day == dt.date(2011, 11, 4)
    assert WINDOW.since == timezone.make_aware(dt.datetime(2011, 11, 4))
    assert WINDOW.until == timezone.make_aware(dt.datetime(2011, 11, 11))
    assert len(WINDOW.days()) == 7


def test_product_figures_count_the_window_and_share_within_the_merchant(world):
    a1, a2, a3 = world["a1"], world["a2"], world["a3"]
    acme = Product.objects.filter(merchant=world["shops"].merchant_a)

    figures = product_figures(acme, WINDOW)

    assert set(figures) == {a1.pk, a2.pk, a3.pk}
    first = figures[a1.pk]
    assert (first.shown, first.clicks, first.purchases, first.returns) == (3, 2, 3, 1)
    assert first.exposure == pytest.approx(1 + 0.5 + SECOND)
    assert first.return_rate == pytest.approx(1 / 3)
    second = figures[a2.pk]
    assert (second.shown, second.clicks, second.purchases, second.returns) == (
        2,
        1,
        1,
        0,
    )
    assert second.exposure == pytest.approx(SECOND + 1)
    assert second.return_rate == 0.0
    total = 1 + 0.5 + 2 * SECOND + 1
    assert first.exposure_share == pytest.approx((1.5 + SECOND) / total)
    assert second.exposure_share == pytest.approx((1 + SECOND) / total)
    assert (first.sales_share, second.sales_share) == (0.75, 0.25)
    never = figures[a3.pk]
    assert (never.shown, never.exposure, never.purchases) == (0, 0.0, 0)
    assert never.return_rate is None
    assert (never.exposure_share, never.sales_share) == (0.0, 0.0)


def test_each_merchant_shares_only_among_its_own_products(world):
    shops = world["shops"]

    figures = merchants_product_figures([shops.merchant_b.pk], WINDOW)

    bolt = set(
        Product.objects.filter(merchant=shops.merchant_b).values_list("id", flat=True)
    )
    assert set(figures) == bolt
    b1 = figures[world["b1"].pk]
    assert (b1.shown, b1.purchases, b1.sales_share) == (1, 5, 1.0)
    # b1 (3rd today) and the filler (2nd yesterday, 1st in the replay).
    assert b1.exposure_share == pytest.approx(0.5 / (0.5 + SECOND + 1))


def test_daily_figures_fill_every_day_of_the_window(world):
    days = daily_figures(world["a1"], WINDOW)

    assert [day.day for day in days] == WINDOW.days()
    by_day = {day.day: day for day in days}
    today, yesterday, two_ago = (
        by_day[TODAY],
        by_day[TODAY - dt.timedelta(days=1)],
        by_day[TODAY - dt.timedelta(days=2)],
    )
    assert (today.shown, today.exposure, today.clicks, today.purchases) == (
        1,
        1.0,
        2,
        3,
    )
    assert (yesterday.shown, yesterday.exposure, yesterday.returns) == (1, 0.5, 1)
    assert (two_ago.shown, two_ago.exposure) == (1, pytest.approx(SECOND))
    assert sum(day.shown for day in days) == 3
    assert all(day.shown == 0 for day in days[:4])


def test_positions_are_counted_and_bucketed(world):
    counts = position_counts(world["a1"], WINDOW)

    assert counts == {1: 1, 2: 1, 3: 1}
    assert position_buckets({1: 4, 3: 2, 4: 1, 5: 1, 12: 3, 60: 1}) == [
        ("1", 4),
        ("2", 0),
        ("3", 2),
        ("4-5", 2),
        ("6-10", 0),
        ("11-20", 3),
        ("21-50", 0),
        ("51+", 1),
    ]


def test_decisions_show_reasons_and_statements_but_no_note_or_reviewer(world):
    shops = world["shops"]
    a1, b1 = world["a1"], world["b1"]
    decided = decide_with_override(a1, shops.rita, statement="Returned too often.")
    decide_with_override(b1, shops.rita, statement="Bolt's own statement.")
    dismissed = decide_with_override(
        world["a2"],
        shops.rita,
        statement="",
        decision=Decision.DISMISS,
        reason_code=ReasonCode.FALSE_POSITIVE,
    )
    acme = Product.objects.filter(merchant=shops.merchant_a)

    overrides = product_overrides(acme)
    decisions = review_decisions(acme)

    assert [(o.product_id, o.kind, o.state, o.statement) for o in overrides] == [
        (a1.pk, "suppress", "in force", "Returned too often.")
    ]
    assert overrides[0].reason == "Poor quality signals (returns, ratings)"
    assert overrides[0].from_review
    assert [(d.review_item_id, d.decision, d.reason_code) for d in decisions] == [
        (dismissed.pk, "dismiss", "false_positive"),
        (decided.pk, "override", "low_quality"),
    ]
    assert decisions[1].statements == ["Returned too often."]
    assert decisions[0].statements == []
    # Nothing that names the reviewer or carries the note can reach a merchant.
    names = {f.name for f in fields(DecisionRecord)} | {
        f.name for f in fields(OverrideRecord)
    }
    assert not names & {"note", "decided_by", "assignee", "created_by", "revoked_by"}
    assert INTERNAL_NOTE not in repr(overrides) + repr(decisions)
    assert shops.rita.username not in repr(overrides) + repr(decisions)


def test_an_order_line_reported_by_the_import_and_the_api_counts_once(shops):
    product = shops.a_products[0]
    for source in ("online-retail", "shop-frontend"):
        FeedbackEventFactory.create(
            product=product,
            order_id="581000",
            occurred_at=noon(1),
            source=source,
            client_event_id="line-1",
        )
    # The product twice in another order counts as one line, as the audits
    # count it; clicks carry no order and count one by one.
    for _ in range(2):
        FeedbackEventFactory.create(
            product=product, order_id="581001", occurred_at=noon(1)
        )
    events(product, EventKind.CLICK, 1, count=2)
    one = Product.objects.filter(pk=product.pk)

    figures = product_figures(one, WINDOW)[product.pk]
    day = next(d for d in daily_figures(product, WINDOW) if d.day == noon(1).date())

    assert (figures.purchases, figures.clicks) == (2, 2)
    assert (day.purchases, day.clicks) == (2, 2)

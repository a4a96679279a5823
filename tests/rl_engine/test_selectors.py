"""Reads of the stored log that training relies on."""

import datetime as dt

import pytest

from commerce.models import EventKind
from rl_engine.selectors import purchase_lines, returned_items
from rl_engine.services import load_basket_log
from tests.factories import CustomerFactory, FeedbackEventFactory, ProductFactory

pytestmark = pytest.mark.django_db


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2011, 1, day, hour, tzinfo=dt.UTC)


def test_returns_are_charged_to_the_latest_basket_holding_the_product():
    customer = CustomerFactory.create()
    lamp, vase, rug = ProductFactory.create_batch(3)
    for order, day, products in (("1", 1, [lamp, vase]), ("2", 5, [lamp])):
        for product in products:
            FeedbackEventFactory.create(
                customer=customer,
                product=product,
                order_id=order,
                occurred_at=at(day),
                value=5,
            )
    for product, day in ((lamp, 6), (vase, 3), (rug, 6), (lamp, 1)):
        FeedbackEventFactory.create(
            customer=customer,
            product=product,
            kind=EventKind.RETURN,
            occurred_at=at(day, 18),
        )

    log = load_basket_log()
    marks = returned_items(log).toarray()

    first, second = (list(log.basket_ids).index(order) for order in ("1", "2"))
    lamp_column, vase_column = log.vocabulary.index_of(
        [lamp.external_id, vase.external_id]
    )
    # Lamp returned on the 6th: basket 2. Vase on the 3rd: basket 1. Lamp on
    # the 1st at 18:00: basket 1. The rug was never bought.
    assert marks[second, lamp_column] == 1
    assert marks[first, vase_column] == 1
    assert marks[first, lamp_column] == 1
    assert marks.sum() == 3


def test_purchase_lines_use_the_shops_local_time_and_skip_free_lines():
    customer = CustomerFactory.create()
    product = ProductFactory.create()
    summer = dt.datetime(2011, 7, 1, 9, 30, tzinfo=dt.UTC)
    FeedbackEventFactory.create(
        customer=customer, product=product, order_id="7", occurred_at=summer, value=3
    )
    FeedbackEventFactory.create(
        customer=customer, product=product, order_id="8", value=0
    )

    lines = purchase_lines()

    assert list(lines["basket"]) == ["7"]
    assert str(lines["occurred_at"].iloc[0]) == "2011-07-01 10:30:00"

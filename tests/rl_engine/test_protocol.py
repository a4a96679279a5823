import numpy as np
import pandas as pd
import pytest

from rl_engine.core.protocol import (
    BasketLog,
    SplitBoundaries,
    build_baskets,
    build_cases,
    purchase_lines,
    read_online_retail,
    recent_popularity,
    tiebreak_order,
)
from tests.conftest import ONLINE_RETAIL

RAW_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]


def raw_frame(rows: list[tuple[str, str, str, str, str, str]]) -> pd.DataFrame:
    """Build raw lines from (invoice, code, quantity, date, price, customer)."""
    return pd.DataFrame(
        [
            (invoice, code, "", quantity, date, price, customer, "United Kingdom")
            for invoice, code, quantity, date, price, customer in rows
        ],
        columns=RAW_COLUMNS,
    )


def purchase_frame(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """Build canonical purchase lines from (customer, invoice, item, time) rows."""
    return pd.DataFrame(
        {
            "customer": [customer for customer, _, _, _ in rows],
            "basket": [invoice for _, invoice, _, _ in rows],
            "item": [item for _, _, item, _ in rows],
            "occurred_at": pd.to_datetime([moment for _, _, _, moment in rows]),
        }
    )


@pytest.fixture(scope="module")
def online_retail_lines() -> pd.DataFrame:
    return purchase_lines(read_online_retail(ONLINE_RETAIL))


@pytest.fixture(scope="module")
def online_retail_log(online_retail_lines: pd.DataFrame) -> BasketLog:
    return build_baskets(online_retail_lines)


@pytest.fixture
def small_log() -> BasketLog:
    """Customer A buys before, during and twice at one moment in test; B once."""
    return build_baskets(
        purchase_frame(
            [
                ("A", "1", "X", "2011-09-01 10:00"),
                ("A", "1", "Y", "2011-09-01 10:00"),
                ("A", "2", "Y", "2011-10-15 10:00"),
                ("A", "2", "Z", "2011-10-15 10:00"),
                ("A", "3", "X", "2011-11-05 10:00"),
                ("A", "3", "Z", "2011-11-05 10:05"),
                ("A", "3", "W", "2011-11-05 10:00"),
                ("A", "4", "Y", "2011-11-05 10:00"),
                ("A", "5", "V", "2011-11-20 09:00"),
                ("A", "5", "X", "2011-11-20 09:00"),
                ("A", "5", "X", "2011-11-20 09:00"),
                ("B", "6", "X", "2011-11-10 12:00"),
                ("B", "7", "X", "2011-11-11 12:00"),
                ("B", "7", "Y", "2011-11-11 12:00"),
            ]
        )
    )


def test_purchase_filter_keeps_only_product_purchases() -> None:
    raw = raw_frame(
        [
            ("536365", " 85123a ", "6", "2010-12-01 08:26:00", "2.55", "17850.0"),
            ("536365", "post", "1", "2010-12-01 08:26:00", "18.00", "17850.0"),
            ("536365", "POSTAGE", "1", "2010-12-01 08:26:00", "1.00", "17850.0"),
            ("536365", "BANK CHARGES", "1", "2010-12-01 08:26:00", "15.00", "17850.0"),
            ("536365", "gift_0001_10", "1", "2010-12-01 08:26:00", "8.50", "17850.0"),
            ("536365", "DCGSSBOY", "1", "2010-12-01 08:26:00", "3.30", "17850.0"),
            ("C536379", "22423", "-1", "2010-12-01 09:41:00", "12.75", "14527.0"),
            ("536380", "22423", "0", "2010-12-01 09:41:00", "12.75", "14527.0"),
            ("536381", "22423", "2", "2010-12-01 09:41:00", "0", "14527.0"),
            ("536382", "22423", "2", "2010-12-01 09:41:00", "12.75", ""),
            ("536383", "22423", "2", "2010-12-01 09:45:00", "12.75", "14527.0"),
        ]
    )

    lines = purchase_lines(raw)

    assert list(lines.columns) == ["customer", "item", "basket", "occurred_at"]
    assert lines["item"].tolist() == ["85123A", "POSTAGE", "22423"]
    assert lines["basket"].tolist() == ["536365", "536365", "536383"]
    assert lines["customer"].tolist() == ["17850.0", "17850.0", "14527.0"]
    assert lines["occurred_at"].iloc[2] == pd.Timestamp("2010-12-01 09:45:00")


def test_purchase_filter_counts_on_online_retail(
    online_retail_lines: pd.DataFrame,
) -> None:
    assert len(online_retail_lines) == 396_337
    assert online_retail_lines["customer"].nunique() == 4_334
    assert online_retail_lines["item"].nunique() == 3_659


def test_baskets_and_periods_on_online_retail(online_retail_log: BasketLog) -> None:
    boundaries = SplitBoundaries()
    per_period = [
        int(boundaries.period(name).contains(online_retail_log.times).sum())
        for name in ("train", "validation", "test")
    ]

    assert online_retail_log.n_baskets == 18_402
    assert online_retail_log.n_items == 3_659
    assert per_period == [13_081, 1_903, 3_418]


def test_test_cases_on_online_retail(online_retail_log: BasketLog) -> None:
    test = SplitBoundaries().period("test")

    all_items = build_cases(online_retail_log, test, "all")
    new_items = build_cases(online_retail_log, test, "new")

    assert all_items.n_cases == 3_053
    assert new_items.n_cases == 2_567
    assert new_items.excluded is not None
    assert new_items.targets.multiply(new_items.excluded).nnz == 0


def test_baskets_are_distinct_items_at_earliest_time(small_log: BasketLog) -> None:
    row = int(np.flatnonzero(small_log.basket_ids == "3")[0])
    items = small_log.vocabulary.id_of(small_log.items[[row]].indices)

    assert small_log.basket_ids.tolist() == ["1", "2", "3", "4", "6", "7", "5"]
    assert sorted(items.tolist()) == ["W", "X", "Z"]
    assert small_log.times[row] == np.datetime64("2011-11-05T10:00")
    assert small_log.items.sum() == 13
    assert small_log.vocabulary.ids.tolist() == ["V", "W", "X", "Y", "Z"]
    assert small_log.vocabulary.index_of(["Z", "V"]).tolist() == [4, 0]
    with pytest.raises(KeyError):
        small_log.vocabulary.index_of(["Q"])


def test_baskets_reject_an_invoice_of_two_customers() -> None:
    lines = purchase_frame(
        [("A", "1", "X", "2011-01-01 10:00"), ("B", "1", "Y", "2011-01-01 10:00")]
    )

    with pytest.raises(ValueError, match="several customers"):
        build_baskets(lines)


def test_cases_need_a_strictly_earlier_basket(small_log: BasketLog) -> None:
    cases = build_cases(small_log, SplitBoundaries().period("test"), "all")

    assert small_log.basket_ids[cases.baskets].tolist() == ["3", "4", "7", "5"]
    # Basket 4 shares basket 3's moment, so neither is in the other's history.
    assert cases.history_length.tolist() == [2, 2, 1, 4]
    assert small_log.basket_ids[cases.history[[3]].indices].tolist() == [
        "1",
        "2",
        "3",
        "4",
    ]


def test_case_purchase_history(small_log: BasketLog) -> None:
    cases = build_cases(small_log, SplitBoundaries().period("test"), "all")
    x, y, z, w = small_log.vocabulary.index_of(["X", "Y", "Z", "W"])
    counts = cases.purchase_counts.toarray()
    last = cases.last_purchase.toarray()

    assert counts[3, [x, y, z, w]].tolist() == [2, 3, 2, 1]
    assert last[3, [x, y, z, w]].tolist() == [3, 4, 3, 3]
    assert cases.recent_item_counts(2).toarray()[3, [x, y, z, w]].tolist() == [
        1,
        1,
        1,
        1,
    ]
    assert cases.recent_item_counts(3).toarray()[3, [x, y, z, w]].tolist() == [
        1,
        2,
        2,
        1,
    ]


def test_new_item_cases_skip_baskets_without_new_items(small_log: BasketLog) -> None:
    cases = build_cases(small_log, SplitBoundaries().period("test"), "new")
    assert cases.excluded is not None
    targets = [
        small_log.vocabulary.id_of(cases.targets[[row]].indices).tolist()
        for row in range(cases.n_cases)
    ]
    excluded = [
        small_log.vocabulary.id_of(cases.excluded[[row]].indices).tolist()
        for row in range(cases.n_cases)
    ]

    assert small_log.basket_ids[cases.baskets].tolist() == ["3", "7", "5"]
    assert targets == [["W"], ["Y"], ["V"]]
    assert excluded == [["X", "Y", "Z"], ["X"], ["W", "X", "Y", "Z"]]


def test_popularity_window_is_thirty_days_before_the_start() -> None:
    log = build_baskets(
        purchase_frame(
            [
                ("A", "1", "X", "2011-10-01 23:59"),
                ("A", "2", "Y", "2011-10-02 00:00"),
                ("A", "3", "Y", "2011-10-31 23:59"),
                ("A", "4", "Z", "2011-10-31 23:59"),
                ("A", "5", "Z", "2011-11-01 00:00"),
            ]
        )
    )

    popularity = recent_popularity(log, np.datetime64("2011-11-01"))

    assert popularity.tolist() == [0, 2, 1]
    assert tiebreak_order(popularity).tolist() == [1, 2, 0]
    assert tiebreak_order(np.array([1, 0, 1, 0])).tolist() == [0, 2, 1, 3]

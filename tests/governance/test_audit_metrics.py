"""The audits' metrics against hand-worked values, without a database."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from governance.audits.anomalies import (
    audit_anomalies,
    bot_signals,
    find_bursts,
    purchase_returns,
    robust_z,
)
from governance.audits.exposure import audit_exposure, gini, position_weight
from governance.audits.fairness import OTHER, audit_fairness
from governance.audits.log import AuditLog
from governance.audits.quality import audit_quality, quality_signals
from governance.audits.thresholds import AuditThresholds

THRESHOLDS = AuditThresholds()
W2 = 1 / math.log2(3)
"""The exposure of position 2."""
HOUR = 3600
T0 = 1_700_000_000 // HOUR * HOUR


# Exposure.


def test_position_weight_is_one_over_log2_of_one_plus_the_position():
    assert position_weight([1, 2, 3, 4]) == pytest.approx(
        [1, W2, 0.5, 1 / math.log2(5)]
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 1, 1, 1], 0.0),
        ([0, 0, 0, 1], 0.75),  # (3 * 1) / (4 * 1)
        ([1, 3], 0.25),  # (-1 * 1 + 1 * 3) / (2 * 4)
        ([5], 0.0),
        ([0, 0], None),
        ([], None),
    ],
)
def test_gini(values, expected):
    assert gini(np.array(values)) == (
        None if expected is None else pytest.approx(expected)
    )


def exposure_log() -> AuditLog:
    """Two slates over a catalogue of four eligible products and one retired.

    slate 0 shows products 1, 2, 3; slate 1 shows 1 and 3. Product 1 sold
    once, product 4 (never shown) three times. Products 1 and 2 belong to
    merchant 10, products 3, 4 and 5 to merchant 20.
    """
    return AuditLog.build(
        slates=[{"slate": 0, "customer_id": 1}, {"slate": 1, "customer_id": 2}],
        slate_items=[
            {"slate": 0, "product_id": 1, "position": 1},
            {"slate": 0, "product_id": 2, "position": 2},
            {"slate": 0, "product_id": 3, "position": 3},
            {"slate": 1, "product_id": 1, "position": 1},
            {"slate": 1, "product_id": 3, "position": 2},
        ],
        events=[
            {"kind": "purchase", "product_id": 1, "customer_id": 1, "occurred_at": T0},
            *(
                {
                    "kind": "purchase",
                    "product_id": 4,
                    "customer_id": 2,
                    "order_id": f"o{n}",
                    "occurred_at": T0,
                }
                for n in range(3)
            ),
        ],
        products=[
            {"product_id": 1, "merchant_id": 10, "eligible": True},
            {"product_id": 2, "merchant_id": 10, "eligible": True},
            {"product_id": 3, "merchant_id": 20, "eligible": True},
            {"product_id": 4, "merchant_id": 20, "eligible": True},
            {"product_id": 5, "merchant_id": 20, "eligible": False},
        ],
    )


def test_exposure_metrics_match_hand_worked_values():
    result = audit_exposure(exposure_log(), THRESHOLDS)
    m = result.metrics

    # Exposure: product 1 gets 1 + 1, product 2 gets W2, product 3 0.5 + W2.
    total = 2.5 + 2 * W2
    assert m["total_exposure"] == pytest.approx(total)
    assert m["products_shown"] == 3
    # Product 5 is neither eligible nor shown: the catalogue is products 1-4.
    assert m["catalogue_size"] == 4
    assert m["coverage"] == 0.75
    # Ascending 0, W2, 0.5 + W2, 2 weighted -3, -1, 1, 3.
    assert m["gini"] == pytest.approx(6.5 / (4 * total), abs=1e-6)
    # Shown products' orders 1, 0, 0, 1, 0; catalogue orders 1, 0, 0, 3.
    assert m["avg_recommended_popularity"] == 0.4
    assert m["catalogue_mean_popularity"] == 1.0
    assert m["popularity_lift"] == 0.4
    # Product 4 has 3/4 of the orders and none of the exposure; product 1
    # has 1/4 of the orders and more than that of exposure: half of
    # (e1 - 1/4) + e2 + e3 + 3/4 = half of (1 - 1/4 + 3/4).
    assert m["exposure_merit_gap"] == 0.75
    top = {row["product_id"]: row for row in m["top_products"]}
    assert top[1]["exposure_share"] == pytest.approx(2 / total, abs=1e-6)
    assert top[4]["merit_share"] == 0.75


def test_a_merchant_shown_far_below_its_sales_is_flagged():
    result = audit_exposure(exposure_log(), THRESHOLDS)

    merchants = {row["merchant_id"]: row for row in result.metrics["top_merchants"]}
    total = 2.5 + 2 * W2
    assert merchants[20]["exposure_share"] == pytest.approx((0.5 + W2) / total, 1e-5)
    assert merchants[20]["merit_share"] == 0.75
    # Merchant 20: 30% of exposure for 75% of sales, a ratio of 0.40.
    [finding] = result.findings
    assert (finding.rule, finding.target_type, finding.target_id) == (
        "exposure.merchant_under_exposed",
        "merchant",
        "20",
    )
    assert finding.severity == "medium"
    assert finding.evidence["exposure_merit_ratio"] == pytest.approx(
        (0.5 + W2) / total / 0.75, abs=1e-5
    )


def test_exposure_of_an_empty_window_is_undefined_not_an_error():
    result = audit_exposure(
        AuditLog.build(
            products=[{"product_id": 1, "merchant_id": 1, "eligible": True}]
        ),
        THRESHOLDS,
    )

    assert result.metrics["coverage"] == 0.0
    assert result.metrics["gini"] is None
    assert result.metrics["avg_recommended_popularity"] is None
    assert result.metrics["exposure_merit_gap"] is None
    assert result.findings == []


# Fairness.


def fairness_log(
    slates: Sequence[tuple[int | None, int, int]], groups: dict[int, str]
) -> AuditLog:
    """Slates of ten impressions each, given as (customer, clicks, purchases)."""
    events = []
    for slate, (customer, clicks, purchases) in enumerate(slates):
        for position in range(1, 11):
            for kind, count in (
                ("impression", 10),
                ("click", clicks),
                ("purchase", purchases),
            ):
                if position <= count:
                    events.append(
                        {
                            "kind": kind,
                            "customer_id": customer,
                            "product_id": position,
                            "slate": slate,
                            "slate_position": position,
                            "occurred_at": T0,
                        }
                    )
    return AuditLog.build(
        slates=[
            {"slate": slate, "customer_id": customer}
            for slate, (customer, _, _) in enumerate(slates)
        ],
        events=events,
        customer_groups=[
            {"customer_id": customer, "attribute": "country", "value": value}
            for customer, value in groups.items()
        ],
    )


def test_fairness_compares_groups_with_fairlearn():
    # 40 UK slates with 2 clicks and 1 purchase each; 40 French with 1 click
    # and no purchase.
    log = fairness_log(
        [(1, 2, 1)] * 40 + [(2, 1, 0)] * 40, {1: "United Kingdom", 2: "France"}
    )

    result = audit_fairness(log, THRESHOLDS)

    country = result.metrics["attributes"]["country"]
    assert country["groups"]["United Kingdom"] == {
        "impressions": 400,
        "clicks": 80,
        "purchases": 40,
        "hits": 40,
        "slates": 40,
        "ctr": 0.2,
        "conversion": 0.1,
        "hit_rate": 1.0,
    }
    assert country["groups"]["France"]["ctr"] == 0.1
    assert country["ctr"]["difference"] == 0.1
    assert country["ctr"]["ratio"] == 0.5
    assert (country["ctr"]["best_group"], country["ctr"]["worst_group"]) == (
        "United Kingdom",
        "France",
    )
    # France has no purchase at all: a ratio of 0, not an error.
    assert country["conversion"]["ratio"] == 0.0
    assert country["hit_rate"]["difference"] == 1.0
    [finding] = result.findings
    assert (finding.rule, finding.target_id) == ("fairness.ratio", "country=France")
    assert finding.severity == "high"
    assert set(finding.evidence["metrics"]) == {"ctr", "conversion", "hit_rate"}


def test_a_single_group_has_no_difference_or_ratio():
    log = fairness_log([(1, 2, 1)] * 40, {1: "United Kingdom"})

    country = audit_fairness(log, THRESHOLDS).metrics["attributes"]["country"]

    assert list(country["groups"]) == ["United Kingdom"]
    for name in ("ctr", "conversion", "hit_rate"):
        assert country[name]["difference"] is None
        assert country[name]["ratio"] is None
        assert country[name]["note"] == "fewer than two groups"


def test_no_positives_in_any_group_is_no_disparity():
    log = fairness_log(
        [(1, 2, 0)] * 40 + [(2, 2, 0)] * 40, {1: "United Kingdom", 2: "France"}
    )

    result = audit_fairness(log, THRESHOLDS)

    conversion = result.metrics["attributes"]["country"]["conversion"]
    assert conversion["difference"] == 0.0
    assert conversion["ratio"] is None
    assert conversion["note"] == "no positives in any group"
    assert result.findings == []


def test_slates_without_a_group_value_are_left_out_and_counted():
    # Anonymous slates (no customer) and a customer with no country.
    log = fairness_log(
        [(1, 2, 1)] * 40 + [(2, 2, 1)] * 40 + [(None, 0, 0)] * 7 + [(3, 0, 0)] * 5,
        {1: "United Kingdom", 2: "France"},
    )

    country = audit_fairness(log, THRESHOLDS).metrics["attributes"]["country"]

    assert country["missing_slates"] == 12
    assert sum(group["slates"] for group in country["groups"].values()) == 80
    assert country["ctr"]["ratio"] == 1.0


def test_small_groups_are_pooled_and_small_gaps_are_not_flagged():
    # Germany (5 slates) and Japan (3) are pooled into one group of 80
    # impressions which, at the UK's click-through of 0.2, would expect 16
    # clicks: enough for its gap to count.
    log = fairness_log(
        [(1, 2, 1)] * 40 + [(2, 0, 0)] * 5 + [(3, 0, 0)] * 3,
        {1: "United Kingdom", 2: "Germany", 3: "Japan"},
    )

    result = audit_fairness(log, THRESHOLDS)

    country = result.metrics["attributes"]["country"]
    assert set(country["groups"]) == {"United Kingdom", OTHER}
    assert country["pooled_values"] == 2
    assert country["ctr"]["worst_group_expected_positives"] == 16.0
    assert [f.target_id for f in result.findings] == [f"country={OTHER}"]


def test_a_gap_the_worst_group_is_too_small_to_show_is_not_flagged():
    # France's 3 slates (30 impressions) would expect 6 clicks, 3 purchases
    # and 3 hits at the UK's rates: only the click-through gap counts.
    log = fairness_log(
        [(1, 2, 1)] * 40 + [(2, 0, 0)] * 3, {1: "United Kingdom", 2: "France"}
    )

    result = audit_fairness(log, AuditThresholds(fairness_min_group_slates=1))

    country = result.metrics["attributes"]["country"]
    assert country["conversion"]["ratio"] == 0.0
    assert country["conversion"]["worst_group_expected_positives"] == 3.0
    [finding] = result.findings
    assert list(finding.evidence["metrics"]) == ["ctr"]


# Anomalies.


def test_robust_z_uses_the_mad_and_falls_back_when_it_is_zero():
    z = robust_z(np.array([[1, 2, 3, 4, 100], [0, 0, 0, 0, 10], [5, 5, 5, 5, 5]]))

    # Median 3, deviations 2, 1, 0, 1, 97: MAD 1.
    assert z[0, 4] == pytest.approx(97 / 1.4826)
    # Median 0 and MAD 0: mean absolute deviation 2, scale 1.2533 x 2.
    assert z[1, 4] == pytest.approx(10 / (1.2533 * 2))
    assert z[1, 0] == 0
    # No deviation at all: nothing stands out.
    assert (z[2] == 0).all()


def click_events(product: int, counts: list[int], customer: int | None = None):
    """``counts[h]`` clicks on ``product`` in hour ``h`` after T0."""
    return [
        {
            "kind": "click",
            "product_id": product,
            "customer_id": customer,
            "occurred_at": T0 + hour * HOUR + n,
        }
        for hour, count in enumerate(counts)
        for n in range(count)
    ]


def test_a_burst_of_clicks_on_one_product_is_found():
    background = [3, 4, 2, 3, 5, 3, 4, 2, 3, 3, 4, 3] * 2
    burst = [*background[:10], 200, *background[11:]]
    events = [*click_events(1, background), *click_events(2, burst)]
    log = AuditLog.build(events=events)

    bursts, checked = find_bursts(log, "product_id", THRESHOLDS)

    assert checked["series"] == 2
    assert checked["candidates"] == 1
    assert bursts[["product_id", "kind", "count"]].values.tolist() == [
        [2, "click", 200]
    ]
    assert bursts["bucket_start"].tolist() == [T0 + 10 * HOUR]
    # Median 3; absolute deviations twelve 0s, nine 1s, two 2s and 197, so
    # the MAD is 0.5.
    assert bursts["z"].iloc[0] == pytest.approx(197 / (1.4826 * 0.5))


def test_a_quiet_product_with_a_few_clicks_in_one_hour_is_not_a_burst():
    # With nothing else the z-score is high, but 15 clicks are fewer than
    # burst_min_events.
    log = AuditLog.build(events=click_events(1, [0] * 10 + [15] + [0] * 13))

    bursts, _ = find_bursts(log, "product_id", THRESHOLDS)

    assert bursts.empty


def test_bot_signals_count_clicks_on_products_never_shown():
    events = [
        {"kind": "impression", "customer_id": 1, "product_id": 1, "occurred_at": T0},
        {"kind": "click", "customer_id": 1, "product_id": 1, "occurred_at": T0 + 10},
        # Never shown to customer 1 (shown to customer 2).
        {"kind": "impression", "customer_id": 2, "product_id": 2, "occurred_at": T0},
        {"kind": "click", "customer_id": 1, "product_id": 2, "occurred_at": T0 + 20},
        # Shown only after the click.
        {"kind": "click", "customer_id": 1, "product_id": 3, "occurred_at": T0 + 30},
        {
            "kind": "impression",
            "customer_id": 1,
            "product_id": 3,
            "occurred_at": T0 + 40,
        },
        # Another hour.
        {"kind": "click", "customer_id": 1, "product_id": 1, "occurred_at": T0 + HOUR},
    ]

    signals = bot_signals(AuditLog.build(events=events).events)

    assert signals.loc[1].to_dict() == {
        "clicks": 4,
        "unmatched_clicks": 2,
        "unmatched_share": 0.5,
        "peak_clicks_per_hour": 3,
    }


def test_purchase_then_return_counts_returns_after_the_purchase():
    def event(kind, product, at):
        return {
            "kind": kind,
            "customer_id": 7,
            "product_id": product,
            "occurred_at": at,
        }

    events = [
        *(event("purchase", product, T0) for product in (1, 2, 3, 4, 5, 6)),
        event("return", 1, T0 + 10),
        event("return", 2, T0 + 20),
        event("return", 3, T0 + 30),
        event("return", 4, T0 + 40),
        # Returned before it was bought in the window: an earlier purchase.
        event("return", 9, T0 - 10),
    ]
    log = AuditLog.build(events=events)

    per_customer = purchase_returns(log.events)

    assert per_customer.loc[7].to_dict() == {
        "purchased_products": 6,
        "returned_products": 4,
        "returned_share": pytest.approx(4 / 6),
    }
    [finding] = audit_anomalies(log, THRESHOLDS).findings
    assert (finding.rule, finding.target_id) == ("anomaly.purchase_return", "7")
    # Without the shop's id in the log, the summary says it is a database id.
    assert finding.summary.startswith("Customer #7 returned 4 of 6 products")

    named = AuditLog.build(
        events=events, customers=[{"customer_id": 7, "external_id": "17838"}]
    )

    [finding] = audit_anomalies(named, THRESHOLDS).findings
    assert finding.target_id == "7"
    assert finding.summary == "Customer 17838 returned 4 of 6 products they bought"


def test_a_bot_is_flagged_once_with_its_signs():
    # 150 clicks in the second hour of a day with no other event.
    log = AuditLog.build(
        events=click_events(5, [0, 150], customer=42), window=(T0, T0 + 24 * HOUR)
    )

    result = audit_anomalies(log, THRESHOLDS)

    rules = sorted((f.rule, f.target_type, f.target_id) for f in result.findings)
    assert rules == [
        ("anomaly.bot", "customer", "42"),
        ("anomaly.burst", "customer", "42"),
        ("anomaly.burst", "product", "5"),
    ]
    bot = next(f for f in result.findings if f.rule == "anomaly.bot")
    assert bot.severity == "high"
    assert bot.summary.startswith("Customer #42 acts like a bot")
    assert bot.evidence["peak_clicks_per_hour"] == 150
    assert result.metrics["bots"]["unmatched_click_share"] == 1.0


def test_the_flags_of_a_rule_are_capped_strongest_first():
    events = [
        event
        for product in range(1, 6)
        for event in click_events(product, [0, 0, 0, 20 * product, 0])
    ]
    capped = AuditThresholds(max_flags_per_rule=2)

    result = audit_anomalies(
        AuditLog.build(events=events, window=(T0, T0 + 24 * HOUR)), capped
    )

    bursts = [f for f in result.findings if f.rule == "anomaly.burst"]
    assert [f.target_id for f in bursts] == ["5", "4"]
    assert result.metrics["flags_cut"] == 3


# Quality.


def quality_log() -> AuditLog:
    """Product 1: 10 orders, 5 returned, at position 1 of every slate.
    Product 2: as bad, never shown. Product 3: 10 orders, no return, at
    position 2. Product 4: rated 1, 2 and 2 stars, at position 3."""
    events = []
    for product, purchases, returns in ((1, 10, 5), (2, 10, 5), (3, 10, 0)):
        events += [
            {
                "kind": "purchase",
                "product_id": product,
                "customer_id": n,
                "occurred_at": T0,
            }
            for n in range(purchases)
        ]
        events += [
            {
                "kind": "return",
                "product_id": product,
                "customer_id": n,
                "occurred_at": T0 + 1,
            }
            for n in range(returns)
        ]
    events += [
        {
            "kind": "rating",
            "product_id": 4,
            "customer_id": n,
            "value": stars,
            "occurred_at": T0,
        }
        for n, stars in enumerate((1, 2, 2))
    ]
    return AuditLog.build(
        slates=[{"slate": s, "customer_id": s} for s in range(10)],
        slate_items=[
            {"slate": s, "product_id": product, "position": position}
            for s in range(10)
            for position, product in enumerate((1, 3, 4), start=1)
        ],
        events=events,
        products=[
            {"product_id": p, "merchant_id": 1, "eligible": True} for p in (1, 2, 3, 4)
        ],
    )


def test_quality_signals():
    signals = quality_signals(quality_log())

    assert signals.loc[1, "return_rate"] == 0.5
    assert signals.loc[3, "return_rate"] == 0.0
    assert signals.loc[4, "ratings"] == 3
    assert signals.loc[4, "avg_rating"] == pytest.approx(5 / 3)
    assert np.isnan(signals["return_rate"].to_numpy()[signals.index.get_loc(4)])


QUALITY = AuditThresholds(over_promotion_min_slate_items=10)
"""The quality log shows each product in ten slates."""


def test_poor_products_with_high_exposure_are_over_promoted():
    result = audit_quality(quality_log(), QUALITY)

    m = result.metrics
    assert m["return_rate"] == pytest.approx(10 / 30, abs=1e-6)
    assert m["poor_quality_products"] == 3  # 1 and 2 on returns, 4 on ratings
    # Exposure per slate: 1, W2, 0.5; products 1 and 4 are poor.
    assert m["poor_quality_exposure_share"] == pytest.approx(1.5 / (1.5 + W2), abs=1e-6)
    findings = {f.target_id: f for f in result.findings}
    # Product 2 is as bad but never shown; product 3 sells without returns.
    assert set(findings) == {"1", "4"}
    assert findings["1"].rule == "quality.over_promotion"
    assert findings["1"].severity == "high"
    assert findings["1"].evidence["return_rate"] == 0.5
    assert findings["1"].evidence["net_sales_share"] == pytest.approx(5 / 20)
    assert "rated 1.7" in findings["4"].summary


def test_a_poor_product_shown_in_proportion_to_its_net_sales_is_not_flagged():
    lenient = AuditThresholds(
        over_promotion_merit_multiple=3.0,
        over_promotion_share=0.9,
        over_promotion_min_slate_items=10,
    )

    result = audit_quality(quality_log(), lenient)

    # Product 1: exposure share 1 / (1.5 + W2) = 0.47 < 3 x 0.25 net share.
    assert {f.target_id for f in result.findings} == {"4"}


def test_a_poor_product_shown_a_handful_of_times_is_not_judged_on_its_share():
    rare = AuditThresholds(over_promotion_min_slate_items=11)

    result = audit_quality(quality_log(), rare)

    assert result.findings == []
    assert result.metrics["poor_quality_products"] == 3


# The log.


def test_an_order_line_reported_twice_is_kept_once_preferring_the_slate_link():
    line = {"kind": "purchase", "product_id": 1, "order_id": "A1", "occurred_at": T0}
    log = AuditLog.build(
        events=[
            {**line, "slate": pd.NA},
            {**line, "slate": 0, "slate_position": 1},
            {**line, "order_id": "", "product_id": 2},
            {**line, "order_id": "", "product_id": 2},
        ]
    )

    assert len(log.events) == 3
    assert log.events.loc[log.events["product_id"] == 1, "slate"].tolist() == [0]


def test_customers_who_click_what_they_were_shown_are_not_bots():
    events = [
        {
            "kind": kind,
            "customer_id": customer,
            "product_id": product,
            "occurred_at": T0,
        }
        for customer in (1, 2)
        for product in range(12)
        for kind in ("impression", "click")
    ]

    result = audit_anomalies(AuditLog.build(events=events), THRESHOLDS)

    assert result.metrics["bots"]["clicks"] == 24
    assert result.metrics["bots"]["unmatched_clicks"] == 0
    assert result.findings == []


def test_group_rates_are_ratios_of_sums_over_slates():
    # Group A: a slate of ten impressions with one click, and one of two
    # impressions with two clicks: 3 / 12, not the mean of 0.1 and 1.
    events = [
        {
            "kind": kind,
            "customer_id": 1,
            "product_id": position,
            "slate": slate,
            "slate_position": position,
            "occurred_at": T0,
        }
        for slate, impressions, clicks in ((0, 10, 1), (1, 2, 2))
        for position in range(1, impressions + 1)
        for kind in ("impression", "click")
        if kind == "impression" or position <= clicks
    ]
    events += [
        {
            "kind": kind,
            "customer_id": 2,
            "product_id": 1,
            "slate": 2,
            "slate_position": 1,
            "occurred_at": T0,
        }
        for kind in ("impression", "click", "click")
    ]
    log = AuditLog.build(
        slates=[
            {"slate": 0, "customer_id": 1},
            {"slate": 1, "customer_id": 1},
            {"slate": 2, "customer_id": 2},
        ],
        events=events,
        customer_groups=[
            {"customer_id": 1, "attribute": "segment", "value": "A"},
            {"customer_id": 2, "attribute": "segment", "value": "B"},
        ],
    )

    segment = audit_fairness(log, AuditThresholds(fairness_min_group_slates=1)).metrics[
        "attributes"
    ]["segment"]

    assert segment["groups"]["A"]["ctr"] == 0.25
    # A repeated click on one item counts once.
    assert segment["groups"]["B"]["clicks"] == 1
    assert segment["ctr"]["ratio"] == 0.25

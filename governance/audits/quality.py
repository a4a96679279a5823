"""Low-quality products that the slates promote anyway.

A product's quality signals in the window:

- ``return_rate``: its return events / its purchase events (one per order
  line); judged from ``quality_min_purchases`` purchases up, and it can pass
  1 when goods bought before the window come back in it;
- ``avg_rating``: the mean stars of its rating events; judged from
  ``quality_min_ratings`` ratings up.

It has poor quality signals when its return rate is above ``return_rate_max``
or its average rating is at or below ``rating_min``. A poor product is
over-promoted when its exposure share (see
``exposure``) is at least ``over_promotion_merit_multiple`` times its share of
net sales (purchases less returns, never below 0), or at least
``over_promotion_share`` outright, once it was shown in at least
``over_promotion_min_slate_items`` slate items.
"""

from typing import Any

import pandas as pd

from governance.audits.exposure import product_exposure
from governance.audits.findings import (
    HIGH,
    MEDIUM,
    PRODUCT,
    Finding,
    SectionResult,
    number,
    ratio,
    record,
    records,
    strongest,
)
from governance.audits.log import AuditLog, TargetNames
from governance.audits.thresholds import AuditThresholds

TOP = 20
JUDGEMENTS = ["many_returns", "low_rated", "poor"]


def quality_signals(log: AuditLog) -> pd.DataFrame:
    """Per product with purchases, returns or ratings: the signals above."""
    events = log.events
    counts = pd.crosstab(
        events["product_id"],
        events["kind"].astype(object),
    ).reindex(columns=["purchase", "return"], fill_value=0)
    ratings = (
        events[(events["kind"] == "rating") & events["value"].notna()]
        .groupby("product_id")["value"]
        .agg(["size", "mean"])
    )
    signals = pd.DataFrame(
        {
            "purchases": counts["purchase"],
            "returns": counts["return"],
            "ratings": ratings["size"],
            "avg_rating": ratings["mean"],
        }
    )
    signals[["purchases", "returns", "ratings"]] = (
        signals[["purchases", "returns", "ratings"]].fillna(0).astype("int64")
    )
    signals = signals[(signals[["purchases", "returns", "ratings"]] > 0).any(axis=1)]
    signals["return_rate"] = signals["returns"] / signals["purchases"].where(
        signals["purchases"] > 0
    )
    signals.index = signals.index.astype("int64")
    return signals


def audit_quality(log: AuditLog, thresholds: AuditThresholds) -> SectionResult:
    signals = quality_signals(log)
    exposure = product_exposure(log)
    table = signals.join(exposure[["exposure_share", "slate_items"]], how="left")
    table[["exposure_share", "slate_items"]] = table[
        ["exposure_share", "slate_items"]
    ].fillna(0)
    net = (table["purchases"] - table["returns"]).clip(lower=0)
    table["net_sales_share"] = net / net.sum() if net.sum() else 0.0

    table["many_returns"] = (table["purchases"] >= thresholds.quality_min_purchases) & (
        table["return_rate"] > thresholds.return_rate_max
    )
    table["low_rated"] = (table["ratings"] >= thresholds.quality_min_ratings) & (
        table["avg_rating"] <= thresholds.rating_min
    )
    table["poor"] = table["many_returns"] | table["low_rated"]
    over_promoted = (
        table["poor"]
        & (table["slate_items"] >= thresholds.over_promotion_min_slate_items)
        & (
            (
                table["exposure_share"]
                >= thresholds.over_promotion_merit_multiple * table["net_sales_share"]
            )
            | (table["exposure_share"] >= thresholds.over_promotion_share)
        )
    )
    purchases, returns = table["purchases"].sum(), table["returns"].sum()
    metrics: dict[str, Any] = {
        "products_with_signals": len(table),
        "purchases": int(purchases),
        "returns": int(returns),
        "return_rate": ratio(returns, purchases),
        "products_judged_on_returns": int(
            (table["purchases"] >= thresholds.quality_min_purchases).sum()
        ),
        "products_judged_on_ratings": int(
            (table["ratings"] >= thresholds.quality_min_ratings).sum()
        ),
        "avg_rating": number(
            log.events.loc[log.events["kind"] == "rating", "value"].mean()
        ),
        "poor_quality_products": int(table["poor"].sum()),
        "poor_quality_exposure_share": number(
            table.loc[table["poor"], "exposure_share"].sum()
        ),
        "over_promoted_products": int(over_promoted.sum()),
    }
    findings, cut = strongest(
        _findings(table[over_promoted], thresholds, log.names),
        thresholds.max_flags_per_rule,
    )
    metrics["top_over_promoted"] = records(
        table[over_promoted]
        .nlargest(TOP, "exposure_share")
        .reset_index(names="product_id")
        .drop(columns=JUDGEMENTS)
        .to_dict("records")
    )
    metrics["flags"], metrics["flags_cut"] = len(findings), cut
    return SectionResult(metrics=metrics, findings=findings)


def _findings(
    over_promoted: pd.DataFrame, thresholds: AuditThresholds, names: TargetNames
) -> list[Finding]:
    findings = []
    for product, row in over_promoted.iterrows():
        signs = []
        if row["many_returns"]:
            signs.append(f"{row['return_rate']:.0%} of its orders returned")
        if row["low_rated"]:
            signs.append(f"rated {row['avg_rating']:.1f} on average")
        findings.append(
            Finding(
                rule="quality.over_promotion",
                severity=(
                    HIGH
                    if row["exposure_share"] >= thresholds.over_promotion_share
                    else MEDIUM
                ),
                target_type=PRODUCT,
                target_id=str(product),
                summary=(
                    f"Product {names.product(product)} gets "
                    f"{row['exposure_share']:.1%} of exposure "
                    f"with poor quality signals: " + ", ".join(signs)
                ),
                evidence=record(row.drop(JUDGEMENTS)),
                thresholds={
                    "return_rate_max": thresholds.return_rate_max,
                    "quality_min_purchases": thresholds.quality_min_purchases,
                    "rating_min": thresholds.rating_min,
                    "quality_min_ratings": thresholds.quality_min_ratings,
                    "over_promotion_merit_multiple": (
                        thresholds.over_promotion_merit_multiple
                    ),
                    "over_promotion_share": thresholds.over_promotion_share,
                },
                strength=float(row["exposure_share"]),
            )
        )
    return findings

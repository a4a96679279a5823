"""Exposure on the provider side: who the slates show, against who sells.

fairlearn has no ranking metrics; these are the project's own:

- exposure of a slate item is ``1 / log2(1 + position)`` (position from 1: 1,
  0.631, 0.5, ...); a product's exposure is the sum over its slate items, its
  share the part of all exposure in the window;
- merit of a product is its orders in the window's events (purchases, one
  per order and product); its merit share the part of all orders;
- ``exposure_merit_gap`` is half the sum over products of
  ``|exposure share - merit share|`` (0 when exposure follows sales exactly, 1
  when they never meet);
- ``gini`` is the Gini coefficient of exposure over the catalogue (eligible
  products, and any others shown): ``sum((2i - n - 1) x_i) / (n sum(x))`` with
  ``x`` ascending, 0 when every product gets the same, near 1 when one gets
  all;
- ``coverage`` is the share of that catalogue shown at least once;
- ``avg_recommended_popularity`` is the mean, over slate items, of the shown
  product's orders; ``popularity_lift`` that over the catalogue's mean orders
  per product (above 1: the slates lean to what already sells).

Merchants get exposure and merit shares the same way; one whose exposure share
is well below its share of sales is flagged.
"""

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from governance.audits.findings import (
    HIGH,
    MEDIUM,
    MERCHANT,
    Finding,
    SectionResult,
    number,
    ratio,
    records,
    strongest,
)
from governance.audits.log import AuditLog, TargetNames
from governance.audits.thresholds import AuditThresholds

TOP = 20
"""Products and merchants listed in the metrics, by exposure."""


def position_weight(position: ArrayLike | pd.Series) -> np.ndarray:
    """``1 / log2(1 + position)`` for positions counted from 1."""
    return 1.0 / np.log2(1.0 + np.asarray(position, dtype="float64"))


def gini(values: np.ndarray | pd.Series) -> float | None:
    """Gini coefficient of non-negative values; ``None`` when they sum to 0."""
    x = np.sort(np.asarray(values, dtype="float64"))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return None
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def orders_per_product(log: AuditLog) -> pd.Series:
    """Purchases per product in the window's events (one per order line)."""
    purchases = log.events.loc[log.events["kind"] == "purchase", "product_id"]
    return purchases.value_counts().rename("orders")


def product_exposure(log: AuditLog) -> pd.DataFrame:
    """Per product of the catalogue or the window: exposure, orders, shares.

    Columns: ``merchant_id``, ``slate_items``, ``exposure``,
    ``exposure_share``, ``orders``, ``merit_share``, ``in_catalogue`` (eligible
    or shown).
    """
    items = log.slate_items
    shown = (
        pd.DataFrame(
            {
                "product_id": items["product_id"].to_numpy(),
                "exposure": position_weight(items["position"]),
            }
        )
        .groupby("product_id")["exposure"]
        .agg(["size", "sum"])
        .rename(columns={"size": "slate_items", "sum": "exposure"})
    )
    products = log.products.set_index("product_id")
    table = (
        products[["merchant_id", "eligible"]]
        .join(shown, how="outer")
        .join(orders_per_product(log), how="outer")
    )
    table[["slate_items", "exposure", "orders"]] = table[
        ["slate_items", "exposure", "orders"]
    ].fillna(0)
    table["slate_items"] = table["slate_items"].astype("int64")
    table["orders"] = table["orders"].astype("int64")
    table["in_catalogue"] = table["eligible"].fillna(False).astype(bool) | (
        table["slate_items"] > 0
    )
    total_exposure, total_orders = table["exposure"].sum(), table["orders"].sum()
    table["exposure_share"] = (
        table["exposure"] / total_exposure if total_exposure else 0.0
    )
    table["merit_share"] = table["orders"] / total_orders if total_orders else 0.0
    return table.drop(columns="eligible")


def audit_exposure(log: AuditLog, thresholds: AuditThresholds) -> SectionResult:
    table = product_exposure(log)
    catalogue = table[table["in_catalogue"]]
    items = log.slate_items
    total_orders = int(table["orders"].sum())

    popularity = table["orders"].reindex(items["product_id"]).fillna(0).to_numpy()
    avg_popularity = float(popularity.mean()) if len(items) else None
    catalogue_popularity = float(catalogue["orders"].mean()) if len(catalogue) else 0.0
    metrics: dict[str, Any] = {
        "slate_items": len(items),
        "total_exposure": number(table["exposure"].sum()),
        "products_shown": int((table["slate_items"] > 0).sum()),
        "catalogue_size": len(catalogue),
        "coverage": ratio((catalogue["slate_items"] > 0).sum(), len(catalogue)),
        "gini": number(gini(catalogue["exposure"])),
        "orders": total_orders,
        "avg_recommended_popularity": number(avg_popularity),
        "catalogue_mean_popularity": number(catalogue_popularity),
        "popularity_lift": (
            ratio(avg_popularity, catalogue_popularity)
            if avg_popularity is not None
            else None
        ),
        "exposure_merit_gap": (
            number((table["exposure_share"] - table["merit_share"]).abs().sum() / 2)
            if total_orders and len(items)
            else None
        ),
        "top_products": records(
            table.nlargest(TOP, "exposure")
            .reset_index()[
                ["product_id", "slate_items", "exposure_share", "orders", "merit_share"]
            ]
            .to_dict("records")
        ),
    }

    merchants = merchant_exposure(table)
    metrics["merchants"] = len(merchants)
    metrics["merchant_gini"] = number(gini(merchants["exposure"]))
    metrics["top_merchants"] = records(
        merchants.nlargest(TOP, "exposure").reset_index().to_dict("records")
    )
    findings, cut = strongest(
        _under_exposed(merchants, thresholds, log.names)
        if total_orders and len(items)
        else [],
        thresholds.max_flags_per_rule,
    )
    metrics["flags"], metrics["flags_cut"] = len(findings), cut
    return SectionResult(metrics=metrics, findings=findings)


def merchant_exposure(table: pd.DataFrame) -> pd.DataFrame:
    """Per merchant: exposure, orders, their shares, and exposure over merit."""
    merchants = (
        table.dropna(subset=["merchant_id"])
        .astype({"merchant_id": "int64"})
        .groupby("merchant_id")[["exposure", "exposure_share", "orders", "merit_share"]]
        .sum()
    )
    merchants["exposure_merit_ratio"] = merchants["exposure_share"] / merchants[
        "merit_share"
    ].where(merchants["merit_share"] > 0)
    return merchants


def _under_exposed(
    merchants: pd.DataFrame, thresholds: AuditThresholds, names: TargetNames
) -> list[Finding]:
    under = merchants[
        (merchants["merit_share"] >= thresholds.merchant_min_merit_share)
        & (merchants["exposure_merit_ratio"] < thresholds.merchant_min_exposure_ratio)
    ]
    findings = []
    for merchant, row in under.iterrows():
        exposure_ratio = float(row["exposure_merit_ratio"])
        findings.append(
            Finding(
                rule="exposure.merchant_under_exposed",
                severity=(
                    HIGH
                    if exposure_ratio < thresholds.merchant_min_exposure_ratio / 2
                    else MEDIUM
                ),
                target_type=MERCHANT,
                target_id=str(merchant),
                summary=(
                    f"Merchant {names.merchant(merchant)} makes "
                    f"{row['merit_share']:.1%} of sales "
                    f"but gets {row['exposure_share']:.1%} of exposure"
                ),
                evidence={
                    "exposure_share": number(row["exposure_share"]),
                    "merit_share": number(row["merit_share"]),
                    "orders": int(row["orders"]),
                    "exposure_merit_ratio": number(exposure_ratio),
                },
                thresholds={
                    "merchant_min_merit_share": thresholds.merchant_min_merit_share,
                    "merchant_min_exposure_ratio": (
                        thresholds.merchant_min_exposure_ratio
                    ),
                },
                strength=float(row["merit_share"] - row["exposure_share"]),
            )
        )
    return findings

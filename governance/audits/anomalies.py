"""Anomalies in feedback, which would poison the rewards if trusted.

- Bursts: events of one kind per product (and per customer) per time bucket.
  Over the buckets of the window (stretched to its first and last event, and
  empty ones counted as 0), a bucket's robust z-score is
  ``(x - median) / (1.4826 MAD)``, MAD the median absolute deviation from the
  median. Sparse series have ``MAD = 0``; the scale is then
  ``1.2533 * mean |x - median|`` (both constants make the scale the standard
  deviation for normal data), and a series with no deviation at all scores 0.
  A bucket is a burst when its z reaches ``burst_z`` and it holds at least
  ``burst_min_events`` events. A purchase or return counts once per order, so
  a wholesale basket of fifty lines is one purchase of its customer.
- Bot-like customers: more than ``bot_max_clicks_per_hour`` clicks in one
  clock hour, or a high share of clicks on products never shown to them
  (no impression of that product to that customer at or before the click).
- Purchase-then-return: a customer's share of purchased products that they
  returned after buying them in the window.

Anonymous sessions are left out of the per-customer checks: a flag names a
customer that a review can exclude from training.
"""

from typing import Any

import numpy as np
import pandas as pd

from governance.audits.findings import (
    CUSTOMER,
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

MAD_SCALE = 1.4826
MEAN_DEVIATION_SCALE = 1.2533
MAX_DENSE_CELLS = 4_000_000
"""Series are scored this many bucket counts at a time, to bound memory."""
TOP = 20


def robust_z(counts: np.ndarray) -> np.ndarray:
    """Robust z-scores of each row's values against that row (see module doc)."""
    counts = np.asarray(counts, dtype="float64")
    median = np.median(counts, axis=1, keepdims=True)
    deviation = np.abs(counts - median)
    mad = np.median(deviation, axis=1, keepdims=True)
    scale = np.where(
        mad > 0,
        MAD_SCALE * mad,
        MEAN_DEVIATION_SCALE * deviation.mean(axis=1, keepdims=True),
    )
    z = np.zeros_like(counts)
    np.divide(counts - median, scale, out=z, where=np.broadcast_to(scale > 0, z.shape))
    return z


def find_bursts(
    log: AuditLog, entity: str, thresholds: AuditThresholds
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Bursts per ``entity`` (``product_id`` or ``customer_id``) and kind.

    Returns one row per burst bucket (entity, kind, bucket start in Unix
    seconds, count, median, z) and what was checked.
    """
    events = log.events
    seconds = thresholds.burst_bucket_minutes * 60
    counted = events[
        events["kind"].isin(thresholds.burst_kinds) & events[entity].notna()
    ]
    # A basket is one act, however many lines: an order counts once.
    counted = counted[
        (counted["order_id"] == "") | ~counted.duplicated([entity, "kind", "order_id"])
    ]
    empty = _burst_frame([], entity)
    if counted.empty:
        return empty, {"series": 0, "candidates": 0, "burst_buckets": 0, "max_z": None}
    moments = [int(events["occurred_at"].min()), int(events["occurred_at"].max())]
    if log.window is not None:
        moments += [log.window[0], log.window[1] - 1]
    first = min(moments) // seconds
    buckets = max(moments) // seconds - first + 1
    cells = (
        pd.DataFrame(
            {
                entity: counted[entity].astype("int64").to_numpy(),
                "kind": counted["kind"].astype(object).to_numpy(),
                "bucket": counted["occurred_at"].to_numpy() // seconds - first,
            }
        )
        .value_counts()
        .rename("count")
        .reset_index()
    )
    series = cells.groupby([entity, "kind"])["count"].transform("max")
    # Only a series with a bucket of burst_min_events can have a burst.
    candidates = cells[series >= thresholds.burst_min_events]
    keys = candidates[[entity, "kind"]].drop_duplicates().reset_index(drop=True)
    checked = {
        "series": int(cells[[entity, "kind"]].drop_duplicates().shape[0]),
        "candidates": len(keys),
    }
    if keys.empty:
        return empty, {**checked, "burst_buckets": 0, "max_z": None}

    row_of = pd.Series(np.arange(len(keys)), index=pd.MultiIndex.from_frame(keys))
    rows = row_of.loc[pd.MultiIndex.from_frame(candidates[[entity, "kind"]])].to_numpy()
    found = []
    max_z = 0.0
    step = max(1, MAX_DENSE_CELLS // buckets)
    for offset in range(0, len(keys), step):
        chunk = (rows >= offset) & (rows < offset + step)
        dense = np.zeros((min(step, len(keys) - offset), buckets))
        dense[rows[chunk] - offset, candidates["bucket"].to_numpy()[chunk]] = (
            candidates["count"].to_numpy()[chunk]
        )
        z = robust_z(dense)
        max_z = max(max_z, float(z.max()))
        hit_rows, hit_buckets = np.nonzero(
            (z >= thresholds.burst_z) & (dense >= thresholds.burst_min_events)
        )
        median = np.median(dense, axis=1)
        for row, bucket in zip(hit_rows, hit_buckets, strict=True):
            key = keys.iloc[offset + row]
            found.append(
                {
                    entity: int(key[entity]),
                    "kind": key["kind"],
                    "bucket_start": int((first + bucket) * seconds),
                    "count": int(dense[row, bucket]),
                    "median": float(median[row]),
                    "z": float(z[row, bucket]),
                }
            )
    bursts = _burst_frame(found, entity)
    return bursts, {**checked, "burst_buckets": len(bursts), "max_z": number(max_z)}


def _burst_frame(rows: list[dict[str, Any]], entity: str) -> pd.DataFrame:
    columns = {
        entity: "int64",
        "kind": "object",
        "bucket_start": "int64",
        "count": "int64",
        "median": "float64",
        "z": "float64",
    }
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


def bot_signals(events: pd.DataFrame) -> pd.DataFrame:
    """Per customer with clicks: clicks, unmatched clicks, peak clicks per hour."""
    identified = events[events["customer_id"].notna()]
    clicks = identified[identified["kind"] == "click"]
    columns = ["clicks", "unmatched_clicks", "unmatched_share", "peak_clicks_per_hour"]
    if clicks.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="customer_id"))
    impressions = identified[identified["kind"] == "impression"]
    first_shown = (
        impressions.groupby(["customer_id", "product_id"])["occurred_at"]
        .min()
        .rename("first_shown")
    )
    matched = clicks.join(first_shown, on=["customer_id", "product_id"])
    unmatched = matched["first_shown"].isna() | (
        matched["first_shown"] > matched["occurred_at"]
    )
    hours = clicks["occurred_at"] // 3600
    signals = pd.DataFrame(
        {
            "clicks": clicks.groupby("customer_id").size(),
            "unmatched_clicks": unmatched.groupby(clicks["customer_id"]).sum(),
            "peak_clicks_per_hour": clicks.groupby(["customer_id", hours])
            .size()
            .groupby(level=0)
            .max(),
        }
    )
    signals["unmatched_share"] = signals["unmatched_clicks"] / signals["clicks"]
    signals.index = signals.index.astype("int64")
    return signals[columns]


def purchase_returns(events: pd.DataFrame) -> pd.DataFrame:
    """Per customer with purchases: products bought, and returned after buying."""
    identified = events[events["customer_id"].notna()]
    bought = (
        identified[identified["kind"] == "purchase"]
        .groupby(["customer_id", "product_id"])["occurred_at"]
        .min()
        .rename("bought_at")
    )
    columns = ["purchased_products", "returned_products", "returned_share"]
    if bought.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="customer_id"))
    returned = (
        identified[identified["kind"] == "return"]
        .groupby(["customer_id", "product_id"])["occurred_at"]
        .max()
        .rename("returned_at")
    )
    pairs = bought.to_frame().join(returned)
    pairs["returned"] = pairs["returned_at"] >= pairs["bought_at"]
    per_customer = pairs.groupby(level="customer_id")["returned"].agg(["size", "sum"])
    per_customer.columns = ["purchased_products", "returned_products"]
    per_customer["returned_share"] = (
        per_customer["returned_products"] / per_customer["purchased_products"]
    )
    per_customer.index = per_customer.index.astype("int64")
    return per_customer[columns]


def audit_anomalies(log: AuditLog, thresholds: AuditThresholds) -> SectionResult:
    events = log.events
    findings: list[Finding] = []
    metrics: dict[str, Any] = {
        "events": len(events),
        "bucket_minutes": thresholds.burst_bucket_minutes,
        "bursts": {},
    }
    for entity, target_type in (("product_id", PRODUCT), ("customer_id", CUSTOMER)):
        bursts, checked = find_bursts(log, entity, thresholds)
        burst_findings = _burst_findings(
            bursts, entity, target_type, thresholds, log.names
        )
        metrics["bursts"][target_type] = {
            **checked,
            "flagged": len(burst_findings),
            "top": records(bursts.nlargest(TOP, "z").to_dict("records")),
        }
        findings += burst_findings

    bots = bot_signals(events)
    bot_findings = _bot_findings(bots, thresholds, log.names)
    metrics["bots"] = {
        "customers_with_clicks": len(bots),
        "clicks": int(bots["clicks"].sum()),
        "unmatched_clicks": int(bots["unmatched_clicks"].sum()),
        "unmatched_click_share": ratio(
            bots["unmatched_clicks"].sum(), bots["clicks"].sum()
        ),
        "peak_clicks_per_hour": (
            int(bots["peak_clicks_per_hour"].max()) if len(bots) else 0
        ),
        "flagged": len(bot_findings),
    }
    findings += bot_findings

    returns = purchase_returns(events)
    return_findings = _return_findings(returns, thresholds, log.names)
    metrics["purchase_returns"] = {
        "customers_with_purchases": len(returns),
        "purchased_products": int(returns["purchased_products"].sum()),
        "returned_products": int(returns["returned_products"].sum()),
        "returned_share": ratio(
            returns["returned_products"].sum(), returns["purchased_products"].sum()
        ),
        "flagged": len(return_findings),
    }
    findings += return_findings

    kept: list[Finding] = []
    cut = 0
    for rule in sorted({finding.rule for finding in findings}):
        strongest_of_rule, cut_of_rule = strongest(
            (finding for finding in findings if finding.rule == rule),
            thresholds.max_flags_per_rule,
        )
        kept += strongest_of_rule
        cut += cut_of_rule
    metrics["flags"], metrics["flags_cut"] = len(kept), cut
    return SectionResult(metrics=metrics, findings=kept)


def _burst_findings(
    bursts: pd.DataFrame,
    entity: str,
    target_type: str,
    thresholds: AuditThresholds,
    names: TargetNames,
) -> list[Finding]:
    """One finding per product or customer, with every burst bucket of it."""
    name_of = names.product if target_type == PRODUCT else names.customer
    findings = []
    for target, rows in bursts.groupby(entity):
        worst = rows.sort_values("z").iloc[-1]
        findings.append(
            Finding(
                rule="anomaly.burst",
                severity=HIGH if worst["z"] >= 2 * thresholds.burst_z else MEDIUM,
                target_type=target_type,
                target_id=str(target),
                summary=(
                    f"Burst of {int(worst['count'])} {worst['kind']} events on "
                    f"{target_type} {name_of(target)} in one "
                    f"{thresholds.burst_bucket_minutes}-minute bucket "
                    f"(usual {worst['median']:g}, robust z {worst['z']:.1f})"
                ),
                evidence={
                    "buckets": records(
                        rows.sort_values("bucket_start")
                        .drop(columns=entity)
                        .to_dict("records")
                    )
                },
                thresholds={
                    "burst_z": thresholds.burst_z,
                    "burst_min_events": thresholds.burst_min_events,
                    "burst_bucket_minutes": thresholds.burst_bucket_minutes,
                },
                # Single spikes all score about the same z: rank by excess.
                strength=float(rows["count"].sum() - rows["median"].sum()),
            )
        )
    return findings


def _bot_findings(
    bots: pd.DataFrame, thresholds: AuditThresholds, names: TargetNames
) -> list[Finding]:
    too_fast = bots["peak_clicks_per_hour"] > thresholds.bot_max_clicks_per_hour
    unmatched = (bots["clicks"] >= thresholds.bot_min_clicks) & (
        bots["unmatched_share"] >= thresholds.bot_unmatched_click_share
    )
    suspects = bots.assign(too_fast=too_fast, unmatched=unmatched)[too_fast | unmatched]
    findings = []
    for customer, row in suspects.iterrows():
        signs = []
        if row["too_fast"]:
            signs.append(f"{int(row['peak_clicks_per_hour'])} clicks in one hour")
        if row["unmatched"]:
            signs.append(
                f"{row['unmatched_share']:.0%} of {int(row['clicks'])} clicks "
                "on products never shown to them"
            )
        findings.append(
            Finding(
                rule="anomaly.bot",
                severity=HIGH if len(signs) == 2 else MEDIUM,
                target_type=CUSTOMER,
                target_id=str(customer),
                summary=f"Customer {names.customer(customer)} acts like a bot: "
                + "; ".join(signs),
                evidence=record(row.drop(["too_fast", "unmatched"])),
                thresholds={
                    "bot_max_clicks_per_hour": thresholds.bot_max_clicks_per_hour,
                    "bot_min_clicks": thresholds.bot_min_clicks,
                    "bot_unmatched_click_share": thresholds.bot_unmatched_click_share,
                },
                strength=float(row["clicks"]),
            )
        )
    return findings


def _return_findings(
    returns: pd.DataFrame, thresholds: AuditThresholds, names: TargetNames
) -> list[Finding]:
    flagged = returns[
        (returns["purchased_products"] >= thresholds.customer_min_purchases)
        & (returns["returned_share"] > thresholds.customer_return_share_max)
    ]
    return [
        Finding(
            rule="anomaly.purchase_return",
            severity=MEDIUM,
            target_type=CUSTOMER,
            target_id=str(customer),
            summary=(
                f"Customer {names.customer(customer)} returned "
                f"{int(row['returned_products'])} of "
                f"{int(row['purchased_products'])} products they bought"
            ),
            evidence=record(row),
            thresholds={
                "customer_min_purchases": thresholds.customer_min_purchases,
                "customer_return_share_max": thresholds.customer_return_share_max,
            },
            strength=float(row["returned_products"]),
        )
        for customer, row in flagged.iterrows()
    ]

"""Fairness across customer groups: slate outcomes per group, with fairlearn.

For every group attribute present in the window (country, and the attributes
customers consented to), the slates are split by the value of their
customer's attribute and three outcomes are compared between groups through a
``fairlearn.metrics.MetricFrame``:

- ``ctr``: slate items clicked / slate items with an impression;
- ``conversion``: slate items purchased / slate items with an impression;
- ``hit_rate``: slates with at least one slate item purchased / slates.

An item counts once however many events repeat it. ``difference`` is the best
group's rate less the worst's, ``ratio`` the worst's over the best's.

Guards: slates with no value for the attribute (anonymous sessions, customers
who did not consent) are left out and counted; groups with fewer than
``fairness_min_group_slates`` slates are pooled into ``(other)``; a metric
defined for fewer than two groups has no difference or ratio; a metric that is
0 in every group has difference 0 and no ratio; and a ratio below the limit is
flagged only when the worst group had enough traffic for the gap to mean
something (``fairness_min_expected_positives``).
"""

from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from governance.audits.findings import (
    CUSTOMER_GROUP,
    HIGH,
    MEDIUM,
    Finding,
    SectionResult,
    number,
    strongest,
)
from governance.audits.log import AuditLog
from governance.audits.thresholds import AuditThresholds

OTHER = "(other)"

# Each metric as (numerator, denominator) columns of the slate outcomes.
OUTCOMES = {
    "ctr": ("clicks", "impressions"),
    "conversion": ("purchases", "impressions"),
    "hit_rate": ("hits", "slates"),
}
COUNTS = ("impressions", "clicks", "purchases", "hits", "slates")


def slate_outcomes(log: AuditLog) -> pd.DataFrame:
    """Per slate (in slate order): impressions, clicks, purchases, hits, slates."""
    events = log.events
    kinds = ["impression", "click", "purchase"]
    linked = events[
        events["slate"].notna()
        & events["slate_position"].notna()
        & events["kind"].isin(kinds)
    ]
    # One key per (slate, position, kind): repeated events count once.
    positions = int(linked["slate_position"].max()) + 1 if len(linked) else 1
    kind = pd.Categorical(linked["kind"], categories=kinds).codes.astype("int64")
    keys = np.sort(
        (
            linked["slate"].to_numpy("int64") * positions
            + linked["slate_position"].to_numpy("int64")
        )
        * len(kinds)
        + kind
    )
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    slate, kind = keys // (positions * len(kinds)), keys % len(kinds)
    outcomes = pd.DataFrame(
        {
            name: np.bincount(slate[kind == code], minlength=len(log.slates))
            for code, name in enumerate(["impressions", "clicks", "purchases"])
        }
    )
    outcomes["hits"] = (outcomes["purchases"] > 0).astype("int64")
    outcomes["slates"] = 1
    return outcomes


def audit_fairness(log: AuditLog, thresholds: AuditThresholds) -> SectionResult:
    outcomes = slate_outcomes(log)
    groups = log.customer_groups
    metrics: dict[str, Any] = {
        "slates": len(outcomes),
        "definitions": {
            name: f"{numerator} / {denominator}"
            for name, (numerator, denominator) in OUTCOMES.items()
        },
        "attributes": {},
    }
    findings: list[Finding] = []
    for attribute in sorted(groups["attribute"].unique()):
        values = groups[groups["attribute"] == attribute].drop_duplicates("customer_id")
        group_of_slate = log.slates["customer_id"].map(
            pd.Series(values["value"].to_numpy(), index=values["customer_id"])
        )
        attribute_metrics, attribute_findings = _audit_attribute(
            str(attribute), group_of_slate, outcomes, thresholds
        )
        metrics["attributes"][str(attribute)] = attribute_metrics
        findings += attribute_findings
    kept, cut = strongest(findings, thresholds.max_flags_per_rule)
    metrics["flags"] = len(kept)
    metrics["flags_cut"] = cut
    return SectionResult(metrics=metrics, findings=kept)


def _audit_attribute(
    attribute: str,
    group_of_slate: pd.Series,
    outcomes: pd.DataFrame,
    thresholds: AuditThresholds,
) -> tuple[dict[str, Any], list[Finding]]:
    known = group_of_slate.notna().to_numpy()
    groups = pool_small_groups(
        group_of_slate[known].astype(str), thresholds.fairness_min_group_slates
    )
    rows = outcomes[known]
    metrics: dict[str, Any] = {
        "missing_slates": int((~known).sum()),
        "pooled_values": int(
            group_of_slate[known].nunique() - groups[groups != OTHER].nunique()
        ),
        "groups": {},
    }
    if rows.empty:
        metrics.update(
            {name: _no_disparity("no slate has a value") for name in OUTCOMES}
        )
        return metrics, []

    # Slates with the same outcomes in the same group become one row weighted
    # by their number: the rates are ratios of sums, so nothing changes, and
    # fairlearn, which slices every group element by element, gets hundreds
    # of rows instead of a million.
    merged = (
        rows.assign(group=groups.to_numpy())
        .value_counts(["group", "impressions", "clicks", "purchases"])
        .rename("weight")
        .reset_index()
    )
    merged["hits"] = (merged["purchases"] > 0).astype("int64")
    merged["slates"] = 1
    counts = merged[list(COUNTS)].mul(merged["weight"], axis=0)
    frame = MetricFrame(
        metrics={name: rate for name in OUTCOMES},
        # The rates read their counts from sample parameters; fairlearn needs
        # y_true and y_pred all the same, and gets the hits for both.
        y_true=merged["hits"].to_numpy(),
        y_pred=merged["hits"].to_numpy(),
        # A Series: fairlearn squeezes an array of one row to no dimension.
        sensitive_features=merged["group"].rename(attribute),
        sample_params={
            name: {
                "numerator": counts[numerator].to_numpy(),
                "denominator": counts[denominator].to_numpy(),
            }
            for name, (numerator, denominator) in OUTCOMES.items()
        },
    )
    by_group = frame.by_group
    totals = counts.groupby(merged["group"].to_numpy()).sum()
    for group in by_group.index:
        metrics["groups"][str(group)] = {
            **{column: int(totals.loc[group, column]) for column in COUNTS},
            **{name: number(by_group.loc[group, name]) for name in OUTCOMES},
        }

    differences, ratios = frame.difference(), frame.ratio()
    failing = []
    for name, (_, denominator) in OUTCOMES.items():
        defined = by_group[name].dropna()
        if len(defined) < 2:
            metrics[name] = _no_disparity("fewer than two groups")
            continue
        best, worst = defined.idxmax(), defined.idxmin()
        if defined.max() == 0:
            metrics[name] = {**_no_disparity("no positives in any group")}
            metrics[name]["difference"] = 0.0
            continue
        expected = float(defined.max() * totals.loc[worst, denominator])
        metrics[name] = {
            "difference": number(differences[name]),
            "ratio": number(ratios[name]),
            "best_group": str(best),
            "worst_group": str(worst),
            "worst_group_expected_positives": number(expected),
            "note": "",
        }
        if (
            ratios[name] < thresholds.fairness_min_ratio
            and expected >= thresholds.fairness_min_expected_positives
        ):
            failing.append((name, str(worst), metrics[name]))
    return metrics, _findings(attribute, failing, metrics["groups"], thresholds)


def rate(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    numerator: np.ndarray,
    denominator: np.ndarray,
) -> float:
    """Sum of the numerator over sum of the denominator; NaN when that is 0."""
    total = denominator.sum()
    return float(numerator.sum() / total) if total else float("nan")


def pool_small_groups(groups: pd.Series, min_slates: int) -> pd.Series:
    """Put values with fewer than ``min_slates`` slates into ``(other)``."""
    sizes = groups.value_counts()
    small = sizes.index[sizes < min_slates]
    return groups.where(~groups.isin(small), OTHER)


def _no_disparity(note: str) -> dict[str, Any]:
    return {
        "difference": None,
        "ratio": None,
        "best_group": None,
        "worst_group": None,
        "worst_group_expected_positives": None,
        "note": note,
    }


def _findings(
    attribute: str,
    failing: list[tuple[str, str, dict[str, Any]]],
    groups: dict[str, Any],
    thresholds: AuditThresholds,
) -> list[Finding]:
    """One finding per group that is worst on at least one metric."""
    findings = []
    for worst in sorted({group for _, group, _ in failing}):
        gaps = {name: disparity for name, group, disparity in failing if group == worst}
        lowest = min(disparity["ratio"] for disparity in gaps.values())
        severity = HIGH if lowest < thresholds.fairness_min_ratio / 2 else MEDIUM
        findings.append(
            Finding(
                rule="fairness.ratio",
                severity=severity,
                target_type=CUSTOMER_GROUP,
                target_id=f"{attribute}={worst}",
                summary=(
                    f"Customers with {attribute} {worst} get worse slates: "
                    + ", ".join(
                        f"{name} at {disparity['ratio']:.0%} of "
                        f"{disparity['best_group']}'s"
                        for name, disparity in gaps.items()
                    )
                ),
                evidence={
                    "attribute": attribute,
                    "group": worst,
                    "metrics": gaps,
                    "groups": groups,
                },
                thresholds={
                    "fairness_min_ratio": thresholds.fairness_min_ratio,
                    "fairness_min_group_slates": thresholds.fairness_min_group_slates,
                    "fairness_min_expected_positives": (
                        thresholds.fairness_min_expected_positives
                    ),
                },
                strength=1 - lowest,
            )
        )
    return findings

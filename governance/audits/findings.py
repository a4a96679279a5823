"""What a section returns: metrics ready for JSON, and findings to review."""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# The values of governance.models.Severity and TargetType, which this package
# does not import (it imports nothing of Django).
MEDIUM, HIGH = "medium", "high"
PRODUCT, CUSTOMER, MERCHANT, CUSTOMER_GROUP = (
    "product",
    "customer",
    "merchant",
    "customer_group",
)


@dataclass(frozen=True)
class Finding:
    """Something a person should look at; stored as a flag."""

    rule: str
    """What fired: ``anomaly.burst``, ``quality.over_promotion``..."""
    severity: str
    target_type: str
    target_id: str
    summary: str
    evidence: dict[str, Any]
    thresholds: dict[str, Any]
    strength: float = 0.0
    """How far past its thresholds, to keep the strongest when capped."""


@dataclass(frozen=True)
class SectionResult:
    metrics: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)


def number(value: Any, digits: int = 6) -> float | None:
    """A float for JSON: rounded, and ``None`` where it is undefined (NaN, inf)."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is 0."""
    return number(numerator / denominator) if denominator else None


def strongest(findings: Iterable[Finding], limit: int) -> tuple[list[Finding], int]:
    """Keep the ``limit`` strongest findings; return them and how many were cut."""
    ranked = sorted(findings, key=lambda finding: -finding.strength)
    return ranked[:limit], max(len(ranked) - limit, 0)


def record(row: Mapping[Any, Any] | pd.Series) -> dict[str, Any]:
    """A JSON-ready row: text keys, NumPy scalars as Python ones, floats
    through ``number``, missing values as ``None``."""
    return {str(key): _plain(value) for key, value in row.items()}


def records(rows: Iterable[Mapping[Any, Any]]) -> list[dict[str, Any]]:
    return [record(row) for row in rows]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return number(value)
    if pd.isna(value):
        return None
    return value

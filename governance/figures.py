"""Audit metrics and flag evidence, laid out for the pages.

Audits store their figures as JSON of any depth. Pages show them whatever
their keys: a mapping becomes a two-column table, a list of alike mappings a
table with a column per key, and every mapping of numbers (a figure per
group, per day) becomes a chart as well.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Any

from governance.charts import Series, format_number

MAX_BARS = 40
MAX_RECORD_COLUMNS = 12
MAX_SERIES_PER_TABLE = 6
DATE_LABEL = re.compile(r"^\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Figure:
    """One JSON value as a page shows it.

    ``kind`` is ``scalar`` (``text``), ``mapping`` (``rows`` of key and
    figure), ``records`` (``columns`` and a row of figures per record) or
    ``list`` (``items``).
    """

    kind: str
    text: str = ""
    rows: list[tuple[str, "Figure"]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    records: list[list["Figure"]] = field(default_factory=list)
    items: list["Figure"] = field(default_factory=list)


def figure_of(value: Any) -> Figure:
    """Lay out a JSON value as nested tables."""
    if isinstance(value, dict):
        if value and all(_is_flat_mapping(v) for v in value.values()):
            # Alike figures per key (per group, per product): one row each.
            columns = list(dict.fromkeys(str(k) for v in value.values() for k in v))
            if len(columns) < MAX_RECORD_COLUMNS:
                return Figure(
                    "records",
                    columns=["", *columns],
                    records=[
                        [Figure("scalar", text=str(key))]
                        + [figure_of(v.get(c)) for c in columns]
                        for key, v in value.items()
                    ],
                )
        return Figure(
            "mapping", rows=[(str(key), figure_of(v)) for key, v in value.items()]
        )
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(str(key) for v in value for key in v))
            if len(columns) <= MAX_RECORD_COLUMNS:
                return Figure(
                    "records",
                    columns=columns,
                    records=[[figure_of(v.get(c)) for c in columns] for v in value],
                )
        return Figure("list", items=[figure_of(v) for v in value])
    return Figure("scalar", text=scalar_text(value))


def _is_flat_mapping(value: Any) -> bool:
    return isinstance(value, dict) and not any(
        isinstance(v, dict | list) for v in value.values()
    )


def scalar_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_number(value)
    return str(value)


def chartable_series(value: Any, title: str = "", *, limit: int = 12) -> list[Series]:
    """Every mapping of numbers inside ``value``, and every numeric column of
    a table of records, as series to chart (at most ``limit``)."""
    found: list[Series] = []
    _collect(value, [title] if title else [], found)
    return found[:limit]


def _collect(value: Any, path: list[str], found: list[Series]) -> None:
    if isinstance(value, dict):
        numbers = _numbers(value)
        if numbers is not None:
            found.append(_series(path, numbers))
            return
        if len(value) >= 2 and all(isinstance(v, dict) for v in value.values()):
            # Figures per group (or per product...): one chart per figure.
            records = [{"": str(key), **v} for key, v in value.items()]
            by_key = _record_series(records, path, label_column="")
            if by_key:
                found.extend(by_key)
                return
        for key, child in value.items():
            _collect(child, [*path, str(key)], found)
    elif (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(v, dict) for v in value)
    ):
        found.extend(_record_series(value, path))


def _numbers(mapping: dict[Any, Any]) -> list[tuple[str, float]] | None:
    """The mapping's numbers if it holds two or more and nothing else (a
    missing figure, ``None``, is left out)."""
    if not all(v is None or _is_number(v) for v in mapping.values()):
        return None
    points = [(str(key), float(v)) for key, v in mapping.items() if v is not None]
    return points if len(points) >= 2 else None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _series(path: list[str], points: list[tuple[str, float]]) -> Series:
    title = " / ".join(path) or "figures"
    if all(DATE_LABEL.match(label) for label, _ in points):
        return Series(title, sorted(points), over_time=True)
    if len(points) > MAX_BARS:
        title = f"{title} ({MAX_BARS} largest of {len(points)})"
        points = sorted(points, key=lambda p: abs(p[1]), reverse=True)[:MAX_BARS]
    return Series(title, points)


def _record_series(
    records: list[dict[Any, Any]], path: list[str], label_column: str | None = None
) -> list[Series]:
    """A series per numeric column, labelled by ``label_column`` (by default
    the first column that holds text in every record)."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    if label_column is None:
        label_column = next(
            (c for c in columns if all(isinstance(r.get(c), str) for r in records)),
            None,
        )
        if label_column is None:
            return []
    series = []
    for column in columns:
        if column == label_column:
            continue
        values = [r.get(column) for r in records]
        if not all(v is None or _is_number(v) for v in values):
            continue
        points = [
            (str(r[label_column]), float(v))
            for r, v in zip(records, values, strict=True)
            if v is not None
        ]
        if len(points) >= 2:
            title = f"{column} by {label_column}" if label_column else str(column)
            series.append(_series([*path, title], points))
    return series[:MAX_SERIES_PER_TABLE]

"""Plan an import of a shop's transaction log: read, validate, classify.

Nothing here touches the database. :func:`plan_transactions` reads a CSV (plain
or gzip), maps its columns onto the importer's fields, reports rows it cannot
read, drops exact duplicate lines and non-product codes, and returns the
merchants, products, customers and feedback events to store. The store side is
``commerce.services.import_transactions``.
"""

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from commerce.errors import ImportFormatError

logger = logging.getLogger(__name__)

FIELDS = (
    "invoice",
    "sku",
    "description",
    "quantity",
    "occurred_at",
    "unit_price",
    "customer",
    "country",
)
REQUIRED_FIELDS = ("invoice", "sku", "quantity", "occurred_at")

# Share of rows a column may fail to parse before the whole file is refused as
# mapped wrongly (a date column mapped onto prices, say).
MAX_BAD_SHARE_PER_COLUMN = 0.5
# Bad rows kept with their line numbers; all of them are counted.
MAX_REPORTED_BAD_ROWS = 100


@dataclass(frozen=True)
class TransactionLayout:
    """How a shop's export maps onto the importer's fields.

    ``columns`` maps each importer field to the file's column name. Fields left
    out of it are absent from the file; only ``REQUIRED_FIELDS`` must be there.
    """

    columns: Mapping[str, str]
    # strftime format of the date column; None reads ISO 8601.
    date_format: str | None = "%Y-%m-%d %H:%M:%S"
    # IANA zone of timestamps written without an offset.
    timezone: str = "Europe/London"
    # Invoices starting with this prefix are cancellations (returns). Empty: a
    # line with a negative quantity is a return.
    cancellation_prefix: str = "C"

    @classmethod
    def online_retail(cls) -> "TransactionLayout":
        """Return the layout of the UCI Online Retail export."""
        return cls(
            columns={
                "invoice": "InvoiceNo",
                "sku": "StockCode",
                "description": "Description",
                "quantity": "Quantity",
                "occurred_at": "InvoiceDate",
                "unit_price": "UnitPrice",
                "customer": "CustomerID",
                "country": "Country",
            }
        )

    @classmethod
    def from_json(cls, path: Path) -> "TransactionLayout":
        """Read a layout file: ``{"columns": {...}, "date_format": ..., ...}``."""
        try:
            spec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ImportFormatError(
                f"Cannot read layout file {path}: {error}"
            ) from error
        if not isinstance(spec, dict) or not isinstance(spec.get("columns"), dict):
            raise ImportFormatError(
                f"Layout file {path} must hold an object with a 'columns' object."
            )
        known = {"columns", "date_format", "timezone", "cancellation_prefix"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ImportFormatError(
                f"Layout file {path} has unknown keys: {', '.join(unknown)}."
            )
        return cls(**spec).validated()

    def with_columns(self, overrides: Mapping[str, str]) -> "TransactionLayout":
        """Return a copy with some fields mapped to other file columns."""
        return replace(self, columns={**self.columns, **overrides}).validated()

    def with_options(self, **options: Any) -> "TransactionLayout":
        """Return a copy with other date, zone or cancellation settings."""
        return replace(self, **options)

    def validated(self) -> "TransactionLayout":
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise ImportFormatError(
                f"Unknown field(s) in the column mapping: {', '.join(unknown)}. "
                f"Fields are: {', '.join(FIELDS)}."
            )
        unmapped = [name for name in REQUIRED_FIELDS if not self.columns.get(name)]
        if unmapped:
            raise ImportFormatError(
                f"The column mapping leaves required field(s) unmapped: "
                f"{', '.join(unmapped)}."
            )
        return self


@dataclass(frozen=True)
class ProductCodeFilter:
    """Stock codes that are not products: exact codes and prefixes, any case."""

    codes: frozenset[str]
    prefixes: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, codes: Iterable[str], prefixes: Iterable[str] = ()
    ) -> "ProductCodeFilter":
        return cls(
            codes=frozenset(code.strip().upper() for code in codes if code.strip()),
            prefixes=tuple(p.strip().upper() for p in prefixes if p.strip()),
        )

    def non_product(self, skus: "pd.Series[str]") -> "pd.Series[bool]":
        """Flag the normalised codes (stripped, upper-cased) that are not products."""
        flagged = skus.isin(self.codes)
        for prefix in self.prefixes:
            flagged |= skus.str.startswith(prefix)
        return flagged


@dataclass(frozen=True)
class BadRow:
    """A row that was not imported, with where and why."""

    line: int
    column: str
    value: str
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "value": self.value,
            "problem": self.problem,
        }

    def __str__(self) -> str:
        return f"line {self.line}: {self.column} {self.value!r} {self.problem}"


@dataclass
class TransactionPlan:
    """What an import will store, and what it counted on the way."""

    # One row per event: client_event_id, kind, quantity, value, occurred_at,
    # customer, session_id, order_id, sku.
    events: pd.DataFrame
    # One row per product: sku, merchant, title, price.
    products: pd.DataFrame
    # One row per customer: customer, country.
    customers: pd.DataFrame
    bad_rows: list[BadRow] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def plan_transactions(
    path: Path,
    *,
    layout: TransactionLayout,
    code_filter: ProductCodeFilter,
    default_merchant: str,
    merchant_by_sku: Mapping[str, str] | None = None,
    include_guests: bool = True,
) -> TransactionPlan:
    """Read ``path`` and plan its import; raise ImportFormatError if unusable.

    Guest lines (no customer) become anonymous events in a session named after
    their invoice, or are skipped when ``include_guests`` is false; either way
    they are counted.
    """
    raw = _read_csv(path, layout)
    lines = _canonical_frame(raw, layout)
    counts: dict[str, int] = {"rows_read": len(raw)}

    parsed, bad_rows, bad = _parse(lines, layout)
    counts["bad_rows"] = int(bad.sum())
    duplicate = raw.duplicated(keep="first") & ~bad
    counts["duplicate_lines"] = int(duplicate.sum())
    counts["distinct_codes_in_file"] = int(raw[layout.columns["sku"]].nunique())
    counts["guest_lines"] = int((lines["customer"] == "").sum())
    cancelled = _is_cancellation(lines, parsed["quantity"], layout)
    counts["cancellation_lines"] = int(cancelled.sum())

    keep = ~bad & ~duplicate
    good = parsed[keep].assign(cancelled=cancelled[keep])
    non_product = code_filter.non_product(good["sku"])
    counts["non_product_lines"] = int(non_product.sum())

    product_lines = good[~non_product]
    quantity = product_lines["quantity"]
    price_ok = product_lines["unit_price"].isna() | (product_lines["unit_price"] >= 0)
    is_return = product_lines["cancelled"] & (quantity != 0) & price_ok
    is_purchase = ~product_lines["cancelled"] & (quantity > 0) & price_ok
    counts["adjustment_lines"] = int((~is_return & ~is_purchase).sum())
    is_guest = product_lines["customer"] == ""
    event_lines = product_lines[is_return | is_purchase].copy()
    event_lines["kind"] = np.where(
        is_return[is_return | is_purchase], "return", "purchase"
    )
    if not include_guests:
        counts["guest_lines_skipped"] = int(
            (is_guest & (is_return | is_purchase)).sum()
        )
        event_lines = event_lines[event_lines["customer"] != ""]
    counts["purchase_lines"] = int((event_lines["kind"] == "purchase").sum())
    counts["return_lines"] = int((event_lines["kind"] == "return").sum())
    counts["guest_events"] = int((event_lines["customer"] == "").sum())

    events = _events(event_lines, raw.loc[event_lines.index])
    products = _products(product_lines, default_merchant, merchant_by_sku or {})
    customers = _customers(good)
    counts["products"] = len(products)
    counts["customers"] = len(customers)
    counts["countries"] = int(good.loc[good["country"] != "", "country"].nunique())
    counts["merchants"] = int(products["merchant"].nunique())
    return TransactionPlan(
        events=events,
        products=products,
        customers=customers,
        bad_rows=bad_rows,
        counts=counts,
    )


def _read_csv(path: Path, layout: TransactionLayout) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8")
    except FileNotFoundError as error:
        raise ImportFormatError(f"No such file: {path}") from error
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeError) as error:
        raise ImportFormatError(
            f"{path} is not a readable CSV file: {error}"
        ) from error
    except (OSError, EOFError) as error:
        raise ImportFormatError(f"Cannot read {path}: {error}") from error

    present = set(header.columns)
    missing = [
        f"{name} (column {column!r})"
        for name, column in layout.columns.items()
        if column and column not in present
    ]
    if missing:
        raise ImportFormatError(
            f"{path} lacks the mapped column(s): {', '.join(missing)}. "
            f"Its columns are: {', '.join(map(str, header.columns))}."
        )
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, UnicodeError, OSError, EOFError) as error:
        raise ImportFormatError(
            f"{path} could not be read to the end: {error}"
        ) from error


def _canonical_frame(raw: pd.DataFrame, layout: TransactionLayout) -> pd.DataFrame:
    lines = pd.DataFrame(index=raw.index)
    for name in FIELDS:
        column = layout.columns.get(name)
        lines[name] = raw[column].str.strip() if column else ""
    lines["sku"] = lines["sku"].str.upper()
    # Customer ids exported through a float column read like "17850.0".
    lines["customer"] = lines["customer"].str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    return lines


def _parse(
    lines: pd.DataFrame, layout: TransactionLayout
) -> tuple[pd.DataFrame, list[BadRow], "pd.Series[bool]"]:
    """Parse typed columns; return the frame, the bad rows and their mask."""
    parsed = lines.copy()
    problems: list[tuple[str, pd.Series, str]] = []

    quantity = pd.to_numeric(lines["quantity"], errors="coerce")
    bad_quantity = ~np.isfinite(quantity) | (quantity != quantity.round())
    problems.append(("quantity", bad_quantity, "is not a whole number"))
    parsed["quantity"] = quantity.where(~bad_quantity, 0).astype("int64")

    if layout.columns.get("unit_price"):
        price = pd.to_numeric(lines["unit_price"], errors="coerce")
        bad_price = ~np.isfinite(price)
        problems.append(("unit_price", bad_price, "is not a number"))
        parsed["unit_price"] = price
    else:
        parsed["unit_price"] = np.nan

    occurred_at = _parse_timestamps(lines["occurred_at"], layout)
    date_problem = f"is not a date in format {layout.date_format or 'ISO 8601'}"
    problems.append(("occurred_at", occurred_at.isna(), date_problem))
    parsed["occurred_at"] = occurred_at

    for name in ("invoice", "sku"):
        problems.append((name, lines[name] == "", "is empty"))

    bad = pd.Series(False, index=lines.index)
    bad_rows: list[BadRow] = []
    for name, mask, problem in problems:
        share = float(mask.mean()) if len(mask) else 0.0
        if share > MAX_BAD_SHARE_PER_COLUMN:
            raise ImportFormatError(
                f"Column {layout.columns[name]!r} (field {name}) {problem} on "
                f"{share:.0%} of rows; check the column mapping and date format."
            )
        for index in mask[mask & ~bad].index[: MAX_REPORTED_BAD_ROWS - len(bad_rows)]:
            bad_rows.append(
                BadRow(
                    line=_line_number(index),
                    column=layout.columns[name],
                    value=str(lines.at[index, name]),
                    problem=problem,
                )
            )
        bad |= mask
    bad_rows.sort(key=lambda row: row.line)
    return parsed, bad_rows, bad


def _parse_timestamps(values: "pd.Series[str]", layout: TransactionLayout) -> pd.Series:
    text_format = layout.date_format or "ISO8601"
    stamps = pd.to_datetime(values, format=text_format, errors="coerce", utc=False)
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize(
            layout.timezone, ambiguous="NaT", nonexistent="shift_forward"
        )
    return stamps.dt.tz_convert("UTC")


def _line_number(index: Any) -> int:
    """Return the file line of a data row: the header is line 1."""
    return int(index) + 2


def _is_cancellation(
    lines: pd.DataFrame, quantity: "pd.Series[int]", layout: TransactionLayout
) -> "pd.Series[bool]":
    if layout.cancellation_prefix:
        return lines["invoice"].str.startswith(layout.cancellation_prefix)
    return quantity < 0


def _events(event_lines: pd.DataFrame, raw_lines: pd.DataFrame) -> pd.DataFrame:
    quantity = event_lines["quantity"].abs()
    value = (quantity * event_lines["unit_price"]).round(4)
    guest = event_lines["customer"] == ""
    return pd.DataFrame(
        {
            "client_event_id": _line_fingerprints(raw_lines),
            "kind": event_lines["kind"],
            "quantity": quantity,
            "value": value,
            "occurred_at": event_lines["occurred_at"],
            "customer": event_lines["customer"],
            "session_id": np.where(guest, "guest:" + event_lines["invoice"], ""),
            "order_id": event_lines["invoice"],
            "sku": event_lines["sku"],
        },
        index=event_lines.index,
    )


def _line_fingerprints(raw_lines: pd.DataFrame) -> list[str]:
    """Hash each line's exact text, so re-importing a line finds its event."""
    joined = raw_lines.iloc[:, 0].str.cat(raw_lines.iloc[:, 1:], sep="\x1f")
    return [hashlib.sha256(line.encode()).hexdigest()[:40] for line in joined]


def _products(
    product_lines: pd.DataFrame,
    default_merchant: str,
    merchant_by_sku: Mapping[str, str],
) -> pd.DataFrame:
    """One product per code; its title is the most frequent non-empty description."""
    described = product_lines[product_lines["description"] != ""]
    title_counts = (
        described.groupby(["sku", "description"]).size().reset_index(name="lines")
    )
    titles = (
        title_counts.sort_values(
            ["sku", "lines", "description"], ascending=[True, False, True]
        )
        .drop_duplicates("sku")
        .set_index("sku")["description"]
    )

    priced = product_lines[
        ~product_lines["cancelled"]
        & (product_lines["quantity"] > 0)
        & (product_lines["unit_price"] > 0)
    ]
    prices = (
        priced.sort_values("occurred_at", kind="stable")
        .groupby("sku")["unit_price"]
        .last()
    )

    skus = pd.Index(sorted(product_lines["sku"].unique()), name="sku")
    products = pd.DataFrame(index=skus)
    products["title"] = titles.reindex(skus)
    products["title"] = products["title"].fillna(pd.Series(skus, index=skus))
    products["price"] = prices.reindex(skus)
    products["merchant"] = [merchant_by_sku.get(sku, default_merchant) for sku in skus]
    return products.reset_index()


def _customers(lines: pd.DataFrame) -> pd.DataFrame:
    """One customer per id; the country is the one on most of their lines."""
    known = lines[lines["customer"] != ""]
    country_counts = known.groupby(["customer", "country"]).size().reset_index(name="n")
    return (
        country_counts.sort_values(
            ["customer", "n", "country"], ascending=[True, False, True]
        )
        .drop_duplicates("customer")[["customer", "country"]]
        .reset_index(drop=True)
    )


def read_merchant_map(path: Path) -> dict[str, str]:
    """Read a CSV with columns ``sku`` and ``merchant``: which merchant sells what."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ImportFormatError(f"Cannot read merchant map {path}: {error}") from error
    if not {"sku", "merchant"} <= set(table.columns):
        raise ImportFormatError(
            f"Merchant map {path} needs columns 'sku' and 'merchant'; "
            f"it has: {', '.join(table.columns)}."
        )
    table = table[
        (table["sku"].str.strip() != "") & (table["merchant"].str.strip() != "")
    ]
    return dict(
        zip(
            table["sku"].str.strip().str.upper(),
            table["merchant"].str.strip(),
            strict=True,
        )
    )

"""The log an audit reads: a window's slates, slate items and events as frames."""

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

SLATE_COLUMNS = {"slate": "int64", "customer_id": "Int64"}
SLATE_ITEM_COLUMNS = {"slate": "int64", "product_id": "int64", "position": "int64"}
EVENT_COLUMNS = {
    "kind": "str",
    "customer_id": "Int64",
    "product_id": "int64",
    "slate": "Int64",
    "slate_position": "Int64",
    "order_id": "str",
    "quantity": "int64",
    "value": "float64",
    "occurred_at": "int64",
}
PRODUCT_COLUMNS = {
    "product_id": "int64",
    "merchant_id": "int64",
    "eligible": "bool",
    "sku": "str",
    "title": "str",
    "merchant": "str",
}
CUSTOMER_GROUP_COLUMNS = {"customer_id": "int64", "attribute": "str", "value": "str"}
CUSTOMER_COLUMNS = {"customer_id": "int64", "external_id": "str"}

EVENT_DEFAULTS: dict[str, Any] = {
    "customer_id": pd.NA,
    "slate": pd.NA,
    "slate_position": pd.NA,
    "order_id": "",
    "quantity": 1,
    "value": float("nan"),
}
PRODUCT_DEFAULTS: dict[str, Any] = {"sku": "", "title": "", "merchant": ""}


class TargetNames:
    """How a flag's summary names its targets: products by SKU and title,
    customers and merchants by the shop's own ids. A target the log does not
    name is ``#`` and its database id."""

    def __init__(self, products: pd.DataFrame, customers: pd.DataFrame) -> None:
        self._products: dict[int, tuple[str, str]] = {
            int(product_id): (str(sku), str(title))
            for product_id, sku, title in zip(
                products["product_id"], products["sku"], products["title"], strict=True
            )
            if sku
        }
        self._merchants: dict[int, str] = {
            int(merchant_id): str(merchant)
            for merchant_id, merchant in zip(
                products["merchant_id"], products["merchant"], strict=True
            )
            if merchant
        }
        self._customers: dict[int, str] = {
            int(customer_id): str(external_id)
            for customer_id, external_id in zip(
                customers["customer_id"], customers["external_id"], strict=True
            )
            if external_id
        }

    def product(self, product_id: Any) -> str:
        """``85123A (WHITE HANGING HEART T-LIGHT HOLDER)``."""
        if int(product_id) not in self._products:
            return f"#{product_id}"
        sku, title = self._products[int(product_id)]
        return f"{sku} ({title})" if title else sku

    def customer(self, customer_id: Any) -> str:
        return self._customers.get(int(customer_id), f"#{customer_id}")

    def merchant(self, merchant_id: Any) -> str:
        return self._merchants.get(int(merchant_id), f"#{merchant_id}")


@dataclass(frozen=True)
class AuditLog:
    """The slates served in a window and the feedback events around them.

    Build it with ``AuditLog.build``, which fixes the columns and their types:

    - ``slates``: ``slate`` (0 to n-1, the row's own number) and
      ``customer_id`` (missing for anonymous sessions).
    - ``slate_items``: ``slate``, ``product_id``, ``position`` (from 1).
    - ``events``: ``kind``, ``customer_id``, ``product_id``, ``slate`` and
      ``slate_position`` (missing unless the event names a slate of the
      window), ``order_id`` (empty when none), ``quantity``, ``value``
      (money, or stars for ratings; NaN when absent) and ``occurred_at``
      (Unix seconds).
    - ``products``: the whole catalogue, ``product_id``, ``merchant_id``,
      ``eligible`` (active, in stock, merchant active), and the names a person
      reads: ``sku``, ``title`` and ``merchant`` (the merchant's external id),
      empty when not known.
    - ``customer_groups``: ``customer_id``, ``attribute``, ``value``, one row
      per group a customer of the window belongs to.
    - ``customers``: ``customer_id`` and ``external_id`` (the shop's id) of
      the customers of the window; it may be empty, and flags then name
      customers by database id.

    ``window`` is the audited ``[start, end)`` in Unix seconds, when known;
    events linked to the window's slates may lie outside it.
    """

    slates: pd.DataFrame
    slate_items: pd.DataFrame
    events: pd.DataFrame
    products: pd.DataFrame
    customer_groups: pd.DataFrame
    customers: pd.DataFrame
    window: tuple[int, int] | None = None

    @cached_property
    def names(self) -> TargetNames:
        return TargetNames(self.products, self.customers)

    @classmethod
    def build(
        cls,
        *,
        slates: Any = (),
        slate_items: Any = (),
        events: Any = (),
        products: Any = (),
        customer_groups: Any = (),
        customers: Any = (),
        window: tuple[int, int] | None = None,
    ) -> "AuditLog":
        """Make a log from frames or lists of dicts; events may omit optional
        columns. A purchase or return reported twice under one order id (by
        an import and again by the shop's API) is kept once."""
        return cls(
            slates=_frame(slates, SLATE_COLUMNS),
            slate_items=_frame(slate_items, SLATE_ITEM_COLUMNS),
            events=drop_repeated_order_lines(
                _frame(events, EVENT_COLUMNS, EVENT_DEFAULTS)
            ),
            products=_frame(products, PRODUCT_COLUMNS, PRODUCT_DEFAULTS),
            customer_groups=_frame(customer_groups, CUSTOMER_GROUP_COLUMNS),
            customers=_frame(customers, CUSTOMER_COLUMNS),
            window=window,
        )


def drop_repeated_order_lines(events: pd.DataFrame) -> pd.DataFrame:
    """Keep one purchase (or return) per order and product, the one linked to
    a slate if any; events without an order id are all kept."""
    ordered = (events["order_id"] != "") & events["kind"].isin(("purchase", "return"))
    if not ordered.any():
        return events
    lines = events[ordered].sort_values("slate", na_position="last", kind="stable")
    repeated = lines.duplicated(["kind", "order_id", "product_id"])
    if not repeated.any():
        return events
    return events.drop(index=lines.index[repeated.to_numpy()]).reset_index(drop=True)


def _frame(
    rows: Any, columns: dict[str, str], defaults: dict[str, Any] | None = None
) -> pd.DataFrame:
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in columns:
        if column not in frame:
            frame[column] = (defaults or {}).get(column, pd.NA)
    frame = frame[list(columns)]
    if "order_id" in frame:
        frame["order_id"] = frame["order_id"].fillna("")
    return frame.astype(columns).reset_index(drop=True)

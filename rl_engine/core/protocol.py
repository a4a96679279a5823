"""Turn purchase lines into baskets, periods and evaluation cases.

This module fixes the ``online-retail-next-basket-v1`` protocol: which raw lines are
purchases, how they group into baskets, where the periods split, which baskets are
evaluation cases, what each case's history and target items are, and which
interface a recommender offers to be evaluated. Items are integer indices into an
:class:`ItemVocabulary` whose order is the item ids' order, so every ranking is a
row of a (cases x items) matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

PROTOCOL_NAME = "online-retail-next-basket-v1"

Target = Literal["all", "new"]
TARGETS: tuple[Target, ...] = ("all", "new")

PeriodName = Literal["train", "validation", "test"]

LINE_COLUMNS = ("customer", "item", "basket", "occurred_at")
"""Canonical columns of a purchase-line frame."""

NON_PRODUCT_CODES = frozenset(
    {
        "POST",
        "DOT",
        "M",
        "D",
        "C2",
        "CRUK",
        "PADS",
        "S",
        "B",
        "BANK CHARGES",
        "AMAZONFEE",
    }
)
"""Normalised StockCodes of postage, fees, discounts and other non-product lines."""

NON_PRODUCT_PREFIXES = ("GIFT_", "DCGS")
"""Prefixes of normalised StockCodes that are not products."""

VALIDATION_START = np.datetime64("2011-10-01")
"""Default first moment of validation."""

TEST_START = np.datetime64("2011-11-01")
"""Default first moment of test."""

POPULARITY_WINDOW = np.timedelta64(30, "D")
"""How far before a period's start basket counts make the popularity ranking."""


def read_online_retail(path: str | Path) -> pd.DataFrame:
    """Read the raw UCI Online Retail CSV, every column as text."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def purchase_lines(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep the raw Online Retail lines that are product purchases.

    A purchase has a CustomerID, an InvoiceNo that does not start with ``C``
    (a cancellation), a positive Quantity and UnitPrice, and a StockCode that,
    stripped and upper-cased, is a product. The result has the canonical columns
    of :data:`LINE_COLUMNS`; the item id is the normalised StockCode.
    """
    stock_code = raw["StockCode"].str.strip().str.upper()
    customer = raw["CustomerID"].str.strip()
    invoice = raw["InvoiceNo"].str.strip()
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce")
    unit_price = pd.to_numeric(raw["UnitPrice"], errors="coerce")

    is_product = ~stock_code.isin(NON_PRODUCT_CODES) & ~stock_code.str.startswith(
        NON_PRODUCT_PREFIXES
    )
    is_purchase = (
        (customer != "")
        & ~invoice.str.startswith("C")
        & (quantity > 0)
        & (unit_price > 0)
        & is_product
    )

    lines = pd.DataFrame(
        {
            "customer": customer[is_purchase],
            "item": stock_code[is_purchase],
            "basket": invoice[is_purchase],
            "occurred_at": pd.to_datetime(
                raw["InvoiceDate"][is_purchase], format="%Y-%m-%d %H:%M:%S"
            ),
        }
    ).reset_index(drop=True)
    logger.info(
        "Kept %d of %d Online Retail lines as purchases",
        len(lines),
        len(raw),
        extra={"purchase_lines": len(lines), "raw_lines": len(raw)},
    )
    return lines


@dataclass(frozen=True, eq=False)
class ItemVocabulary:
    """Map item ids to integer indices; index order is the ids' sort order."""

    ids: np.ndarray
    """Sorted, distinct item ids; an item's index is its position here."""

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, ids: Iterable[str]) -> np.ndarray:
        """Return the index of every id; raise KeyError for an unknown one."""
        wanted = np.asarray(list(ids), dtype=object)
        positions = np.searchsorted(self.ids, wanted)
        clipped = np.minimum(positions, len(self.ids) - 1)
        unknown = (positions >= len(self.ids)) | (self.ids[clipped] != wanted)
        if unknown.any():
            raise KeyError(f"unknown item ids: {list(wanted[unknown][:5])}")
        return positions

    def id_of(self, indices: np.ndarray) -> np.ndarray:
        """Return the item ids at the given indices."""
        return self.ids[indices]


@dataclass(frozen=True, eq=False)
class BasketLog:
    """All baskets in chronological order: by time, then by basket id."""

    basket_ids: np.ndarray
    """Invoice number of every basket."""
    customer_ids: np.ndarray
    """Customer id of every basket."""
    customer_codes: np.ndarray
    """Integer code of every basket's customer, equal codes for equal customers."""
    times: np.ndarray
    """Time of every basket (datetime64): the earliest time of its lines."""
    items: sp.csr_array
    """(baskets x items) matrix, 1.0 where the basket holds the item."""
    vocabulary: ItemVocabulary

    @property
    def n_baskets(self) -> int:
        return len(self.basket_ids)

    @property
    def n_items(self) -> int:
        return len(self.vocabulary)

    def before(self, moment: np.datetime64) -> np.ndarray:
        """Return the mask of baskets strictly before ``moment``."""
        return self.times < moment


def build_baskets(lines: pd.DataFrame) -> BasketLog:
    """Group purchase lines into baskets: the distinct items of one invoice.

    A basket's time is its invoice's earliest line time and its customer the
    invoice's customer. Raise ValueError if an invoice names several customers.
    """
    item_codes, item_ids = pd.factorize(lines["item"], sort=True)
    basket_codes, basket_ids = pd.factorize(lines["basket"])

    per_basket = (
        pd.DataFrame(
            {
                "basket_code": basket_codes,
                "customer": lines["customer"].to_numpy(),
                "occurred_at": lines["occurred_at"].to_numpy(),
            }
        )
        .groupby("basket_code", sort=True)
        .agg(
            customer=("customer", "first"),
            customers=("customer", "nunique"),
            occurred_at=("occurred_at", "min"),
        )
    )
    shared = per_basket["customers"] > 1
    if shared.any():
        raise ValueError(
            f"{int(shared.sum())} invoices name several customers, e.g. "
            f"{basket_ids[per_basket.index[shared][0]]}"
        )
    per_basket["basket"] = np.asarray(basket_ids, dtype=object)[per_basket.index]
    per_basket = per_basket.sort_values(["occurred_at", "basket"], kind="stable")

    chronological_row = np.empty(len(per_basket), dtype=np.int64)
    chronological_row[per_basket.index.to_numpy()] = np.arange(len(per_basket))
    items = sp.csr_array(
        (
            np.ones(len(lines)),
            (chronological_row[basket_codes], item_codes),
        ),
        shape=(len(per_basket), len(item_ids)),
    )
    items.sum_duplicates()
    items.data[:] = 1.0

    customer_ids = per_basket["customer"].to_numpy(dtype=object)
    customer_codes, _ = pd.factorize(customer_ids)
    log = BasketLog(
        basket_ids=per_basket["basket"].to_numpy(dtype=object),
        customer_ids=customer_ids,
        customer_codes=customer_codes.astype(np.int64),
        times=per_basket["occurred_at"].to_numpy(dtype="datetime64[ns]"),
        items=items,
        vocabulary=ItemVocabulary(ids=np.asarray(item_ids, dtype=object)),
    )
    logger.info(
        "Built %d baskets of %d items for %d customers",
        log.n_baskets,
        log.n_items,
        len(np.unique(customer_codes)),
        extra={"baskets": log.n_baskets, "items": log.n_items},
    )
    return log


@dataclass(frozen=True)
class Period:
    """A half-open time span ``[start, end)``; ``None`` leaves a side open."""

    name: str
    start: np.datetime64 | None
    end: np.datetime64 | None

    def contains(self, times: np.ndarray) -> np.ndarray:
        """Return the mask of ``times`` inside the period."""
        inside = np.ones(len(times), dtype=bool)
        if self.start is not None:
            inside &= times >= self.start
        if self.end is not None:
            inside &= times < self.end
        return inside


@dataclass(frozen=True)
class SplitBoundaries:
    """Dates that cut the baskets into train, validation and test periods."""

    validation_start: np.datetime64 = VALIDATION_START
    """First moment of validation; train is everything before it."""
    test_start: np.datetime64 = TEST_START
    """First moment of test; validation ends here and test runs to the end."""

    def period(self, name: PeriodName) -> Period:
        """Return the named period."""
        spans: dict[str, tuple[np.datetime64 | None, np.datetime64 | None]] = {
            "train": (None, self.validation_start),
            "validation": (self.validation_start, self.test_start),
            "test": (self.test_start, None),
        }
        if name not in spans:
            raise ValueError(f"unknown period {name!r}; expected one of {list(spans)}")
        start, end = spans[name]
        return Period(name=name, start=start, end=end)


def recent_popularity(
    log: BasketLog, before: np.datetime64, window: np.timedelta64 = POPULARITY_WINDOW
) -> np.ndarray:
    """Count, per item, the baskets holding it in ``[before - window, before)``."""
    in_window = log.before(before) & (log.times >= before - window)
    return np.asarray(log.items[np.flatnonzero(in_window)].sum(axis=0)).ravel()


def tiebreak_order(popularity: np.ndarray) -> np.ndarray:
    """Return item indices by descending popularity, then ascending item id.

    This is the protocol's rule for equal scores; item index order is item id order.
    """
    return np.lexsort((np.arange(len(popularity)), -popularity))


@dataclass(frozen=True, eq=False)
class CaseBatch:
    """Evaluation cases of one period and target; every field is aligned by case.

    A case is a basket, in the period, of a customer who has a basket strictly
    earlier. Its history is all of the customer's baskets strictly earlier, from
    any period.
    """

    log: BasketLog
    period: Period
    target: Target
    baskets: np.ndarray
    """Log row of each case's basket, in chronological order."""
    history: sp.csr_array
    """(cases x log baskets): each history basket's 1-based position in the case
    history, oldest first; its columns run in chronological order."""
    targets: sp.csr_array
    """(cases x items), 1.0 on the items the ranking should recover."""
    excluded: sp.csr_array | None
    """(cases x items), 1.0 on items removed from every ranking; None if none are."""

    @property
    def n_cases(self) -> int:
        return len(self.baskets)

    @property
    def n_items(self) -> int:
        return self.log.n_items

    @property
    def customer_codes(self) -> np.ndarray:
        """Return each case's customer code: the clusters of paired comparisons."""
        return self.log.customer_codes[self.baskets]

    @property
    def times(self) -> np.ndarray:
        """Return each case's basket time."""
        return self.log.times[self.baskets]

    @property
    def history_length(self) -> np.ndarray:
        """Return the number of history baskets of each case."""
        return np.diff(self.history.indptr)

    @property
    def purchase_counts(self) -> sp.csr_array:
        """Return (cases x items): how many history baskets hold the item."""
        return self._purchase_summary[0]

    @property
    def last_purchase(self) -> sp.csr_array:
        """Return (cases x items): the history position of the latest basket with
        the item (1 = oldest basket); absent where the customer never bought it."""
        return self._purchase_summary[1]

    def recent_item_counts(self, last_baskets: int) -> sp.csr_array:
        """Return (cases x items): how many of the last ``last_baskets`` history
        baskets hold the item."""
        first_kept = np.repeat(self.history_length - last_baskets, self.history_length)
        kept = self.history.data > first_kept
        rows = np.repeat(np.arange(self.n_cases), self.history_length)[kept]
        recent = sp.csr_array(
            (np.ones(int(kept.sum())), (rows, self.history.indices[kept])),
            shape=self.history.shape,
        )
        return sp.csr_array(recent @ self.log.items)

    def dense_targets(self) -> np.ndarray:
        """Return the targets as a dense boolean (cases x items) array."""
        return self.targets.toarray() > 0

    @cached_property
    def _purchase_summary(self) -> tuple[sp.csr_array, sp.csr_array]:
        rows, items, positions = _history_item_events(self.history, self.log.items)
        shape = (self.n_cases, self.n_items)

        # Events run by case and then by position; a stable sort on (case, item)
        # keeps that order, so each group's last event is the latest purchase.
        key = rows * self.n_items + items
        by_key = np.argsort(key, kind="stable")
        sorted_key = key[by_key]
        group_end = np.flatnonzero(np.r_[sorted_key[1:] != sorted_key[:-1], True])
        group_size = np.diff(np.r_[-1, group_end])
        latest = by_key[group_end]

        counts = sp.csr_array(
            (group_size.astype(np.float64), (rows[latest], items[latest])), shape=shape
        )
        last = sp.csr_array(
            (positions[latest].astype(np.float64), (rows[latest], items[latest])),
            shape=shape,
        )
        return counts, last


def _history_item_events(
    history: sp.csr_array, basket_items: sp.csr_array
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expand every (case, history basket) into one event per item of the basket.

    Return the case row, item index and history position of every event, ordered
    by case and then by position.
    """
    n_cases = history.shape[0]
    per_case = np.diff(history.indptr)
    sizes = np.diff(basket_items.indptr)[history.indices]
    entry_rows = np.repeat(np.arange(n_cases), per_case)

    offsets = _ragged_offsets(sizes)
    item_slots = np.repeat(basket_items.indptr[history.indices], sizes) + offsets
    return (
        np.repeat(entry_rows, sizes),
        basket_items.indices[item_slots].astype(np.int64),
        np.repeat(history.data, sizes).astype(np.int64),
    )


def _ragged_offsets(lengths: np.ndarray) -> np.ndarray:
    """Return 0..n-1 for each length n, concatenated."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def build_cases(log: BasketLog, period: Period, target: Target = "all") -> CaseBatch:
    """Build the evaluation cases of ``period`` for ``target``.

    For ``"all"``, the target is the whole basket. For ``"new"``, it is the
    basket's items the customer never bought before; cases with none are skipped
    and every item the customer bought before is excluded from the ranking.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")

    baskets, history = _cases_with_history(log, period)
    targets = sp.csr_array(log.items[baskets])
    cases = CaseBatch(
        log=log,
        period=period,
        target="all",
        baskets=baskets,
        history=history,
        targets=targets,
        excluded=None,
    )
    if target == "all":
        return cases

    bought = cases.purchase_counts.copy()
    bought.data[:] = 1.0
    new_items = sp.csr_array(targets - targets * bought)
    new_items.eliminate_zeros()
    keep = np.flatnonzero(np.diff(new_items.indptr) > 0)
    return CaseBatch(
        log=log,
        period=period,
        target="new",
        baskets=baskets[keep],
        history=sp.csr_array(history[keep]),
        targets=sp.csr_array(new_items[keep]),
        excluded=sp.csr_array(bought[keep]),
    )


def _cases_with_history(
    log: BasketLog, period: Period
) -> tuple[np.ndarray, sp.csr_array]:
    """Find the period's baskets that have an earlier basket of their customer.

    Return their log rows and the (cases x log baskets) history matrix.
    """
    n = log.n_baskets
    positions = np.arange(n)
    # Log rows are chronological, so this groups by customer in time order.
    by_customer = np.lexsort((positions, log.customer_codes))
    customer = log.customer_codes[by_customer]
    time = log.times[by_customer]

    new_customer = np.r_[True, customer[1:] != customer[:-1]]
    new_moment = new_customer | np.r_[True, time[1:] != time[:-1]]
    customer_start = np.maximum.accumulate(np.where(new_customer, positions, 0))
    moment_start = np.maximum.accumulate(np.where(new_moment, positions, 0))
    earlier_count = moment_start - customer_start

    sorted_position = np.empty(n, dtype=np.int64)
    sorted_position[by_customer] = positions
    candidate = np.flatnonzero(period.contains(log.times))
    is_case = earlier_count[sorted_position[candidate]] > 0
    baskets = candidate[is_case]

    case_position = sorted_position[baskets]
    lengths = earlier_count[case_position]
    offsets = _ragged_offsets(lengths)
    columns = by_customer[np.repeat(customer_start[case_position], lengths) + offsets]
    history = sp.csr_array(
        (
            (offsets + 1).astype(np.float64),
            columns,
            np.r_[0, np.cumsum(lengths)],
        ),
        shape=(len(baskets), n),
    )
    return baskets, history


class Recommender(Protocol):
    """What the harness evaluates: a model fitted before a period, then scored.

    ``fit`` may read only the baskets strictly before ``before``; ``score`` may
    also read each case's history, which can reach into the evaluated period.
    """

    name: str
    """Key of the model's results, e.g. ``"repeat"`` or ``"policy"``."""

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        """Fit the model's parameters on the baskets strictly before ``before``."""
        ...

    def score(self, cases: CaseBatch) -> np.ndarray:
        """Return a float (cases x items) matrix; higher ranks first.

        The harness removes ``cases.excluded`` items and breaks equal scores by
        the protocol's :func:`tiebreak_order`.
        """
        ...

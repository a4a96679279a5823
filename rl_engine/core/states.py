"""What the Q-network sees of a customer: the state, built from the basket log.

A state is a customer at a moment, just before a basket: the items of their
history with kinds of recency, how often and how recently they bought each item,
the items of their last baskets (which seed co-occurrence), and a few context
numbers. Every array is a copy owned by the batch, aligned by state.
"""

from dataclasses import dataclass, fields
from typing import Self

import numpy as np
import scipy.sparse as sp

from rl_engine.core.config import PolicyConfig
from rl_engine.core.protocol import BasketLog, _history_item_events

DAY = np.timedelta64(1, "D")

REPEAT_FEATURES = (
    "log_count",
    "basket_share",
    "recency_30d",
    "recency_120d",
    "recency_365d",
    "in_last_basket",
    "baskets_since",
    "share_last_3",
    "share_last_10",
    "log_days_since",
    "log_interval",
    "overdue",
    "has_interval",
)
CONTEXT_FEATURES = ("log_baskets", "log_days_since_last", "log_days_since_first")


@dataclass(frozen=True, eq=False)
class StateBatch:
    """States aligned by row. Item slots past a row's length hold ``n_items``."""

    sequence_items: np.ndarray
    """(n, sequence_length) last history items, oldest first, left-padded."""
    sequence_ages: np.ndarray
    """(n, sequence_length) log1p of each of those items' age in days."""
    history_items: np.ndarray
    """(n, max_history_items) distinct history items, most bought first."""
    repeat_features: np.ndarray
    """(n, max_history_items, len(REPEAT_FEATURES)) per history item."""
    recent_items: np.ndarray
    """(n, max_recent_items) items of the last few baskets."""
    recent_counts: np.ndarray
    """(n, max_recent_items) how many of those baskets hold each."""
    context: np.ndarray
    """(n, len(CONTEXT_FEATURES)) history size and time since first and last."""
    popularity_slot: np.ndarray
    """(n,) row of the popularity table in force at the state's time."""

    def __len__(self) -> int:
        return len(self.popularity_slot)

    def take(self, rows: np.ndarray) -> Self:
        """Return a new batch holding copies of ``rows``."""
        return type(self)(
            **{f.name: getattr(self, f.name)[rows].copy() for f in fields(self)}
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, eq=False)
class PopularityTable:
    """Baskets per item over a trailing window, snapshotted weekly."""

    moments: np.ndarray
    """(snapshots,) datetime64 moment of each snapshot, ascending."""
    counts: np.ndarray
    """(snapshots, items) baskets holding the item in the window before it."""
    recent: np.ndarray | None = None
    """(snapshots, items) the same over the short window; None if not counted."""

    def slot(self, times: np.ndarray) -> np.ndarray:
        """Return the latest snapshot at or before each time (the first if none)."""
        return np.maximum(np.searchsorted(self.moments, times, side="right") - 1, 0)


def popularity_table(
    log: BasketLog, until: np.datetime64, window_days: int, recent_days: int = 7
) -> PopularityTable:
    """Snapshot popularity weekly from the log's start up to ``until`` inclusive.

    Each snapshot counts baskets over ``window_days`` and, as ``recent``, over
    the shorter ``recent_days`` before it.
    """
    fitted = log.before(until)
    start = log.times[fitted].min() if fitted.any() else until
    moments = np.arange(start, until, np.timedelta64(7, "D")).astype("datetime64[s]")
    moments = np.append(moments, until.astype("datetime64[s]"))

    def counts(days: int) -> np.ndarray:
        window = np.timedelta64(days, "D")
        rows = []
        for moment in moments:
            inside = (log.times < moment) & (log.times >= moment - window)
            rows.append(
                np.asarray(log.items[np.flatnonzero(inside)].sum(axis=0)).ravel()
            )
        return np.vstack(rows).astype(np.float32)

    return PopularityTable(
        moments=moments, counts=counts(window_days), recent=counts(recent_days)
    )


def encode_states(
    log: BasketLog,
    history: sp.csr_array,
    times: np.ndarray,
    *,
    popularity: PopularityTable,
    config: PolicyConfig,
) -> StateBatch:
    """Encode one state per row of ``history``.

    ``history`` is (states x log baskets) with each basket's 1-based position in
    the state's history as its value and columns in chronological order, as
    ``CaseBatch.history``. ``times`` is each state's moment; ages count back
    from it.
    """
    n, n_items = history.shape[0], log.n_items
    rows, items, positions = _history_item_events(history, log.items)
    baskets = history.indices[history.indptr[rows] + positions - 1]
    ages = np.maximum((times[rows] - log.times[baskets]) / DAY, 0.0)
    history_length = np.diff(history.indptr)

    sequence_items, sequence_ages = _last_events(
        rows, items, ages, n, config.sequence_length, n_items
    )
    history_items, repeat_features = _repeat_features(
        rows, items, positions, ages, history_length, config.max_history_items, n_items
    )
    recent = positions > (history_length[rows] - config.recent_baskets)
    recent_items, recent_counts, _ = _grouped_by_item(
        rows[recent], items[recent], n, config.max_recent_items, n_items
    )

    first = log.times[history.indices[history.indptr[:-1]]]
    last = log.times[history.indices[history.indptr[1:] - 1]]
    context = np.stack(
        [
            np.log1p(history_length),
            np.log1p(np.maximum((times - last) / DAY, 0.0)),
            np.log1p(np.maximum((times - first) / DAY, 0.0)),
        ],
        axis=1,
    ).astype(np.float32)
    return StateBatch(
        sequence_items=sequence_items,
        sequence_ages=sequence_ages,
        history_items=history_items,
        repeat_features=repeat_features,
        recent_items=recent_items,
        recent_counts=recent_counts.astype(np.float32),
        context=context,
        popularity_slot=popularity.slot(times),
    )


def _row_offsets(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return each entry's index within its row, and the rows' sizes."""
    sizes = np.bincount(rows, minlength=n)
    starts = np.cumsum(sizes) - sizes
    return np.arange(len(rows)) - starts[rows], sizes


def _last_events(
    rows: np.ndarray,
    items: np.ndarray,
    ages: np.ndarray,
    n: int,
    length: int,
    pad: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Right-align each row's last ``length`` events (rows are sorted by row)."""
    index, sizes = _row_offsets(rows, n)
    slot = length - (sizes[rows] - index)
    kept = slot >= 0
    sequence_items = np.full((n, length), pad, dtype=np.int64)
    sequence_ages = np.zeros((n, length), dtype=np.float32)
    sequence_items[rows[kept], slot[kept]] = items[kept]
    sequence_ages[rows[kept], slot[kept]] = np.log1p(ages[kept])
    return sequence_items, sequence_ages


def _grouped_by_item(
    rows: np.ndarray, items: np.ndarray, n: int, width: int, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count events per (row, item); keep each row's ``width`` most frequent.

    Return the (n, width) items and counts, and for every kept group the index
    of its last event in the input order.
    """
    key = rows * (pad + 1) + items
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    group_end = np.flatnonzero(np.r_[sorted_key[1:] != sorted_key[:-1], True])
    counts = np.diff(np.r_[-1, group_end])
    last_event = order[group_end]
    group_rows, group_items = rows[last_event], items[last_event]

    # Most frequent first, then most recent (later events have larger indices).
    rank = np.lexsort((-last_event, -counts, group_rows))
    group_rows, group_items = group_rows[rank], group_items[rank]
    counts, last_event = counts[rank], last_event[rank]
    index, _ = _row_offsets(group_rows, n)
    kept = index < width

    kept_items = np.full((n, width), pad, dtype=np.int64)
    kept_counts = np.zeros((n, width), dtype=np.float64)
    kept_items[group_rows[kept], index[kept]] = group_items[kept]
    kept_counts[group_rows[kept], index[kept]] = counts[kept]
    last = np.full((n, width), -1, dtype=np.int64)
    last[group_rows[kept], index[kept]] = last_event[kept]
    return kept_items, kept_counts, last


def _repeat_features(
    rows: np.ndarray,
    items: np.ndarray,
    positions: np.ndarray,
    ages: np.ndarray,
    history_length: np.ndarray,
    width: int,
    pad: int,
) -> tuple[np.ndarray, np.ndarray]:
    n = len(history_length)
    history_items, counts, last_event = _grouped_by_item(rows, items, n, width, pad)
    present = last_event >= 0
    safe_last = np.where(present, last_event, 0)
    last_age = np.where(present, ages[safe_last], np.inf)
    baskets_since = np.where(
        present, history_length[:, None] - positions[safe_last], np.inf
    )

    # Per kept (row, item) slot: events in the last baskets and the first age.
    slot_keys = np.arange(n)[:, None] * (pad + 1) + history_items
    flat_keys = slot_keys.ravel()
    by_key = np.argsort(flat_keys, kind="stable")
    event_keys = rows * (pad + 1) + items
    found = np.minimum(np.searchsorted(flat_keys[by_key], event_keys), len(by_key) - 1)
    kept = (flat_keys[by_key][found] == event_keys) & (items < pad)
    slot = by_key[found[kept]]
    back = history_length[rows[kept]] - positions[kept]
    size = n * width
    last_3 = np.bincount(slot, weights=back < 3, minlength=size).reshape(n, width)
    last_10 = np.bincount(slot, weights=back < 10, minlength=size).reshape(n, width)
    first_flat = np.zeros(size)
    np.maximum.at(first_flat, slot, ages[kept])
    first_age = first_flat.reshape(n, width)

    finite_last = np.where(present, last_age, 0.0)
    repeated = present & (counts > 1)
    interval = np.where(
        repeated, (first_age - finite_last) / np.maximum(counts - 1, 1), 0.0
    )
    log_interval = np.log1p(np.maximum(interval, 0.0))
    log_since = np.log1p(finite_last)
    features = np.stack(
        [
            np.log1p(counts),
            counts / np.maximum(history_length[:, None], 1),
            np.exp(-last_age / 30.0),
            np.exp(-last_age / 120.0),
            np.exp(-last_age / 365.0),
            (baskets_since == 0).astype(np.float64),
            1.0 / (1.0 + baskets_since),
            last_3 / np.minimum(np.maximum(history_length[:, None], 1), 3),
            last_10 / np.minimum(np.maximum(history_length[:, None], 1), 10),
            log_since / 6.0,
            log_interval / 6.0,
            np.where(repeated, np.clip(log_since - log_interval, -3.0, 3.0), 0.0),
            repeated.astype(np.float64),
        ],
        axis=-1,
    )
    features[~present] = 0.0
    return history_items, features.astype(np.float32)

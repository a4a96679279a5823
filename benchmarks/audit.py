"""Time one governance audit over a day of a million served slate items.

Run from the project root: ``.venv/bin/python benchmarks/audit.py``. It makes
a scratch database on the configured server, synthesises a day of traffic and
loads it with COPY: 100,000 slates of ten items, an impression per item,
clicks, purchases, returns, ratings and organic purchases. Two faults are
injected: 500 fake clicks on one product in ten minutes, and a product shown
first in a third of the slates that comes back one time in two. It prints:

- the time to synthesise and load that day (not part of the audit);
- a floor: COPY of the same slate items and events out of the server,
  unparsed;
- ``run_audit`` over the day, per stage (loading the log, each section,
  storing the flags) and in total, against the goal of 60 s;
- whether the two faults were flagged, and the headline metrics.

``AUDIT_BENCH_SLATES`` sets the number of slates (default 100,000).
"""

import datetime as dt
import io
import os
import time
import uuid
from typing import Any

import bootstrap
import numpy as np
import pandas as pd

bootstrap.setup()

from django.db import connection, transaction  # noqa: E402
from django.db.models import Model  # noqa: E402

from commerce.models import (  # noqa: E402
    Customer,
    FeedbackEvent,
    Merchant,
    Product,
    ServedSlate,
    ServedSlateItem,
)
from governance.services import AUDIT_STAGES, run_audit  # noqa: E402

SLATES = int(os.environ.get("AUDIT_BENCH_SLATES", "100000"))
K = 10
PRODUCTS = 10_000
# A missing value in an object column, as np.where needs it.
NULL = np.array(None, dtype=object)
MERCHANTS = 50
CUSTOMERS = 50_000
ORGANIC_PURCHASES = 20_000
RATINGS = 5_000
DAY = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
GOAL_SECONDS = 60.0
COUNTRIES = {
    "United Kingdom": 0.85,
    "Germany": 0.04,
    "France": 0.04,
    "EIRE": 0.03,
    "Spain": 0.02,
    "Netherlands": 0.02,
}
PROMOTED = 1
"""Product index shown first in a third of the slates, and often returned."""
BURST_TARGET = 5_000
"""Product index that gets 500 fake clicks in ten minutes."""


def main() -> None:
    rng = np.random.default_rng(2024)
    with bootstrap.scratch_database():
        started = time.perf_counter()
        product_ids = synthesise(rng)
        synthesised = time.perf_counter() - started

        floor_seconds, floor_bytes = copy_floor()

        seconds: dict[str, float] = {}
        started = last = time.perf_counter()

        def on_progress(stage: str) -> None:
            nonlocal last
            now = time.perf_counter()
            seconds[stage], last = now - last, now

        audit_run = run_audit(
            since=DAY,
            until=DAY + dt.timedelta(days=1),
            triggered_by="benchmark",
            on_progress=on_progress,
        )
        total = time.perf_counter() - started
        raised = set(audit_run.flags.values_list("rule", "target_id"))

    print(
        f"Synthesised and loaded {audit_run.slate_count:,} slates, "
        f"{audit_run.slate_item_count:,} slate items and "
        f"{audit_run.event_count:,} events in {synthesised:.1f} s"
    )
    print(
        "floor: COPY of the slate items and events out, unparsed: "
        f"{floor_seconds:.1f} s ({floor_bytes / 1e6:,.0f} MB)"
    )
    print(f"{'audit stage':<14}{'seconds':>9}")
    for stage in AUDIT_STAGES:
        print(f"{stage:<14}{seconds[stage]:>9.1f}")
    print(f"{'total':<14}{total:>9.1f}")
    print(
        f"goal: {GOAL_SECONDS:.0f} s or less; {total / GOAL_SECONDS:.0%} of it used; "
        f"loading took {seconds['load'] / floor_seconds:.1f}x the COPY floor"
    )

    burst, promoted = str(product_ids[BURST_TARGET]), str(product_ids[PROMOTED])
    print(
        f"flags raised: {len(raised)}; burst on product {burst} flagged: "
        f"{('anomaly.burst', burst) in raised}; over-promotion of product "
        f"{promoted} flagged: {('quality.over_promotion', promoted) in raised}"
    )
    metrics = audit_run.metrics
    exposure, country = (
        metrics["exposure"],
        metrics["fairness"]["attributes"]["country"],
    )
    print(
        f"exposure: coverage {exposure['coverage']}, gini {exposure['gini']}, "
        f"avg recommended popularity {exposure['avg_recommended_popularity']} "
        f"(lift {exposure['popularity_lift']}); "
        f"country ctr ratio {country['ctr']['ratio']}"
    )


def synthesise(rng: np.random.Generator) -> np.ndarray:
    """Load the catalogue, the customers and the day; return product ids."""
    with transaction.atomic():
        copy_rows(
            Merchant,
            pd.DataFrame(
                {
                    "external_id": [f"m{n:03d}" for n in range(MERCHANTS)],
                    "name": [f"Merchant {n}" for n in range(MERCHANTS)],
                    "is_active": True,
                    "created_at": DAY,
                    "updated_at": DAY,
                }
            ),
        )
        merchant_ids = ids_by_external_id(Merchant)
        copy_rows(
            Product,
            pd.DataFrame(
                {
                    "merchant_id": merchant_ids[np.arange(PRODUCTS) % MERCHANTS],
                    "external_id": [f"SKU{n:05d}" for n in range(PRODUCTS)],
                    "title": [f"Product {n}" for n in range(PRODUCTS)],
                    "description": "",
                    "price": 5.0,
                    "is_active": True,
                    "in_stock": True,
                    "text_hash": "",
                    "created_at": DAY,
                    "updated_at": DAY,
                }
            ),
        )
        product_ids = ids_by_external_id(Product)
        countries = rng.choice(
            list(COUNTRIES), size=CUSTOMERS, p=list(COUNTRIES.values())
        )
        consented = rng.random(CUSTOMERS) < 0.2
        bands = rng.choice(["18-34", "35-54", "55+"], size=CUSTOMERS)
        copy_rows(
            Customer,
            pd.DataFrame(
                {
                    "external_id": [f"c{n:06d}" for n in range(CUSTOMERS)],
                    "country": countries,
                    "group_attributes": [f'{{"age_band": "{band}"}}' for band in bands],
                    "group_attributes_consent": consented,
                    "created_at": DAY,
                    "updated_at": DAY,
                }
            ),
        )
        customer_ids = ids_by_external_id(Customer)

        slates, items = served_day(rng, product_ids, customer_ids)
        events = feedback(rng, slates, items, product_ids, customer_ids, countries)
        copy_rows(ServedSlate, slates.drop(columns="customer"))
        copy_rows(ServedSlateItem, items.drop(columns=["product", "customer", "at"]))
        copy_rows(FeedbackEvent, events)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return product_ids


def served_day(
    rng: np.random.Generator, product_ids: np.ndarray, customer_ids: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's slates, and their items drawn by a long-tailed popularity."""
    customer = rng.integers(0, CUSTOMERS, SLATES)
    anonymous = rng.random(SLATES) < 0.05
    moments = DAY + pd.to_timedelta(np.sort(rng.integers(0, 86_400, SLATES)), "s")
    slates = pd.DataFrame(
        {
            "id": [str(uuid.uuid4()) for _ in range(SLATES)],
            "customer_id": np.where(anonymous, NULL, customer_ids[customer]),
            "session_id": np.where(anonymous, [f"s{n}" for n in range(SLATES)], ""),
            "context": "{}",
            "policy_version": "bench",
            "created_at": moments,
            "customer": np.where(anonymous, -1, customer),
        }
    )

    popularity = 1 / (np.arange(PRODUCTS) + 20.0) ** 0.9
    candidates = rng.choice(
        PRODUCTS, size=(SLATES, 2 * K), p=popularity / popularity.sum()
    )
    promoted = rng.random(SLATES) < 1 / 3
    candidates[promoted, 0] = PROMOTED
    drawn = pd.DataFrame(
        {
            "slate": np.repeat(np.arange(SLATES), 2 * K),
            "product": candidates.ravel(),
        }
    ).drop_duplicates()
    items = drawn.groupby("slate").head(K).copy()
    items["position"] = items.groupby("slate").cumcount() + 1
    assert len(items) == SLATES * K, "a slate drew fewer than K distinct products"
    items = pd.DataFrame(
        {
            "slate_id": slates["id"].to_numpy()[items["slate"]],
            "product_id": product_ids[items["product"]],
            "position": items["position"].to_numpy(),
            "score": 1.0,
            "propensity": 0.5,
            "reason": "model",
            "product": items["product"].to_numpy(),
            "customer": slates["customer"].to_numpy()[items["slate"]],
            "at": moments[items["slate"].to_numpy()],
        }
    )
    return slates, items


def feedback(
    rng: np.random.Generator,
    slates: pd.DataFrame,
    items: pd.DataFrame,
    product_ids: np.ndarray,
    customer_ids: np.ndarray,
    countries: np.ndarray,
) -> pd.DataFrame:
    """Impressions of every item; clicks falling with position (a little less
    often outside the UK); purchases of a quarter of the clicks; returns;
    organic purchases, ratings, and the burst of fake clicks."""
    known = items["customer"].to_numpy() >= 0
    customer = np.where(known, items["customer"].to_numpy(), 0)
    uk = known & (countries[customer] == "United Kingdom")
    position = items["position"].to_numpy()
    click_rate = 0.12 / position**0.7 * np.where(uk, 1.0, 0.9)
    clicked = rng.random(len(items)) < click_rate
    bought = clicked & (rng.random(len(items)) < 0.25)
    base = pd.DataFrame(
        {
            "customer_id": np.where(known, customer_ids[customer], NULL),
            "session_id": np.where(known, "", "anonymous"),
            "product_id": items["product_id"].to_numpy(),
            "slate_id": items["slate_id"].to_numpy(),
            "slate_position": position,
            "occurred_at": items["at"].to_numpy(),
            "product": items["product"].to_numpy(),
        }
    )
    impressions = base.assign(kind="impression")
    clicks = base[clicked].assign(
        kind="click", occurred_at=lambda f: f["occurred_at"] + pd.Timedelta("20s")
    )
    purchases = base[bought].assign(
        kind="purchase", occurred_at=lambda f: f["occurred_at"] + pd.Timedelta("5min")
    )
    purchases["order_id"] = [f"o{n}" for n in range(len(purchases))]

    organic = pd.DataFrame(
        {
            "customer_id": customer_ids[rng.integers(0, CUSTOMERS, ORGANIC_PURCHASES)],
            "session_id": "",
            "product": rng.integers(0, PRODUCTS // 4, ORGANIC_PURCHASES),
            "occurred_at": DAY
            + pd.to_timedelta(rng.integers(0, 86_400, ORGANIC_PURCHASES), "s"),
            "kind": "purchase",
            "order_id": [f"g{n}" for n in range(ORGANIC_PURCHASES)],
        }
    )
    organic["product_id"] = product_ids[organic["product"]]
    all_purchases = pd.concat([purchases, organic], ignore_index=True)
    return_rate = np.where(all_purchases["product"] == PROMOTED, 0.5, 0.03)
    returned = all_purchases[rng.random(len(all_purchases)) < return_rate]
    returns = returned.assign(
        kind="return",
        slate_id=None,
        slate_position=None,
        order_id="C" + returned["order_id"],
        occurred_at=returned["occurred_at"] + pd.Timedelta("2h"),
    )
    returns = returns[returns["customer_id"].notna()]

    rated = rng.integers(0, PRODUCTS // 4, RATINGS)
    ratings = pd.DataFrame(
        {
            "customer_id": customer_ids[rng.integers(0, CUSTOMERS, RATINGS)],
            "session_id": "",
            "product_id": product_ids[rated],
            "occurred_at": DAY + pd.to_timedelta(rng.integers(0, 86_400, RATINGS), "s"),
            "kind": "rating",
            "value": rng.choice(
                [1.0, 2.0, 3.0, 4.0, 5.0], RATINGS, p=[0.04, 0.04, 0.12, 0.3, 0.5]
            ),
        }
    )
    burst = pd.DataFrame(
        {
            "customer_id": None,
            "session_id": [f"fake-{n}" for n in range(500)],
            "product_id": product_ids[BURST_TARGET],
            "occurred_at": DAY
            + dt.timedelta(hours=14)
            + pd.to_timedelta(np.arange(500), "s"),
            "kind": "click",
        }
    )

    events = pd.concat(
        [impressions, clicks, all_purchases, returns, ratings, burst],
        ignore_index=True,
    ).drop(columns="product")
    events["order_id"] = events["order_id"].fillna("")
    for column in ("customer_id", "slate_position"):
        events[column] = events[column].astype("Int64")
    events["client_event_id"] = [f"e{n}" for n in range(len(events))]
    events["source"] = "bench"
    events["quantity"] = 1
    events["received_at"] = events["occurred_at"]
    return events


def copy_rows(model: type[Model], rows: pd.DataFrame) -> None:
    """COPY a frame into the model's table, its columns named as in the table."""
    buffer = io.StringIO()
    rows.to_csv(buffer, header=False, index=False, na_rep="\\N")
    columns = ", ".join(rows.columns)
    with (
        connection.cursor() as cursor,
        cursor.copy(
            f"COPY {model._meta.db_table} ({columns}) FROM STDIN "
            "WITH (FORMAT csv, NULL '\\N')"
        ) as copy,
    ):
        copy.write(buffer.getvalue())


def ids_by_external_id(model: Any) -> np.ndarray:
    return np.array(model.objects.order_by("external_id").values_list("id", flat=True))


def copy_floor() -> tuple[float, int]:
    """Seconds and bytes to COPY the slate items and events out, unparsed."""
    started = time.perf_counter()
    size = 0
    with connection.cursor() as cursor:
        for query in (
            f"SELECT slate_id, product_id, position "
            f"FROM {ServedSlateItem._meta.db_table}",
            "SELECT kind, customer_id, product_id, slate_id, slate_position, "
            "order_id, quantity, value, occurred_at "
            f"FROM {FeedbackEvent._meta.db_table}",
        ):
            with cursor.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy:
                for block in copy:
                    size += len(block)
    return time.perf_counter() - started, size


if __name__ == "__main__":
    main()

"""Time the transaction import of the full Online Retail file.

Run from the project root: ``.venv/bin/python benchmarks/import_transactions.py``.
It creates a scratch database on the configured server (the embedded one unless
DATABASE_URL is set), migrates it, and prints in one run:

- reading and planning the file alone (no database);
- a floor for the writes: COPY of the same events into an unindexed table;
- the full import into the empty store;
- a second import of the same file, which adds nothing.
"""

import io
import time

import bootstrap

bootstrap.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from commerce.importers.transactions import (  # noqa: E402
    ProductCodeFilter,
    TransactionLayout,
    plan_transactions,
)
from commerce.services import import_transactions  # noqa: E402

DATA = bootstrap.ONLINE_RETAIL


def main() -> None:
    layout = TransactionLayout.online_retail()
    code_filter = ProductCodeFilter.of(
        settings.IMPORT_NON_PRODUCT_CODES, settings.IMPORT_NON_PRODUCT_PREFIXES
    )
    with bootstrap.scratch_database():
        started = time.perf_counter()
        plan = plan_transactions(
            DATA, layout=layout, code_filter=code_filter, default_merchant="default"
        )
        planned = time.perf_counter() - started

        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE copy_floor (client_event_id text, kind text, "
                "quantity integer, value numeric, occurred_at timestamptz, "
                "customer text, session_id text, order_id text, sku text) "
                "ON COMMIT DROP"
            )
            buffer = io.StringIO()
            plan.events.to_csv(buffer, header=False, index=False)
            with cursor.copy("COPY copy_floor FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
        floor = time.perf_counter() - started

        timings = {}
        for label in ("first import", "second import"):
            started = time.perf_counter()
            result = import_transactions(
                path=DATA,
                layout=layout,
                code_filter=code_filter,
                source="online-retail",
                default_merchant="default",
            )
            timings[label] = (time.perf_counter() - started, result.counts)

    rows = plan.counts["rows_read"]
    print(f"Online Retail: {rows:,} lines, {len(plan.events):,} events")
    print(f"{'step':<34}{'seconds':>9}{'lines/s':>11}")
    print(f"{'read and plan (no database)':<34}{planned:>9.1f}{rows / planned:>11,.0f}")
    print(f"{'floor: COPY into unindexed table':<34}{floor:>9.1f}")
    for label, (seconds, counts) in timings.items():
        added = counts["events_added"]
        step = f"{label} ({added:,} added)"
        print(f"{step:<34}{seconds:>9.1f}{rows / seconds:>11,.0f}")
    first = timings["first import"][0]
    print(f"first import / (plan + COPY floor): {first / (planned + floor):.2f}x")
    print(f"goal: 120 s or less; first import took {first:.1f} s")


if __name__ == "__main__":
    main()

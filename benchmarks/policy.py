"""Time embedding and training on the full Online Retail data; print the table.

Run from the project root: ``.venv/bin/python benchmarks/policy.py``. It makes
a scratch database on the configured server, imports the bundled file and
prints, in one run:

- embedding throughput, cold (every title encoded) and warm (all cached);
- training time on the full train split (before 2011-10-01), next to the time
  the four baselines take to fit on the same split;
- the evaluation table on the test split, the policy refitted on everything
  before 2011-11-01 with the same settings.
"""

import datetime as dt
import tempfile
import time
from pathlib import Path

import bootstrap

bootstrap.setup()

from django.conf import settings  # noqa: E402

from commerce.importers.transactions import (  # noqa: E402
    ProductCodeFilter,
    TransactionLayout,
)
from commerce.services import import_transactions  # noqa: E402
from rl_engine.core.baselines import protocol_baselines  # noqa: E402
from rl_engine.core.protocol import VALIDATION_START  # noqa: E402
from rl_engine.management.commands.evaluate import format_report  # noqa: E402
from rl_engine.services import (  # noqa: E402
    embed_products,
    evaluate_policy_version,
    load_basket_log,
    train_policy_version,
)


def main() -> None:
    settings.POLICY_ARTIFACT_DIR = Path(tempfile.mkdtemp(prefix="policy-bench-"))
    with bootstrap.scratch_database():
        import_transactions(
            path=bootstrap.ONLINE_RETAIL,
            layout=TransactionLayout.online_retail(),
            code_filter=ProductCodeFilter.of(
                settings.IMPORT_NON_PRODUCT_CODES, settings.IMPORT_NON_PRODUCT_PREFIXES
            ),
            source="online-retail",
            default_merchant="default",
        )
        run()


def run() -> None:
    started = time.perf_counter()
    cold = embed_products()
    cold_seconds = time.perf_counter() - started
    started = time.perf_counter()
    warm = embed_products()
    warm_seconds = time.perf_counter() - started
    print("Embedding (MiniLM, CPU)")
    print(
        f"  cold: {cold.embedded:,} titles in {cold_seconds:.1f} s "
        f"({cold.embedded / cold_seconds:,.0f} titles/s, model load included)"
    )
    print(
        f"  warm: {warm.cached:,} cached, {warm.embedded} embedded, "
        f"{warm_seconds:.2f} s"
    )

    log = load_basket_log()
    started = time.perf_counter()
    for baseline in protocol_baselines():
        baseline.fit(log, VALIDATION_START)
    baseline_seconds = time.perf_counter() - started
    started = time.perf_counter()
    version = train_policy_version(before=dt.datetime(2011, 10, 1))
    train_seconds = time.perf_counter() - started
    print("Training on the train split (before 2011-10-01)")
    print(f"  policy: {version.transitions:,} transitions, {train_seconds:.1f} s")
    print(f"  the four baselines fit in {baseline_seconds:.1f} s")
    print(f"  goal: 900 s or less; {train_seconds / 900:.0%} of it used")

    validation = evaluate_policy_version(version=version)
    print(format_report(validation))

    started = time.perf_counter()
    refitted = train_policy_version(before=dt.datetime(2011, 11, 1))
    print(f"Refitted before 2011-11-01 in {time.perf_counter() - started:.1f} s")
    print(format_report(evaluate_policy_version(version=refitted)))


if __name__ == "__main__":
    main()

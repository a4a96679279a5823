"""Replay a period of real customers against the running API."""

import datetime as dt
import os
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from commerce.api.authentication import KEY_PREFIX_LENGTH
from commerce.models import ApiClient
from commerce.replay import (
    ServerUnavailableError,
    TrafficReplayer,
    invoices_between,
    missing_acknowledged_events,
)

TEST_START = dt.date(2011, 11, 1)


class Command(BaseCommand):
    help = (
        "Replay the invoices of a period (default: the test period, from "
        "2011-11-01) against the API over HTTP: a slate per invoice, then its "
        "impressions, clicks and purchases as events. Prints hit rates and latency."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000/api/v1",
            help="base URL of the running shop API; its /health must answer 200 "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--key",
            default=os.environ.get("REPLAY_API_KEY", ""),
            help="API key with the recommendations and events scopes "
            "(default: $REPLAY_API_KEY)",
        )
        parser.add_argument("--since", type=dt.date.fromisoformat, default=TEST_START)
        parser.add_argument("--until", type=dt.date.fromisoformat)
        parser.add_argument(
            "--limit", type=int, help="replay at most this many invoices"
        )
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument(
            "--source",
            default="online-retail",
            help="event source whose invoices are replayed (the imported log)",
        )
        parser.add_argument("--concurrency", type=int, default=4)

    def handle(self, *args: Any, **options: Any) -> None:
        key = options["key"]
        client = ApiClient.objects.filter(key_prefix=key[:KEY_PREFIX_LENGTH]).first()
        if not key or client is None:
            raise CommandError(
                "Give an API key (--key or REPLAY_API_KEY) of an existing client."
            )

        replayer = TrafficReplayer(
            options["url"], key, k=options["k"], concurrency=options["concurrency"]
        )
        try:
            replayer.check_health()
        except ServerUnavailableError as error:
            raise CommandError(
                f"{error} Start the server (see the README's shop API section) "
                "or point --url at it."
            ) from error

        invoices = invoices_between(
            _aware(options["since"]),
            _aware(options["until"]) if options["until"] else None,
            options["limit"],
            source=options["source"],
        )
        started = time.perf_counter()
        with tqdm(
            total=len(invoices),
            desc="Replaying invoices",
            unit="invoice",
            disable=options["verbosity"] < 1,
        ) as progress:
            report = replayer.run(invoices, on_invoice=progress.update)
        seconds = time.perf_counter() - started
        missing = missing_acknowledged_events(client, report.acknowledged_ids)

        slates = max(report.slates, 1)
        rows = [
            ("slates served", f"{report.slates:,}"),
            (
                "slates with a purchased item",
                f"{report.slates_with_a_purchase / slates:.1%}",
            ),
            (
                "recommended items bought",
                f"{report.recommended_and_bought / max(report.recommended, 1):.1%}",
            ),
            ("events sent", f"{report.events_sent:,}"),
            ("events acknowledged", f"{report.events_acknowledged:,}"),
            ("acknowledged but not stored", f"{missing:,}"),
            ("server errors (5xx)", f"{report.server_errors:,}"),
            ("client errors (4xx)", f"{report.client_errors:,}"),
            (
                "latency p50 / p90 / p99 (ms)",
                " / ".join(f"{report.latency(p):.1f}" for p in (50, 90, 99)),
            ),
        ]
        self.stdout.write(f"Replayed {report.invoices:,} invoices in {seconds:.1f} s")
        for name, value in rows:
            self.stdout.write(f"  {name:<30} {value:>20}")
        for sample in report.error_samples:
            self.stdout.write(self.style.WARNING(f"  {sample}"))
        if report.server_errors or missing:
            raise CommandError("The replay saw server errors or lost events.")


def _aware(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time()))

"""Run the platform's main job on a transaction log: import, then summarise."""

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from commerce.selectors import store_summary

DEFAULT_DATA = (
    Path(settings.BASE_DIR) / "data" / "online-retail" / "online_retail.csv.gz"
)


class Command(BaseCommand):
    help = (
        "Import the bundled Online Retail log (or PATH) and print what the store holds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", type=Path, default=DEFAULT_DATA)

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        self.stdout.write(self.style.MIGRATE_HEADING(f"Importing {options['data']}"))
        call_command("import_transactions", str(options["data"]), stdout=self.stdout)
        imported = time.perf_counter() - started

        summary = store_summary()
        self.stdout.write(self.style.MIGRATE_HEADING("The store now holds"))
        rows = [
            ("merchants", summary.merchants),
            ("products", summary.products),
            ("customers", summary.customers),
            *(
                (f"{kind} events", n)
                for kind, n in sorted(summary.events_by_kind.items())
            ),
        ]
        for name, value in rows:
            self.stdout.write(f"  {name:<18} {value:>10,}")
        if summary.first_event_at and summary.last_event_at:
            self.stdout.write(
                f"  events from {summary.first_event_at:%Y-%m-%d} "
                f"to {summary.last_event_at:%Y-%m-%d}"
            )
        self.stdout.write(self.style.SUCCESS(f"Import took {imported:.1f} s."))

"""Run the platform's main job: import, embed, train, evaluate, promote."""

import datetime as dt
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce.selectors import store_summary
from rl_engine.core.protocol import TEST_START
from rl_engine.errors import PolicyError, PolicyGateError
from rl_engine.management.commands.evaluate import format_report
from rl_engine.models import PolicyVersion
from rl_engine.services import evaluate_policy_version, promote_policy

DEFAULT_DATA = (
    Path(settings.BASE_DIR) / "data" / "online-retail" / "online_retail.csv.gz"
)


class Command(BaseCommand):
    help = (
        "Import the bundled Online Retail log (or --data), embed the products, "
        "train a policy on the data before the protocol's test period, evaluate "
        "it against the baselines, and promote it if it clears the gate."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
        parser.add_argument(
            "--before",
            type=dt.date.fromisoformat,
            default=dt.date.fromisoformat(str(TEST_START)),
            help="train on feedback before this day (default: the test start)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        timings: dict[str, float] = {}

        with self._step("Importing transactions", timings):
            call_command(
                "import_transactions", str(options["data"]), stdout=self.stdout
            )
            self._print_store()
        with self._step("Embedding products", timings):
            call_command("embed_products", stdout=self.stdout)
        with self._step("Training the policy", timings):
            call_command(
                "train_policy",
                "--before",
                options["before"].isoformat(),
                stdout=self.stdout,
            )
        version = PolicyVersion.objects.order_by("-created_at").first()
        if version is None:
            raise CommandError("Training registered no policy version.")
        with self._step("Evaluating against the baselines", timings):
            report = evaluate_policy_version(version=version)
            self.stdout.write(format_report(report))
        with self._step("Promotion gate", timings):
            try:
                promote_policy(
                    version=version, actor=None, reason="main job: passed the gate"
                )
                self.stdout.write(self.style.SUCCESS(f"{version.label} is live."))
            except PolicyError as error:
                self.stdout.write(
                    self.style.WARNING(f"{version.label} stays a candidate: {error}")
                )
                if isinstance(error, PolicyGateError):
                    self.stdout.write(error.override_hint(version.label))

        self.stdout.write(self.style.MIGRATE_HEADING("Time per step"))
        for step, seconds in timings.items():
            self.stdout.write(f"  {step:<34} {seconds:>7.1f} s")

    def _step(self, title: str, timings: dict[str, float]) -> "_TimedStep":
        return _TimedStep(self, title, timings)

    def _print_store(self) -> None:
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


class _TimedStep:
    """Print a step's heading, then record how long it took."""

    def __init__(self, command: Command, title: str, timings: dict[str, float]) -> None:
        self.command, self.title, self.timings = command, title, timings

    def __enter__(self) -> None:
        self.command.stdout.write(self.command.style.MIGRATE_HEADING(self.title))
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self.timings[self.title] = time.perf_counter() - self.started

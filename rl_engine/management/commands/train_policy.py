"""Train a policy on the stored feedback and register it as a candidate."""

import datetime as dt
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from rl_engine.errors import PolicyError
from rl_engine.services import train_policy_version


class Command(BaseCommand):
    help = "Train a Double DQN policy on the stored feedback; register a candidate."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--before",
            type=dt.date.fromisoformat,
            help="train on feedback before this day (shop's local time), e.g. "
            "2011-11-01 to evaluate on the protocol's test period",
        )
        parser.add_argument(
            "--config",
            type=json.loads,
            default={},
            help="JSON overrides of the training settings, e.g. '{\"epochs\": 4}'",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        before = options["before"]
        boundary = dt.datetime.combine(before, dt.time()) if before else None

        def report(epoch: int, metrics: dict[str, float]) -> None:
            if options["verbosity"] > 0:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                self.stdout.write(f"  epoch {epoch}: {shown}")

        started = timezone.now()
        try:
            version = train_policy_version(
                before=boundary, config_overrides=options["config"], on_epoch=report
            )
        except PolicyError as error:
            raise CommandError(f"[{error.code}] {error.message}") from error
        seconds = (timezone.now() - started).total_seconds()
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered candidate {version.label} "
                f"({version.transitions:,} transitions, {seconds:.0f} s)"
            )
        )

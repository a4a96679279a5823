"""Embed the product texts that have no cached vector yet."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from rl_engine.services import embed_products


class Command(BaseCommand):
    help = "Embed new or changed product texts with the configured text encoder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, help="texts per forward pass")

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(
            desc="Embedding products", unit="text", disable=options["verbosity"] < 1
        ) as progress:
            result = embed_products(
                batch_size=options["batch_size"],
                on_start=lambda total: progress.reset(total=total),
                on_batch=progress.update,
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Embedded {result.embedded:,} product texts; "
                f"{result.cached:,} were cached already."
            )
        )

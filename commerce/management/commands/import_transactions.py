"""Import a shop's transaction log (CSV or CSV.gz) into the store."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from commerce.errors import ImportFormatError
from commerce.importers.transactions import (
    FIELDS,
    ProductCodeFilter,
    TransactionLayout,
    TransactionPlan,
    read_merchant_map,
)
from commerce.services import ImportResult, import_transactions

SHOWN_BAD_ROWS = 20
SHOWN_MERCHANTS_KEPT = 20


class Command(BaseCommand):
    help = (
        "Import purchases and returns from a transaction log. The default layout "
        "is the UCI Online Retail export; --layout or --column map other exports."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="CSV file, plain or .gz")
        parser.add_argument(
            "--layout",
            type=Path,
            help="JSON file: {'columns': {field: column}, 'date_format': ..., "
            "'timezone': ..., 'cancellation_prefix': ...}",
        )
        parser.add_argument(
            "--column",
            action="append",
            default=[],
            metavar="FIELD=COLUMN",
            help=f"map one field to a column; fields: {', '.join(FIELDS)}",
        )
        parser.add_argument("--date-format", help="strftime format of the dates")
        parser.add_argument("--timezone", help="IANA zone of dates without offset")
        parser.add_argument(
            "--source",
            default="online-retail",
            help="name of this feed; events are unique per source",
        )
        parser.add_argument(
            "--merchant-map",
            type=Path,
            help="CSV with columns sku,merchant assigning new products to merchants; "
            "a stored product keeps its merchant, and is listed if the map differs",
        )
        parser.add_argument(
            "--default-merchant",
            default=settings.IMPORT_DEFAULT_MERCHANT,
            help="merchant of products the map does not name",
        )
        parser.add_argument(
            "--non-product-codes",
            help="comma-separated stock codes that are not products "
            "(default from settings)",
        )
        parser.add_argument(
            "--non-product-prefixes",
            help="comma-separated prefixes of codes that are not products",
        )
        parser.add_argument(
            "--skip-guests",
            action="store_true",
            help="skip lines with no customer instead of importing them anonymously",
        )
        parser.add_argument(
            "--batch-size", type=int, default=settings.IMPORT_BATCH_SIZE
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = self._import(options)
        except ImportFormatError as error:
            raise CommandError(f"[{error.code}] {error.message}") from error
        self._print_summary(result)

    def _import(self, options: dict[str, Any]) -> ImportResult:
        layout = self._layout(options)
        code_filter = ProductCodeFilter.of(
            _split(options["non_product_codes"], settings.IMPORT_NON_PRODUCT_CODES),
            _split(
                options["non_product_prefixes"], settings.IMPORT_NON_PRODUCT_PREFIXES
            ),
        )
        merchant_by_sku = (
            read_merchant_map(options["merchant_map"])
            if options["merchant_map"]
            else {}
        )
        show_progress = options["verbosity"] > 0
        progress = tqdm(
            desc="Importing events", unit="event", disable=not show_progress, delay=1
        )

        def announce(plan: TransactionPlan) -> None:
            progress.reset(total=len(plan.events))
            if show_progress:
                self.stdout.write(
                    f"Read {plan.counts['rows_read']:,} rows from {options['path']}; "
                    f"storing {len(plan.events):,} events."
                )

        with progress:
            return import_transactions(
                path=options["path"],
                layout=layout,
                code_filter=code_filter,
                source=options["source"],
                default_merchant=options["default_merchant"],
                merchant_by_sku=merchant_by_sku,
                include_guests=not options["skip_guests"],
                batch_size=options["batch_size"],
                on_plan=announce,
                on_batch=progress.update,
            )

    def _layout(self, options: dict[str, Any]) -> TransactionLayout:
        if options["layout"]:
            layout = TransactionLayout.from_json(options["layout"])
        else:
            layout = TransactionLayout.online_retail()
        overrides = {}
        for pair in options["column"]:
            name, sep, column = pair.partition("=")
            if not sep:
                raise ImportFormatError(f"--column takes FIELD=COLUMN, not {pair!r}.")
            overrides[name.strip()] = column.strip()
        layout = layout.with_columns(overrides)
        if options["date_format"]:
            layout = layout.with_options(date_format=options["date_format"])
        if options["timezone"]:
            layout = layout.with_options(timezone=options["timezone"])
        return layout

    def _print_summary(self, result: ImportResult) -> None:
        counts = result.counts
        width = max(len(name) for name in counts)
        self.stdout.write(self.style.SUCCESS(f"Import {result.run.pk} completed"))
        for name, value in counts.items():
            self.stdout.write(f"  {name.replace('_', ' '):<{width}}  {value:>10,}")
        if result.bad_rows:
            self.stdout.write(
                self.style.WARNING(
                    f"{counts['bad_rows']:,} bad rows were not imported; the first:"
                )
            )
            for row in result.bad_rows[:SHOWN_BAD_ROWS]:
                self.stdout.write(f"  {row}")
        if result.merchants_kept:
            self.stdout.write(
                self.style.WARNING(
                    f"{len(result.merchants_kept):,} stored products stay with the "
                    "merchant that sells them, not the one the map names; the first:"
                )
            )
            for kept in result.merchants_kept[:SHOWN_MERCHANTS_KEPT]:
                self.stdout.write(
                    f"  {kept.sku}: stays with {kept.merchant}, "
                    f"the map names {kept.mapped_merchant}"
                )


def _split(option: str | None, default: list[str]) -> list[str]:
    return default if option is None else [part for part in option.split(",")]

"""The transaction importer on a sample cut from the real Online Retail file."""

import csv
import datetime as dt
import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from commerce.errors import ImportFormatError
from commerce.importers.transactions import TransactionLayout, read_merchant_map
from commerce.models import (
    Customer,
    EventKind,
    FeedbackEvent,
    ImportRun,
    ImportStatus,
    Merchant,
    Product,
    product_text_hash,
)
from commerce.services import MerchantKept
from governance.models import GovernanceEvent

pytestmark = pytest.mark.django_db

# Counted on the sample with the csv module alone, line by line.
SAMPLE_COUNTS = {
    "rows_read": 1163,
    "bad_rows": 0,
    "duplicate_lines": 7,
    "guest_lines": 226,
    "cancellation_lines": 28,
    "non_product_lines": 12,
    "adjustment_lines": 2,
    "purchase_lines": 1116,
    "return_lines": 26,
    "guest_events": 220,
    "products": 827,
    "customers": 39,
    "countries": 6,
    "distinct_codes_in_file": 835,
}


def store_counts() -> dict[str, int]:
    return {
        "events": FeedbackEvent.objects.count(),
        "purchases": FeedbackEvent.objects.filter(kind=EventKind.PURCHASE).count(),
        "returns": FeedbackEvent.objects.filter(kind=EventKind.RETURN).count(),
        "anonymous": FeedbackEvent.objects.filter(customer__isnull=True).count(),
        "products": Product.objects.count(),
        "customers": Customer.objects.count(),
        "merchants": Merchant.objects.count(),
    }


def planner_row_estimates() -> dict[str, float]:
    """What the query planner believes each loaded table holds."""
    tables = [model._meta.db_table for model in (FeedbackEvent, Product, Customer)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)", [tables]
        )
        return dict(cursor.fetchall())


def test_an_import_refreshes_the_planner_statistics_of_what_it_loaded(
    import_file, sample_path
):
    import_file(sample_path)

    # reltuples is -1 for a table never analysed; a fresh ANALYZE of a table
    # this small counts every row.
    assert planner_row_estimates() == {
        FeedbackEvent._meta.db_table: FeedbackEvent.objects.count(),
        Product._meta.db_table: Product.objects.count(),
        Customer._meta.db_table: Customer.objects.count(),
    }


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_sample(sample_path: Path) -> tuple[list[str], list[list[str]]]:
    with sample_path.open(newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        return header, list(reader)


def test_sample_counts_match_a_line_by_line_count(import_file, sample_path):
    result = import_file(sample_path)

    for name, expected in SAMPLE_COUNTS.items():
        assert result.counts[name] == expected, name
    assert result.counts["events_added"] == 1142
    assert store_counts() == {
        "events": 1142,
        "purchases": 1116,
        "returns": 26,
        "anonymous": 220,
        "products": 827,
        "customers": 39,
        "merchants": 1,
    }
    assert result.run.status == ImportStatus.COMPLETED


def test_imported_rows_carry_the_file_values(import_file, sample_path):
    import_file(sample_path)

    # 536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,...
    event = FeedbackEvent.objects.get(order_id="536365", product__external_id="85123A")
    assert event.kind == EventKind.PURCHASE
    assert event.quantity == 6
    assert event.value == Decimal("15.3000")
    assert event.customer is not None
    assert event.customer.external_id == "17850"
    assert event.customer.country == "United Kingdom"
    # Local UK time in winter is UTC.
    assert event.occurred_at == dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.UTC)
    assert event.product.title == "WHITE HANGING HEART T-LIGHT HOLDER"

    a_return = FeedbackEvent.objects.filter(kind=EventKind.RETURN).first()
    assert a_return is not None
    assert a_return.order_id.startswith("C")
    assert a_return.quantity > 0

    guest = FeedbackEvent.objects.filter(customer__isnull=True).first()
    assert guest is not None
    assert guest.session_id == f"guest:{guest.order_id}"


def test_summer_times_are_converted_from_uk_local_time(import_file, tmp_path):
    header = ",".join(TransactionLayout.online_retail().columns.values())
    path = tmp_path / "summer.csv"
    path.write_text(
        f"{header}\n"
        "560000,22423,REGENCY CAKESTAND 3 TIER,2,2011-07-14 10:00:00,12.75,"
        "12345.0,United Kingdom\n"
    )

    import_file(path)

    event = FeedbackEvent.objects.get()
    assert event.occurred_at == dt.datetime(2011, 7, 14, 9, 0, tzinfo=dt.UTC)


def test_second_import_changes_no_count(import_file, sample_path):
    import_file(sample_path)
    before = store_counts()

    second = import_file(sample_path)

    assert store_counts() == before
    assert second.counts["events_added"] == 0
    assert second.counts["events_already_present"] == 1142
    assert second.counts["products_added"] == 0
    assert second.counts["products_updated"] == 0
    assert second.counts["customers_added"] == 0


def test_each_run_is_logged_in_the_governance_log(import_file, sample_path):
    first = import_file(sample_path)
    second = import_file(sample_path)

    completed = GovernanceEvent.objects.filter(action="import.completed")
    assert sorted(completed.values_list("target_id", flat=True)) == sorted(
        [str(first.run.pk), str(second.run.pk)]
    )
    logged = completed.get(target_id=str(first.run.pk))
    assert logged.after is not None
    assert logged.after["counts"]["events_added"] == 1142
    assert GovernanceEvent.objects.filter(action="merchant.created").count() == 1


def test_file_missing_a_column_is_refused_before_any_write(
    import_file, tmp_path, sample_path
):
    header, rows = read_sample(sample_path)
    keep = [i for i, name in enumerate(header) if name != "Quantity"]
    path = write_csv(
        tmp_path / "no_quantity.csv",
        [header[i] for i in keep],
        [[row[i] for i in keep] for row in rows],
    )

    with pytest.raises(ImportFormatError, match=r"lacks the mapped column.*Quantity"):
        import_file(path)

    assert store_counts()["events"] == 0
    assert store_counts()["products"] == 0
    assert ImportRun.objects.count() == 0
    assert GovernanceEvent.objects.count() == 0


def test_wrongly_mapped_column_is_refused_before_any_write(import_file, sample_path):
    layout = TransactionLayout.online_retail().with_columns(
        {"occurred_at": "Description"}
    )

    with pytest.raises(ImportFormatError, match=r"Description.*not a date"):
        import_file(sample_path, layout=layout)

    assert store_counts()["events"] == 0
    assert ImportRun.objects.count() == 0


def test_bad_rows_are_reported_by_line_and_the_rest_imported(
    import_file, tmp_path, sample_path
):
    header, rows = read_sample(sample_path)
    # Data row i sits on file line i + 2. Make three distinct rows bad.
    rows[9][header.index("InvoiceDate")] = "2010-13-45 99:00:00"
    rows[19][header.index("Quantity")] = "six"
    rows[29][header.index("UnitPrice")] = "NaN"
    path = write_csv(tmp_path / "bad_rows.csv", header, rows)

    result = import_file(path)

    assert result.counts["bad_rows"] == 3
    assert [(row.line, row.column) for row in result.bad_rows] == [
        (11, "InvoiceDate"),
        (21, "Quantity"),
        (31, "UnitPrice"),
    ]
    assert result.bad_rows[1].value == "six"
    assert result.run.bad_rows[0]["line"] == 11
    # The three rows were purchases in the sample; everything else is stored.
    assert result.counts["purchase_lines"] == 1113
    assert store_counts()["events"] == 1139


def test_interrupted_import_keeps_whole_batches_and_resumes(import_file, sample_path):
    batches_done = 0

    def interrupt_after_two_batches(size: int) -> None:
        nonlocal batches_done
        batches_done += 1
        if batches_done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(sample_path, batch_size=400, on_batch=interrupt_after_two_batches)

    assert FeedbackEvent.objects.count() == 800
    failed = ImportRun.objects.get()
    assert failed.status == ImportStatus.FAILED
    assert "KeyboardInterrupt" in failed.error

    resumed = import_file(sample_path, batch_size=400)

    assert resumed.counts["events_added"] == 342
    assert resumed.counts["events_already_present"] == 800
    assert store_counts()["events"] == 1142


def test_another_shops_layout_imports_without_code_changes(
    import_file, tmp_path, sample_path
):
    header, rows = read_sample(sample_path)
    renamed = ["order", "sku", "name", "qty", "ordered", "price", "client", "market"]
    date_column = header.index("InvoiceDate")
    for row in rows:
        stamp = dt.datetime.strptime(row[date_column], "%Y-%m-%d %H:%M:%S")
        row[date_column] = stamp.strftime("%d/%m/%Y %H:%M")
    path = tmp_path / "other_shop.csv.gz"
    with gzip.open(path, "wt", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(renamed)
        writer.writerows(rows)
    layout_path = tmp_path / "layout.json"
    layout_path.write_text(
        json.dumps(
            {
                "columns": dict(
                    zip(
                        TransactionLayout.online_retail().columns,
                        renamed,
                        strict=True,
                    )
                ),
                "date_format": "%d/%m/%Y %H:%M",
                "timezone": "Europe/London",
            }
        )
    )

    result = import_file(path, layout=TransactionLayout.from_json(layout_path))

    assert result.counts["purchase_lines"] == 1116
    assert result.counts["return_lines"] == 26
    event = FeedbackEvent.objects.get(order_id="536365", product__external_id="85123A")
    assert event.occurred_at == dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.UTC)


def test_merchant_map_assigns_products_to_merchants(import_file, tmp_path, sample_path):
    map_path = tmp_path / "merchants.csv"
    map_path.write_text("sku,merchant\n85123a,lights-ltd\n71053,lights-ltd\n")

    import_file(sample_path, merchant_by_sku=read_merchant_map(map_path))

    lights = Merchant.objects.get(external_id="lights-ltd")
    assert sorted(lights.products.values_list("external_id", flat=True)) == [
        "71053",
        "85123A",
    ]
    assert Product.objects.filter(merchant__external_id="default").count() == 825


def test_guest_lines_can_be_skipped_and_are_counted(import_file, sample_path):
    result = import_file(sample_path, include_guests=False)

    assert result.counts["guest_lines_skipped"] == 220
    assert result.counts["guest_events"] == 0
    assert store_counts()["anonymous"] == 0
    assert store_counts()["events"] == 922


def test_command_prints_a_summary(sample_path, capsys):
    call_command("import_transactions", str(sample_path), verbosity=1)

    printed = capsys.readouterr().out
    assert "completed" in printed
    assert "purchase lines" in printed
    assert "1,116" in printed


def test_command_reports_format_errors_with_their_code(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")

    with pytest.raises(CommandError, match=r"\[import_format_invalid\]"):
        call_command("import_transactions", str(path), verbosity=0)


def test_a_later_import_fills_gaps_but_never_overwrites_the_catalogue(
    import_file, tmp_path, sample_path
):
    import_file(sample_path)
    stored = Product.objects.get(external_id="71053")
    header = ",".join(TransactionLayout.online_retail().columns.values())
    older = tmp_path / "older.csv"
    older.write_text(
        f"{header}\n"
        "530000,71053,OLD LANTERN NAME,1,2010-06-01 10:00:00,1.00,12345.0,France\n"
        "530000,NEW1,,1,2010-06-01 10:00:00,2.00,12345.0,France\n"
    )

    result = import_file(older, source="older-export")

    kept = Product.objects.get(external_id="71053")
    assert (kept.title, kept.price) == (stored.title, stored.price)
    assert kept.text_hash == stored.text_hash
    bare = Product.objects.get(external_id="NEW1")
    assert bare.title == "NEW1"
    assert result.counts["products_updated"] == 0

    described = tmp_path / "described.csv"
    described.write_text(
        f"{header}\n"
        "530001,NEW1,BLUE GLASS VASE,1,2010-06-02 10:00:00,2.50,12345.0,France\n"
    )
    filled = import_file(described, source="older-export")

    bare.refresh_from_db()
    assert bare.title == "BLUE GLASS VASE"
    assert bare.text_hash == product_text_hash("BLUE GLASS VASE", "")
    assert filled.counts["products_updated"] == 1


def write_map(path: Path, rows: dict[str, str]) -> Path:
    lines = [f"{sku},{merchant}" for sku, merchant in rows.items()]
    path.write_text("\n".join(["sku,merchant", *lines]) + "\n")
    return path


def test_a_merchant_map_never_moves_a_stored_product(import_file, tmp_path):
    header = ",".join(TransactionLayout.online_retail().columns.values())
    first = tmp_path / "first.csv"
    first.write_text(
        f"{header}\n"
        "540000,71053,WHITE METAL LANTERN,1,2011-01-04 10:00:00,3.39,12345.0,France\n"
    )
    later = tmp_path / "later.csv"
    later.write_text(
        f"{header}\n"
        "540100,71053,WHITE METAL LANTERN,2,2011-01-05 10:00:00,3.39,12345.0,France\n"
        "540100,22423,REGENCY CAKESTAND,1,2011-01-05 10:00:00,12.75,12345.0,France\n"
    )
    import_file(
        first,
        merchant_by_sku=read_merchant_map(
            write_map(tmp_path / "first-map.csv", {"71053": "lights-ltd"})
        ),
    )

    result = import_file(
        later,
        merchant_by_sku=read_merchant_map(
            write_map(
                tmp_path / "later-map.csv",
                {"71053": "candles-co", "22423": "candles-co"},
            )
        ),
    )

    assert result.merchants_kept == [
        MerchantKept(sku="71053", merchant="lights-ltd", mapped_merchant="candles-co")
    ]
    assert result.counts["products_merchant_kept"] == 1
    assert result.counts["products_added"] == 1
    stored = dict(Product.objects.values_list("external_id", "merchant__external_id"))
    assert stored == {"71053": "lights-ltd", "22423": "candles-co"}
    # The later purchase of the kept product is stored against it.
    assert (
        FeedbackEvent.objects.filter(
            product__external_id="71053", order_id="540100"
        ).count()
        == 1
    )
    assert ImportRun.objects.get(pk=result.run.pk).counts["products_merchant_kept"] == 1


def test_an_unmapped_stored_product_keeps_its_merchant_unreported(
    import_file, tmp_path
):
    header = ",".join(TransactionLayout.online_retail().columns.values())
    path = tmp_path / "log.csv"
    path.write_text(
        f"{header}\n"
        "540000,71053,WHITE METAL LANTERN,1,2011-01-04 10:00:00,3.39,12345.0,France\n"
    )
    import_file(
        path,
        merchant_by_sku=read_merchant_map(
            write_map(tmp_path / "map.csv", {"71053": "lights-ltd"})
        ),
    )

    again = import_file(path, source="second-feed")

    assert again.merchants_kept == []
    assert again.counts["products_merchant_kept"] == 0
    assert Product.objects.get().merchant.external_id == "lights-ltd"
    assert FeedbackEvent.objects.filter(source="second-feed").count() == 1


def test_command_lists_products_kept_against_the_map(tmp_path, capsys):
    header = ",".join(TransactionLayout.online_retail().columns.values())
    path = tmp_path / "log.csv"
    path.write_text(
        f"{header}\n"
        "540000,71053,WHITE METAL LANTERN,1,2011-01-04 10:00:00,3.39,12345.0,France\n"
    )
    call_command("import_transactions", str(path), verbosity=0)

    map_path = write_map(tmp_path / "map.csv", {"71053": "lights-ltd"})
    call_command("import_transactions", str(path), merchant_map=map_path, verbosity=1)

    printed = capsys.readouterr().out
    assert "1 stored products stay with the merchant that sells them" in printed
    assert "71053: stays with default, the map names lights-ltd" in printed
    assert Product.objects.get().merchant.external_id == "default"

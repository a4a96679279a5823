"""Writes to the commerce store."""

import hashlib
import io
import json
import logging
import secrets
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from commerce.errors import (
    ApiClientError,
    IdempotencyKeyReusedError,
    InvalidEventsError,
    InvalidProductsError,
    SkuOwnedByOtherMerchantError,
)
from commerce.importers.transactions import (
    BadRow,
    ProductCodeFilter,
    TransactionLayout,
    TransactionPlan,
    plan_transactions,
)
from commerce.models import (
    ApiClient,
    ApiScope,
    Customer,
    FeedbackEvent,
    ImportRun,
    ImportStatus,
    Merchant,
    Product,
    ServedSlate,
    ServedSlateItem,
)
from governance.services import Actor, record_governance_event

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], object]


@dataclass(frozen=True)
class MerchantKept:
    """A stored product that an import's merchant map gives to another merchant.

    The import leaves it with the merchant that sells it: a transaction log
    does not move products between merchants.
    """

    sku: str
    merchant: str
    """The merchant the product stays with."""
    mapped_merchant: str


@dataclass
class ImportResult:
    """The run record of an import, the rows it refused and the products whose
    merchant it kept against the merchant map."""

    run: ImportRun
    bad_rows: list[BadRow]
    merchants_kept: list[MerchantKept]

    @property
    def counts(self) -> dict[str, int]:
        return self.run.counts


def import_transactions(
    *,
    path: Path,
    layout: TransactionLayout,
    code_filter: ProductCodeFilter,
    source: str,
    default_merchant: str,
    merchant_by_sku: Mapping[str, str] | None = None,
    include_guests: bool = True,
    batch_size: int = 50_000,
    on_plan: Callable[[TransactionPlan], None] | None = None,
    on_batch: ProgressCallback | None = None,
) -> ImportResult:
    """Import a transaction log into the store, in atomic batches.

    The file is read and validated whole before anything is written, so a file
    with missing columns leaves no trace. Events are keyed by (source, a hash
    of the line), so re-running an import, whole or after an interruption,
    adds only what is missing. A stored product keeps its merchant; those that
    ``merchant_by_sku`` gives to another are counted and listed in the result.
    """
    plan = plan_transactions(
        path,
        layout=layout,
        code_filter=code_filter,
        default_merchant=default_merchant,
        merchant_by_sku=merchant_by_sku,
        include_guests=include_guests,
    )
    if on_plan is not None:
        on_plan(plan)
    run = ImportRun.objects.create(
        source=source,
        path=str(path),
        file_sha256=file_sha256(path),
        counts=plan.counts,
        bad_rows=[row.as_dict() for row in plan.bad_rows],
    )
    logger.info(
        "Import %s started: %d rows read, %d events planned",
        run.pk,
        plan.counts["rows_read"],
        len(plan.events),
        extra={"import_run": run.pk, "source": source},
    )
    try:
        counts, merchants_kept = _store_plan(
            plan,
            source=source,
            mapped_skus=set(merchant_by_sku or {}),
            batch_size=batch_size,
            on_batch=on_batch,
        )
    except BaseException as error:
        _finish_run(run, status=ImportStatus.FAILED, error=repr(error))
        raise
    _finish_run(run, status=ImportStatus.COMPLETED, counts={**plan.counts, **counts})
    logger.info(
        "Import %s completed: %d events added, %d already present",
        run.pk,
        counts["events_added"],
        counts["events_already_present"],
        extra={"import_run": run.pk, "source": source},
    )
    if merchants_kept:
        logger.warning(
            "Import %s kept %d products with the merchants that sell them, "
            "against the merchant map (the first: %s); move them in the admin "
            "if the map is right",
            run.pk,
            len(merchants_kept),
            ", ".join(kept.sku for kept in merchants_kept[:10]),
            extra={"import_run": run.pk, "source": source},
        )
    return ImportResult(run=run, bad_rows=plan.bad_rows, merchants_kept=merchants_kept)


def _store_plan(
    plan: TransactionPlan,
    *,
    source: str,
    mapped_skus: set[str],
    batch_size: int,
    on_batch: ProgressCallback | None,
) -> tuple[dict[str, int], list[MerchantKept]]:
    with transaction.atomic():
        merchant_ids = _ensure_merchants(plan.products["merchant"].unique())
        products = _upsert_products(plan.products, merchant_ids, mapped_skus)
        customers_added = _upsert_customers(plan.customers)

    customer_ids = dict(Customer.objects.values_list("external_id", "id"))
    events = plan.events.assign(
        product_id=plan.events["sku"].map(_product_ids(plan.products["sku"])),
        customer_id=plan.events["customer"].map(customer_ids).astype("Int64"),
    )

    added = 0
    for start in range(0, len(events), batch_size):
        batch = events.iloc[start : start + batch_size]
        with transaction.atomic():
            added += _insert_events(batch, source=source)
        if on_batch is not None:
            on_batch(len(batch))
    if added:
        _refresh_statistics(FeedbackEvent, Product, Customer)
    counts = {
        "products_added": products.added,
        "products_updated": products.updated,
        "products_merchant_kept": len(products.merchants_kept),
        "customers_added": customers_added,
        "events_added": added,
        "events_already_present": len(events) - added,
    }
    return counts, products.merchants_kept


def _refresh_statistics(*tables: type[models.Model]) -> None:
    """ANALYZE tables that a bulk load has just grown.

    Until their statistics are refreshed the planner takes them for the size
    they were; a customer's history then reads the whole kind index instead
    of the customer's rows. Autovacuum catches up eventually, or never where
    it is off; a load of this size is worth the second it takes now.
    """
    names = ", ".join(connection.ops.quote_name(t._meta.db_table) for t in tables)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {names}")


def _ensure_merchants(
    external_ids: Any, actor_label: str = "import_transactions"
) -> dict[str, int]:
    merchant_ids = {}
    for external_id in external_ids:
        merchant, created = Merchant.objects.get_or_create(
            external_id=external_id, defaults={"name": external_id}
        )
        if created:
            record_governance_event(
                action="merchant.created",
                target_type="merchant",
                target_id=str(merchant.pk),
                actor_label=actor_label,
                after={"external_id": external_id},
            )
        merchant_ids[external_id] = merchant.pk
    return merchant_ids


@dataclass(frozen=True)
class ProductUpsert:
    added: int
    updated: int
    merchants_kept: list[MerchantKept]


def _upsert_products(
    products: pd.DataFrame, merchant_ids: Mapping[str, int], mapped_skus: set[str]
) -> ProductUpsert:
    """Insert new products and fill in what stored ones lack; report what changed.

    A transaction log is not the catalogue's authority: a stored title is only
    replaced while it is the bare SKU (no description was known), and a stored
    price only while it is missing. Catalogue sync changes the rest. A SKU is
    one product across merchants, and a stored product keeps its merchant;
    where ``mapped_skus`` (the SKUs a merchant map names) gives one to another
    merchant, it is reported. A SKU the map does not name goes to the default
    merchant only when it is new, and is not reported.
    """
    rows = pd.DataFrame(
        {
            "merchant_id": products["merchant"].map(merchant_ids),
            "external_id": products["sku"],
            "title": products["title"],
            "price": products["price"],
            "mapped": products["sku"].isin(mapped_skus),
        }
    )
    table = Product._meta.db_table
    new_hash = _TEXT_HASH_SQL.format(title="title", description="''")
    filled_hash = _TEXT_HASH_SQL.format(
        title="EXCLUDED.title", description="p.description"
    )
    with connection.cursor() as cursor:
        _copy_into_temp_table(
            cursor,
            "product_stage",
            "merchant_id bigint, external_id text, title text, price numeric, "
            "mapped boolean",
            rows,
        )
        cursor.execute(
            f"""
            INSERT INTO {table} AS p (merchant_id, external_id, title, description,
                price, is_active, in_stock, text_hash, created_at, updated_at)
            SELECT merchant_id, external_id, title, '', price, true, true,
                {new_hash}, now(), now()
            FROM product_stage
            ON CONFLICT (external_id) DO UPDATE
            SET title = CASE WHEN p.title = p.external_id
                    THEN EXCLUDED.title ELSE p.title END,
                price = coalesce(p.price, EXCLUDED.price),
                text_hash = CASE WHEN p.title = p.external_id
                    THEN {filled_hash}
                    ELSE p.text_hash END,
                updated_at = now()
            WHERE (p.title = p.external_id AND EXCLUDED.title <> EXCLUDED.external_id)
                OR (p.price IS NULL AND EXCLUDED.price IS NOT NULL)
            RETURNING (xmax = 0) AS inserted
            """
        )
        inserted = [row[0] for row in cursor.fetchall()]

        # After the upsert every staged SKU is stored, whoever stored it.
        merchant_table = Merchant._meta.db_table
        cursor.execute(
            f"""
            SELECT s.external_id, stored.external_id, mapped.external_id
            FROM product_stage s
            JOIN {table} p ON p.external_id = s.external_id
            JOIN {merchant_table} stored ON stored.id = p.merchant_id
            JOIN {merchant_table} mapped ON mapped.id = s.merchant_id
            WHERE s.mapped AND p.merchant_id <> s.merchant_id
            ORDER BY s.external_id
            """
        )
        merchants_kept = [MerchantKept(*row) for row in cursor.fetchall()]
    return ProductUpsert(
        added=sum(inserted),
        updated=len(inserted) - sum(inserted),
        merchants_kept=merchants_kept,
    )


# The same digest as commerce.models.product_text_hash, computed in the database.
_TEXT_HASH_SQL = (
    "encode(sha256(convert_to({title} || chr(10) || {description}, 'UTF8')), 'hex')"
)


def _upsert_customers(customers: pd.DataFrame) -> int:
    """Insert new customers and fill in missing countries; return how many are new."""
    table = Customer._meta.db_table
    with connection.cursor() as cursor:
        _copy_into_temp_table(
            cursor,
            "customer_stage",
            "external_id text, country text",
            customers.rename(columns={"customer": "external_id"}),
        )
        cursor.execute(
            f"""
            INSERT INTO {table} AS c (external_id, country, group_attributes,
                group_attributes_consent, created_at, updated_at)
            SELECT external_id, coalesce(country, ''), '{{}}', false, now(), now()
            FROM customer_stage
            ON CONFLICT (external_id) DO UPDATE
            SET country = EXCLUDED.country, updated_at = now()
            WHERE c.country = '' AND EXCLUDED.country <> ''
            RETURNING (xmax = 0) AS inserted
            """
        )
        return sum(row[0] for row in cursor.fetchall())


def _product_ids(skus: pd.Series) -> dict[str, int]:
    """Map each planned SKU to the id of its product, whichever merchant sells it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id, id FROM {Product._meta.db_table} "
            "WHERE external_id = ANY(%s)",
            [skus.tolist()],
        )
        return dict(cursor.fetchall())


def _insert_events(batch: pd.DataFrame, *, source: str) -> int:
    """Copy one batch in and insert the events not yet stored; return how many."""
    table = FeedbackEvent._meta.db_table
    columns = [
        "client_event_id",
        "kind",
        "quantity",
        "value",
        "occurred_at",
        "customer_id",
        "session_id",
        "order_id",
        "product_id",
    ]
    with connection.cursor() as cursor:
        _copy_into_temp_table(
            cursor,
            "event_stage",
            "client_event_id text, kind text, quantity integer, value numeric, "
            "occurred_at timestamptz, customer_id bigint, session_id text, "
            "order_id text, product_id bigint",
            batch[columns],
        )
        cursor.execute(
            f"""
            INSERT INTO {table} (source, client_event_id, kind, quantity, value,
                occurred_at, received_at, customer_id, session_id, order_id,
                product_id)
            SELECT %s, client_event_id, kind, quantity, value, occurred_at, now(),
                customer_id, coalesce(session_id, ''), coalesce(order_id, ''),
                product_id
            FROM event_stage
            ON CONFLICT (source, client_event_id) DO NOTHING
            """,
            [source],
        )
        return cursor.rowcount


def _copy_into_temp_table(
    cursor: Any, name: str, columns_sql: str, rows: pd.DataFrame
) -> None:
    """Create a temporary table dropped at commit and COPY ``rows`` into it."""
    # Inside an outer transaction the previous batch's table is still there.
    cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
    cursor.execute(f"CREATE TEMPORARY TABLE {name} ({columns_sql}) ON COMMIT DROP")
    buffer = io.StringIO()
    rows.to_csv(buffer, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S%z")
    with cursor.copy(f"COPY {name} FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())


def _finish_run(
    run: ImportRun,
    *,
    status: ImportStatus,
    counts: dict[str, int] | None = None,
    error: str = "",
) -> None:
    with transaction.atomic():
        run.status = status
        run.finished_at = timezone.now()
        run.error = error
        if counts is not None:
            run.counts = counts
        run.save(update_fields=["status", "finished_at", "error", "counts"])
        record_governance_event(
            action=f"import.{status}",
            target_type="import_run",
            target_id=str(run.pk),
            actor_label="import_transactions",
            after={"path": run.path, "counts": run.counts, "error": error},
        )


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EventOutcome:
    index: int
    client_event_id: str
    event_id: int
    status: str


@dataclass(frozen=True)
class _SlateShown:
    """What an event naming a served slate is checked against."""

    customer_id: int | None
    session_id: str
    position_of: dict[int, int]
    """The position of each product of the slate, by product id."""


@dataclass(frozen=True)
class _References:
    """The rows a batch of events names, by the values the events give."""

    product_ids: dict[str, int]
    customer_ids: dict[str, int]
    slates: dict[uuid.UUID, _SlateShown]


# What an event says, as stored: a resend must say the same under its client id.
_STORED_EVENT_FIELDS = (
    "kind",
    "product_id",
    "customer_id",
    "session_id",
    "quantity",
    "value",
    "occurred_at",
    "order_id",
    "slate_id",
    "slate_position",
)


def record_feedback_events(
    *, source: str, events: list[dict[str, Any]]
) -> list[EventOutcome]:
    """Store a batch of feedback events, all or nothing; resent events are kept once.

    Products, customers and slates are resolved first: if any event names an
    unknown one, or a slate that was not served to its customer (or session)
    or does not hold its product at its position, InvalidEventsError lists
    every such event and nothing is stored. The rows found stay locked against
    deletion until the batch is committed, so one deleted meanwhile is reported
    the same way, never as a broken foreign key. An event whose (source,
    client_event_id) is already stored is not stored again; its outcome names
    the original event. If the stored event says something else,
    IdempotencyKeyReusedError names every such event and nothing is stored.
    Events of one batch that share a client event id are taken to say the
    same; ``validate_feedback_batch`` refuses a batch where they do not.
    """
    client_ids = [e["client_event_id"] for e in events]
    table = FeedbackEvent._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        references = _lock_references(cursor, events)
        product_ids, customer_ids = references.product_ids, references.customer_ids
        # One JSON parameter rather than an array per column: Django's psycopg
        # cursor quotes parameters in Python, element by element.
        rows = json.dumps(
            [
                {
                    "client_event_id": e["client_event_id"],
                    "kind": e["kind"],
                    "product_id": product_ids[e["product"]],
                    "customer_id": customer_ids.get(e["customer"]),
                    "session_id": e["session_id"],
                    "order_id": e["order_id"],
                    "quantity": e["quantity"],
                    "value": None if e["value"] is None else str(e["value"]),
                    "occurred_at": e["occurred_at"].isoformat(),
                    "slate_id": None if e["slate_id"] is None else str(e["slate_id"]),
                    "slate_position": e["position"],
                }
                for e in events
            ]
        )
        cursor.execute(
            f"""
            INSERT INTO {table} (source, client_event_id, kind, product_id,
                customer_id, session_id, order_id, quantity, value, occurred_at,
                slate_id, slate_position, received_at)
            SELECT %s, client_event_id, kind, product_id, customer_id, session_id,
                order_id, quantity, value, occurred_at, slate_id, slate_position,
                now()
            FROM json_populate_recordset(NULL::{table}, %s::json)
            ON CONFLICT (source, client_event_id) DO NOTHING
            RETURNING id, client_event_id
            """,
            [source, rows],
        )
        created = {client_id: pk for pk, client_id in cursor.fetchall()}

        # Events stored before, by an earlier call or a concurrent one that won
        # (its commit is visible to this statement).
        stored = dict(created)
        if len(created) < len(client_ids):
            stored.update(
                _check_resent_events(cursor, source, events, created, references)
            )

    outcomes = []
    first_seen: set[str] = set()
    for index, client_id in enumerate(client_ids):
        fresh = client_id in created and client_id not in first_seen
        first_seen.add(client_id)
        outcomes.append(
            EventOutcome(
                index=index,
                client_event_id=client_id,
                event_id=stored[client_id],
                status="created" if fresh else "duplicate",
            )
        )
    return outcomes


def _check_resent_events(
    cursor: Any,
    source: str,
    events: list[dict[str, Any]],
    created: dict[str, int],
    references: _References,
) -> dict[str, int]:
    """Return the stored ids of the events that were not created, or raise
    IdempotencyKeyReusedError naming every one whose stored event differs."""
    cursor.execute(
        f"""
        SELECT client_event_id, id, {", ".join(_STORED_EVENT_FIELDS)}
        FROM {FeedbackEvent._meta.db_table}
        WHERE source = %s AND client_event_id = ANY(%s)
        """,
        [source, list({e["client_event_id"] for e in events} - created.keys())],
    )
    stored_events = {row[0]: row[1:] for row in cursor.fetchall()}
    problems = []
    for index, event in enumerate(events):
        stored = stored_events.get(event["client_event_id"])
        if stored is None:
            continue
        said = (
            event["kind"],
            references.product_ids[event["product"]],
            references.customer_ids.get(event["customer"]),
            event["session_id"],
            event["quantity"],
            event["value"],
            event["occurred_at"],
            event["order_id"],
            event["slate_id"],
            event["position"],
        )
        changed = [
            field
            for field, now, then in zip(
                _STORED_EVENT_FIELDS, said, stored[1:], strict=True
            )
            if now != then
        ]
        if changed:
            problems.append(
                {
                    "index": index,
                    "field": "client_event_id",
                    "code": IdempotencyKeyReusedError.code,
                    "message": (
                        f"Event {event['client_event_id']} was stored with another "
                        f"{', '.join(changed)}; give a new event a new client event id."
                    ),
                }
            )
    if problems:
        raise IdempotencyKeyReusedError(
            f"{len(problems)} of {len(events)} events reuse the client event id of "
            "a stored event that says something else; nothing was stored.",
            problems,
        )
    return {client_id: stored[0] for client_id, stored in stored_events.items()}


def feedback_reference_problems(
    events: Mapping[int, dict[str, Any]],
) -> list[dict[str, object]]:
    """List what the events, by their index in a batch, name that is unknown or
    does not match their slate, as ``{"index", "field", "code", "message"}``.

    For reporting every problem of a batch that is refused anyway; storing a
    batch checks the same under lock.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        references = _find_references(cursor, events.values())
    return _reference_problems(events.items(), references)


def _lock_references(cursor: Any, events: list[dict[str, Any]]) -> _References:
    """Find the products, customers and slates the events name, and lock them.

    FOR KEY SHARE is the lock the foreign keys take at commit, taken early: a
    row deleted meanwhile is not found, and a delete waits for this commit.
    Raise InvalidEventsError naming every event that names something unknown
    or does not match its slate.
    """
    references = _find_references(cursor, events)
    problems = _reference_problems(enumerate(events), references)
    if problems:
        raise InvalidEventsError(
            f"{len({p['index'] for p in problems})} of {len(events)} events refer to "
            "unknown products, customers or slates, or do not match their slate; "
            "nothing was stored.",
            problems,
        )
    return references


def _find_references(cursor: Any, events: Collection[dict[str, Any]]) -> _References:
    """Read, under FOR KEY SHARE, the rows the events name."""
    skus, customers = set(), set()
    for event in events:
        skus.add(event["product"])
        customers.add(event["customer"])
    customers.discard(None)
    product_ids = _locked_ids(cursor, Product, "external_id", skus)
    shown = {
        (event["slate_id"], product_ids.get(event["product"]))
        for event in events
        if event["slate_id"] is not None
    }
    return _References(
        product_ids=product_ids,
        customer_ids=_locked_ids(cursor, Customer, "external_id", customers),
        slates=_locked_slates(cursor, shown),
    )


def _reference_problems(
    events: Iterable[tuple[int, dict[str, Any]]], references: _References
) -> list[dict[str, object]]:
    problems = []
    for index, event in events:
        product_id = references.product_ids.get(event["product"])
        customer_id = references.customer_ids.get(event["customer"])
        if product_id is None:
            problems.append(
                _unknown(index, "product", "unknown_product", event["product"])
            )
        if event["customer"] and customer_id is None:
            problems.append(
                _unknown(index, "customer", "unknown_customer", event["customer"])
            )
        if event["slate_id"] is None:
            continue
        slate = references.slates.get(event["slate_id"])
        if slate is None:
            problems.append(
                _unknown(index, "slate_id", "unknown_slate", event["slate_id"])
            )
            continue
        shown_to_event = (
            slate.customer_id is not None and customer_id == slate.customer_id
        ) or (bool(slate.session_id) and event["session_id"] == slate.session_id)
        if not shown_to_event and (customer_id is not None or not event["customer"]):
            problems.append(
                _problem(
                    index,
                    "customer" if event["customer"] else "session_id",
                    "slate_customer_mismatch",
                    f"Slate {event['slate_id']} was served to another customer "
                    "or session.",
                )
            )
        if product_id is None:
            continue
        position = slate.position_of.get(product_id)
        if position is None:
            problems.append(
                _problem(
                    index,
                    "product",
                    "not_in_slate",
                    f"Slate {event['slate_id']} does not hold {event['product']}.",
                )
            )
        elif event["position"] is not None and event["position"] != position:
            problems.append(
                _problem(
                    index,
                    "position",
                    "wrong_position",
                    f"Slate {event['slate_id']} holds {event['product']} at "
                    f"position {position}, not {event['position']}.",
                )
            )
    return problems


def _locked_ids(
    cursor: Any, model: Any, field: str, values: set[Any]
) -> dict[Any, int]:
    """Map each of ``values`` found in ``model``'s ``field`` to its row's id."""
    if not values:
        return {}
    cursor.execute(
        f"SELECT {field}, id FROM {model._meta.db_table} "
        f"WHERE {field} = ANY(%s) FOR KEY SHARE",
        [list(values)],
    )
    return dict(cursor.fetchall())


def _locked_slates(
    cursor: Any, shown: set[tuple[uuid.UUID, int | None]]
) -> dict[uuid.UUID, _SlateShown]:
    """Read the customer and session of each slate that ``shown`` pairs with a
    product id, and the product's position in it (absent when it lacks it)."""
    if not shown:
        return {}
    cursor.execute(
        f"""
        WITH shown AS (
            SELECT (pair->>0)::uuid AS slate_id, (pair->>1)::bigint AS product_id
            FROM json_array_elements(%s::json) AS pair
        )
        SELECT slate.id, slate.customer_id, slate.session_id, item.product_id,
            item.position
        FROM {ServedSlate._meta.db_table} slate
        LEFT JOIN (
            shown JOIN {ServedSlateItem._meta.db_table} item
                USING (slate_id, product_id)
        ) ON item.slate_id = slate.id
        WHERE slate.id IN (SELECT slate_id FROM shown)
        FOR KEY SHARE OF slate
        """,
        [json.dumps([[str(slate_id), product_id] for slate_id, product_id in shown])],
    )
    slates: dict[uuid.UUID, _SlateShown] = {}
    for slate_id, customer_id, session_id, product_id, position in cursor.fetchall():
        slate = slates.get(slate_id)
        if slate is None:
            slate = slates[slate_id] = _SlateShown(customer_id, session_id, {})
        if product_id is not None:
            slate.position_of[product_id] = position
    return slates


def _unknown(index: int, field: str, code: str, value: object) -> dict[str, object]:
    return _problem(index, field, code, f"No {field.replace('_id', '')} {value!s}.")


def _problem(index: int, field: str, code: str, message: str) -> dict[str, object]:
    return {"index": index, "field": field, "code": code, "message": message}


@dataclass(frozen=True)
class IssuedKey:
    client: ApiClient
    key: str
    """The full key: shown once, never stored."""


def create_api_client(
    *, name: str, scopes: list[str], source: str = "", actor_label: str = ""
) -> IssuedKey:
    """Create a client with a fresh key; only the key's hash is kept."""
    from commerce.api.authentication import KEY_PREFIX_LENGTH, hash_key

    unknown = sorted(set(scopes) - set(ApiScope.values))
    if unknown:
        raise ApiClientError(
            f"Unknown scope(s): {', '.join(unknown)}. "
            f"Scopes are: {', '.join(ApiScope.values)}."
        )
    key = f"grk_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        if ApiClient.objects.filter(name=name).exists():
            raise ApiClientError(f"A client named {name!r} exists already.")
        client = ApiClient.objects.create(
            name=name,
            source=source or name,
            key_prefix=key[:KEY_PREFIX_LENGTH],
            key_hash=hash_key(key),
            scopes=sorted(set(scopes)),
        )
        record_governance_event(
            action="api_client.created",
            target_type="api_client",
            target_id=str(client.pk),
            actor_label=actor_label or "create_api_client",
            after={"name": name, "scopes": client.scopes, "source": client.source},
        )
    return IssuedKey(client=client, key=key)


def revoke_api_client(
    *, name: str, reason: str, actor: Actor = None, actor_label: str = ""
) -> ApiClient:
    """Deactivate a client's key for good; its calls are refused from now on.

    A key is rotated by creating a new client for the same ``source``, moving
    the frontend to the new key and then revoking the old client.
    """
    if not reason.strip():
        raise ApiClientError("Revoking a client needs a reason.")
    with transaction.atomic():
        client = ApiClient.objects.select_for_update().filter(name=name).first()
        if client is None:
            raise ApiClientError(f"No client named {name!r}.")
        if not client.is_active:
            raise ApiClientError(f"The client {name!r} is revoked already.")
        client.is_active = False
        client.save(update_fields=["is_active"])
        record_governance_event(
            action="api_client.revoked",
            target_type="api_client",
            target_id=str(client.pk),
            actor=actor,
            actor_label=actor_label or "revoke_api_client",
            before={"is_active": True},
            after={"is_active": False},
            reason=reason,
        )
    logger.info(
        "API client %s revoked", client.name, extra={"api_client_id": client.pk}
    )
    return client


@dataclass(frozen=True)
class CatalogueSync:
    created: int
    updated: int
    unchanged: int
    changed_text: list[int]
    """Products whose title or description changed (or are new): to embed."""
    embedding_deferred: bool = False
    """The task queue could not take the embedding of ``changed_text``; the
    scheduled embedding run embeds those products."""


PRODUCT_FIELDS = ("title", "description", "price", "is_active", "in_stock")
# What a new product has in the fields its sync does not send; it needs a title.
NEW_PRODUCT_DEFAULTS: dict[str, Any] = {
    "description": "",
    "price": None,
    "is_active": True,
    "in_stock": True,
}


def sync_products(
    *, products: list[dict[str, Any]], default_merchant: str, actor_label: str
) -> CatalogueSync:
    """Create or update products by SKU, all or nothing; report what changed.

    A stored product changes only in the fields of ``PRODUCT_FIELDS`` that its
    item holds; a new one needs a title and takes ``NEW_PRODUCT_DEFAULTS`` for
    the rest. InvalidProductsError refuses a batch that gives a SKU twice or a
    new product without a title.

    A SKU names one product across merchants, and a sync never moves a product
    to another merchant: if any product is given to another merchant than the
    one that sells its SKU (its ``merchant``, or the default merchant when it
    names none), SkuOwnedByOtherMerchantError lists every such product and
    nothing is stored.

    A changed title or description changes the product's text hash, and once
    the sync has committed a worker is asked to embed the new texts. When the
    task queue cannot take that task the sync still stands: the result says
    the embedding was deferred, and the scheduled embedding run, which embeds
    every text without a vector, catches up.
    """
    _refuse_repeated_skus(products)
    try:
        sync = _sync_products(products, default_merchant, actor_label)
    except IntegrityError as error:
        if _violated_constraint(error) != "product_unique_sku":
            raise
        # A concurrent sync stored one of the new SKUs after this one looked
        # them up. It has committed, so a second pass finds it: it updates the
        # product, or refuses the batch if another merchant sells it.
        sync = _sync_products(products, default_merchant, actor_label)
    if not sync.changed_text:
        return sync
    if transaction.get_connection().in_atomic_block:
        # The caller's transaction holds the sync: ask once that commits.
        transaction.on_commit(lambda: _queue_embedding(sync.changed_text))
        return sync
    if _queue_embedding(sync.changed_text):
        return sync
    return replace(sync, embedding_deferred=True)


def _sync_products(
    products: list[dict[str, Any]], default_merchant: str, actor_label: str
) -> CatalogueSync:
    merchants = [fields.get("merchant") or default_merchant for fields in products]
    with transaction.atomic():
        existing = _lock_products({fields["external_id"] for fields in products})
        _refuse_skus_of_other_merchants(products, merchants, existing)
        _refuse_new_products_without_title(products, existing)
        merchant_ids = _ensure_merchants(set(merchants), actor_label)

        created = updated = 0
        changed_text = []
        # The changed fields of each product, by SKU: before and after the sync.
        before: dict[str, dict[str, Any]] = {}
        after: dict[str, dict[str, Any]] = {}
        for fields, merchant in zip(products, merchants, strict=True):
            sku = fields["external_id"]
            sent = {name: fields[name] for name in PRODUCT_FIELDS if name in fields}
            product = existing.get(sku)
            if product is None:
                product = Product(merchant_id=merchant_ids[merchant], external_id=sku)
                changes = {**NEW_PRODUCT_DEFAULTS, **sent}
                created += 1
            else:
                changes = {
                    name: value
                    for name, value in sent.items()
                    if getattr(product, name) != value
                }
                if not changes:
                    continue
                before[sku] = {
                    name: _audit_value(getattr(product, name)) for name in changes
                }
                updated += 1
            after[sku] = {name: _audit_value(value) for name, value in changes.items()}

            old_hash = product.text_hash
            for name, value in changes.items():
                setattr(product, name, value)
            product.save()
            if product.text_hash != old_hash:
                changed_text.append(product.pk)

        record_governance_event(
            action="catalogue.synced",
            target_type="catalogue",
            target_id="products",
            actor_label=actor_label,
            before={"products": before},
            after={
                "created": created,
                "updated": updated,
                "received": len(products),
                "products": after,
            },
        )
    return CatalogueSync(
        created=created,
        updated=updated,
        unchanged=len(products) - created - updated,
        changed_text=changed_text,
    )


def _audit_value(value: Any) -> Any:
    """A product field's value as the audit's JSON holds it: prices as text."""
    return str(value) if isinstance(value, Decimal) else value


def _queue_embedding(product_ids: list[int]) -> bool:
    """Ask a worker to embed the changed product texts; False when the task
    queue cannot take the task (a warning is logged)."""
    from kombu.exceptions import OperationalError as BrokerError

    from rl_engine.tasks import embed_products

    try:
        embed_products.delay()
    except (BrokerError, OSError) as error:
        logger.warning(
            "The task queue could not take the embedding of %d changed products "
            "(%s: %s); the scheduled embedding run will embed them",
            len(product_ids),
            type(error).__name__,
            error,
            extra={"product_ids": product_ids[:100]},
        )
        return False
    return True


def _lock_products(skus: set[str]) -> dict[str, Product]:
    """Return the stored products of ``skus`` by SKU, locked until commit."""
    products = (
        Product.objects.select_for_update(of=("self",))
        .select_related("merchant")
        .filter(external_id__in=skus)
    )
    return {product.external_id: product for product in products}


def _refuse_repeated_skus(products: list[dict[str, Any]]) -> None:
    """Raise InvalidProductsError naming every product whose SKU the batch
    gives more than once: which of its items would win is anyone's guess."""
    indexes_of: dict[str, list[int]] = {}
    for index, fields in enumerate(products):
        indexes_of.setdefault(fields["external_id"], []).append(index)
    problems: list[dict[str, object]] = []
    for index, fields in enumerate(products):
        sku = fields["external_id"]
        indexes = indexes_of[sku]
        if len(indexes) == 1:
            continue
        listed = ", ".join(str(other) for other in indexes)
        problems.append(
            {
                "index": index,
                "field": "external_id",
                "code": "duplicate_in_batch",
                "message": f"Products {listed} of this batch share the SKU {sku}; "
                "give each SKU once.",
            }
        )
    if problems:
        raise InvalidProductsError(
            f"{len(problems)} of {len(products)} products share their SKU with "
            "another product of the batch; nothing was stored.",
            problems,
        )


def _refuse_skus_of_other_merchants(
    products: list[dict[str, Any]],
    merchants: list[str],
    existing: Mapping[str, Product],
) -> None:
    """Raise SkuOwnedByOtherMerchantError naming every product given to another
    merchant than the one that sells its SKU."""
    problems: list[dict[str, object]] = []
    for index, (fields, merchant) in enumerate(zip(products, merchants, strict=True)):
        sku = fields["external_id"]
        product = existing.get(sku)
        if product is None or product.merchant.external_id == merchant:
            continue
        problems.append(
            {
                "index": index,
                "field": "external_id",
                "code": SkuOwnedByOtherMerchantError.code,
                "message": f"SKU {sku} belongs to merchant "
                f"{product.merchant.external_id!r}, not {merchant!r}. "
                "A SKU names one product across merchants.",
            }
        )
    if problems:
        raise SkuOwnedByOtherMerchantError(
            f"{len(problems)} of {len(products)} products have a SKU that another "
            "merchant sells; nothing was stored.",
            problems,
        )


def _refuse_new_products_without_title(
    products: list[dict[str, Any]], existing: Mapping[str, Product]
) -> None:
    """Raise InvalidProductsError naming every new product that has no title."""
    problems: list[dict[str, object]] = [
        {
            "index": index,
            "field": "title",
            "code": "required",
            "message": f"SKU {fields['external_id']} is not stored yet: "
            "a new product needs a title.",
        }
        for index, fields in enumerate(products)
        if fields["external_id"] not in existing and "title" not in fields
    ]
    if problems:
        raise InvalidProductsError(
            f"{len(problems)} of {len(products)} products are new and have no "
            "title; nothing was stored.",
            problems,
        )


def _violated_constraint(error: IntegrityError) -> str | None:
    """Return the name of the constraint that ``error`` broke, if the database
    names one."""
    diagnostics = getattr(error.__cause__, "diag", None)
    return getattr(diagnostics, "constraint_name", None)


def sync_customers(
    *, customers: list[dict[str, Any]], actor_label: str
) -> tuple[int, int]:
    """Create or update customers by external id; return (created, updated).

    Group attributes and the consent to use them can change here, so every
    sync is logged with the ids whose consent changed.
    """
    created = updated = 0
    consent_changed = []
    with transaction.atomic():
        consent_before = dict(
            Customer.objects.filter(
                external_id__in=[c["external_id"] for c in customers]
            ).values_list("external_id", "group_attributes_consent")
        )
        for fields in customers:
            _, was_created = Customer.objects.update_or_create(
                external_id=fields["external_id"],
                defaults={
                    "country": fields["country"],
                    "group_attributes": fields["group_attributes"],
                    "group_attributes_consent": fields["group_attributes_consent"],
                },
            )
            created += was_created
            updated += not was_created
            before = consent_before.get(fields["external_id"])
            if before is not None and before != fields["group_attributes_consent"]:
                consent_changed.append(fields["external_id"])
        record_governance_event(
            action="customers.synced",
            target_type="customers",
            target_id="customers",
            actor_label=actor_label,
            after={
                "created": created,
                "updated": updated,
                "consent_changed": consent_changed,
            },
        )
    return created, updated


@dataclass(frozen=True)
class ServedItem:
    product_id: int
    score: float
    propensity: float
    reason: str


def log_served_slate(
    *,
    customer_id: int | None,
    session_id: str,
    context: dict[str, Any],
    policy_version: str,
    items: list[ServedItem],
) -> ServedSlate:
    """Write a served slate and its items, positions from 1, in one statement.

    Every recommendation logs its slate before it answers, so the write is one
    statement: one round trip to the database and one transaction.
    """
    slate = ServedSlate(
        customer_id=customer_id,
        session_id=session_id,
        context=context,
        policy_version=policy_version,
        created_at=timezone.now(),
    )
    columns = [
        "id",
        "customer_id",
        "session_id",
        "context",
        "policy_version",
        "created_at",
    ]
    values = [
        _concrete_field(ServedSlate, name).get_db_prep_save(
            getattr(slate, name), connection
        )
        for name in columns
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH slate AS (
                INSERT INTO {ServedSlate._meta.db_table} ({", ".join(columns)})
                VALUES ({", ".join(["%s"] * len(columns))})
                RETURNING id
            )
            INSERT INTO {ServedSlateItem._meta.db_table} (slate_id, product_id,
                position, score, propensity, reason)
            SELECT slate.id, item.*
            FROM slate, UNNEST(%s::bigint[], %s::smallint[], %s::float8[],
                %s::float8[], %s::varchar[]) AS item
            """,
            [
                *values,
                [item.product_id for item in items],
                list(range(1, len(items) + 1)),
                [item.score for item in items],
                [item.propensity for item in items],
                [item.reason for item in items],
            ],
        )
    slate._state.adding = False
    slate._state.db = connection.alias
    return slate


def _concrete_field(model: type[models.Model], name: str) -> "models.Field[Any, Any]":
    """A model's own column by field name, for building raw SQL values."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field

"""Replay real customers against the running API, over HTTP.

For each invoice of a period, in time order, the replayer asks the API for a
slate for the invoice's customer, then reports what happened as feedback
events: an impression for every slate item, a click and a purchase for slate
items the customer bought in that invoice, and the invoice's other purchases.
It measures request latency and checks that every acknowledged event was
stored.
"""

import datetime as dt
import http.client
import json
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from commerce.models import ApiClient, EventKind, FeedbackEvent


@dataclass(frozen=True)
class InvoiceLine:
    sku: str
    quantity: int
    value: Decimal | None


@dataclass(frozen=True)
class Invoice:
    order_id: str
    customer: str
    country: str
    occurred_at: dt.datetime
    lines: tuple[InvoiceLine, ...]


def invoices_between(
    since: dt.datetime,
    until: dt.datetime | None,
    limit: int | None = None,
    source: str = "online-retail",
) -> list[Invoice]:
    """Return the purchase invoices of known customers in ``[since, until)``.

    Only events of ``source`` are read, so purchases that an earlier replay
    sent back through the API do not double the invoices.
    """
    events = FeedbackEvent.objects.filter(
        source=source,
        kind=EventKind.PURCHASE,
        customer__isnull=False,
        occurred_at__gte=since,
    ).exclude(order_id="")
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    rows = events.order_by("occurred_at", "order_id", "id").values_list(
        "order_id",
        "customer__external_id",
        "customer__country",
        "occurred_at",
        "product__external_id",
        "quantity",
        "value",
    )
    invoices: dict[str, Invoice] = {}
    lines: dict[str, list[InvoiceLine]] = {}
    for order, customer, country, moment, sku, quantity, value in rows.iterator():
        if order not in invoices:
            if limit is not None and len(invoices) >= limit:
                break
            invoices[order] = Invoice(order, customer, country, moment, ())
            lines[order] = []
        lines[order].append(InvoiceLine(sku, quantity, value))
    return [
        Invoice(
            i.order_id, i.customer, i.country, i.occurred_at, tuple(lines[i.order_id])
        )
        for i in invoices.values()
    ]


class ServerUnavailableError(Exception):
    """The API did not answer its health check, so a replay would only fail."""


@dataclass
class ReplayReport:
    """What the replay saw."""

    invoices: int = 0
    slates: int = 0
    slates_with_a_purchase: int = 0
    recommended_and_bought: int = 0
    recommended: int = 0
    events_sent: int = 0
    events_acknowledged: int = 0
    server_errors: int = 0
    client_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    acknowledged_ids: set[str] = field(default_factory=set)
    error_samples: list[str] = field(default_factory=list)

    def latency(self, percentile: float) -> float:
        return (
            float(np.percentile(self.latencies_ms, percentile))
            if self.latencies_ms
            else 0.0
        )


class TrafficReplayer:
    """Drives the API from several threads, each with its own keep-alive connection."""

    def __init__(
        self, base_url: str, api_key: str, *, k: int, concurrency: int
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {
            "Authorization": f"Api-Key {api_key}",
            "Content-Type": "application/json",
        }
        self.base_url = base_url
        self.k = k
        self.concurrency = concurrency
        self._local = threading.local()
        self._lock = threading.Lock()

    def check_health(self) -> None:
        """Raise ``ServerUnavailableError`` unless ``GET {url}/health`` answers 200."""
        health_url = f"{self.base_url.rstrip('/')}/health"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request("GET", f"{self.prefix}/health")
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise ServerUnavailableError(
                f"No server answers at {health_url} ({error!r})."
            ) from error
        finally:
            connection.close()
        if response.status != 200:
            raise ServerUnavailableError(
                f"GET {health_url} answered {response.status}: "
                f"{payload[:200].decode(errors='replace')}"
            )

    def run(
        self,
        invoices: Iterable[Invoice],
        report: ReplayReport | None = None,
        on_invoice: Any = None,
    ) -> ReplayReport:
        report = report or ReplayReport()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for outcome in pool.map(self._replay, invoices):
                self._merge(report, outcome)
                if on_invoice is not None:
                    on_invoice(1)
        return report

    def _replay(self, invoice: Invoice) -> ReplayReport:
        outcome = ReplayReport(invoices=1)
        started = time.perf_counter()
        status, answer = self._post(
            "/recommendations",
            {
                "customer": invoice.customer,
                "k": self.k,
                "context": {"country": invoice.country},
                # The store already holds this invoice: serve from before it.
                "as_of": invoice.occurred_at.isoformat(),
            },
        )
        outcome.latencies_ms.append((time.perf_counter() - started) * 1000)
        if not self._count_status(outcome, status, answer):
            return outcome

        outcome.slates = 1
        slate_items = answer["items"]
        bought = {line.sku for line in invoice.lines}
        hits = [item for item in slate_items if item["product"] in bought]
        outcome.recommended = len(slate_items)
        outcome.recommended_and_bought = len(hits)
        outcome.slates_with_a_purchase = int(bool(hits))

        events = list(self._events(invoice, answer["slate_id"], slate_items, bought))
        for start in range(0, len(events), 500):
            batch = events[start : start + 500]
            outcome.events_sent += len(batch)
            status, acknowledged = self._post("/events", {"events": batch})
            if self._count_status(outcome, status, acknowledged):
                outcome.events_acknowledged += len(acknowledged["results"])
                outcome.acknowledged_ids |= {
                    r["client_event_id"] for r in acknowledged["results"]
                }
        return outcome

    def _events(
        self,
        invoice: Invoice,
        slate_id: str,
        slate_items: list[dict[str, Any]],
        bought: set[str],
    ) -> Iterator[dict[str, Any]]:
        moment = invoice.occurred_at.isoformat()
        position_of = {item["product"]: item["position"] for item in slate_items}
        base = {"customer": invoice.customer, "occurred_at": moment}
        for item in slate_items:
            yield {
                **base,
                "client_event_id": f"replay:{slate_id}:{item['position']}:impression",
                "kind": "impression",
                "product": item["product"],
                "slate_id": slate_id,
                "position": item["position"],
            }
        for sku in sorted(bought & position_of.keys()):
            yield {
                **base,
                "client_event_id": f"replay:{slate_id}:{position_of[sku]}:click",
                "kind": "click",
                "product": sku,
                "slate_id": slate_id,
                "position": position_of[sku],
            }
        for number, line in enumerate(invoice.lines):
            linked = (
                {"slate_id": slate_id, "position": position_of[line.sku]}
                if line.sku in position_of
                else {}
            )
            yield {
                **base,
                **linked,
                # Keyed by slate as well: a later replay sends the line again,
                # linked to its own slate, and each reader counts a line once.
                "client_event_id": f"replay:{slate_id}:{invoice.order_id}:{number}"
                ":purchase",
                "kind": "purchase",
                "product": line.sku,
                "quantity": line.quantity,
                "value": str(line.value) if line.value is not None else None,
                "order_id": invoice.order_id,
            }

    def _count_status(self, outcome: ReplayReport, status: int, answer: Any) -> bool:
        if status >= 500:
            outcome.server_errors += 1
        elif status >= 400:
            outcome.client_errors += 1
        if status >= 400 and len(outcome.error_samples) < 5:
            outcome.error_samples.append(f"{status}: {str(answer)[:300]}")
        return status < 400

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self._local.connection = connection
        try:
            connection.request(
                "POST", f"{self.prefix}{path}", json.dumps(body), self.headers
            )
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            self._local.connection = None
            return 599, repr(error)
        try:
            return response.status, json.loads(payload)
        except ValueError:
            return response.status, payload[:300]

    def _merge(self, report: ReplayReport, outcome: ReplayReport) -> None:
        for name in (
            "invoices",
            "slates",
            "slates_with_a_purchase",
            "recommended_and_bought",
            "recommended",
            "events_sent",
            "events_acknowledged",
            "server_errors",
            "client_errors",
        ):
            setattr(report, name, getattr(report, name) + getattr(outcome, name))
        report.latencies_ms += outcome.latencies_ms
        report.acknowledged_ids |= outcome.acknowledged_ids
        report.error_samples += outcome.error_samples[: 5 - len(report.error_samples)]


def missing_acknowledged_events(client: ApiClient, acknowledged: set[str]) -> int:
    """Count acknowledged events that are not in the store."""
    stored = 0
    ids = sorted(acknowledged)
    for start in range(0, len(ids), 5000):
        stored += FeedbackEvent.objects.filter(
            source=client.source, client_event_id__in=ids[start : start + 5000]
        ).count()
    return len(ids) - stored

"""Benchmark the shop API over HTTP, served by gunicorn on this machine.

Run from the project root after the main job (it needs the imported data and
a live policy): ``.venv/bin/python benchmarks/api.py``. In one run it prints:

- p50 / p99 latency of k=10 recommendations for real customers, next to the
  floor: POST /api/v1/events with one event (same authentication, one database
  write, no model), requests interleaved so both see the same machine;
- events per second through POST /api/v1/events in batches of 100, and the
  same batches validated and stored in this process as the reference.

Benchmark rows go to an API client of their own ("benchmark"), so they can be
told apart from real feedback.
"""

import datetime as dt
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import bootstrap
import numpy as np

bootstrap.setup()

from commerce.api.serializers import validate_feedback_batch  # noqa: E402
from commerce.models import ApiClient, ApiScope, Customer, EventKind, FeedbackEvent  # noqa: E402
from commerce.services import create_api_client, record_feedback_events  # noqa: E402
from rl_engine.selectors import live_policy_version  # noqa: E402

PORT = 8765
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "1000"))
EVENT_BATCHES = int(os.environ.get("BENCH_EVENT_BATCHES", "200"))


def main() -> None:
    version = live_policy_version()
    if version is None:
        sys.exit("No live policy: run scripts/main-job.sh first.")
    ApiClient.objects.filter(name="benchmark").delete()
    key = create_api_client(
        name="benchmark", scopes=[ApiScope.RECOMMENDATIONS, ApiScope.EVENTS]
    ).key
    customers = list(
        Customer.objects.filter(events__kind=EventKind.PURCHASE)
        .values_list("external_id", flat=True)
        .distinct()
    )
    product = FeedbackEvent.objects.values_list(
        "product__external_id", flat=True
    ).first()
    if product is None:
        sys.exit("The store holds no events: run scripts/main-job.sh first.")

    server = subprocess.Popen(
        [
            str(bootstrap.ROOT / ".venv" / "bin" / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{PORT}",
            # The README's deployment: one sync worker per core. Threads
            # (gthread) pin keep-alive clients to a worker and halve throughput.
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=bootstrap.ROOT,
        # The benchmark measures the server, not the per-client throttle.
        env={
            **os.environ,
            "API_EVENTS_RATE": "10000000/minute",
            "API_RECOMMENDATIONS_RATE": "10000000/minute",
        },
    )
    try:
        wait_until_up()
        print(f"gunicorn: 2 sync workers; live policy {version.label}")
        latency(key, customers, product)
        throughput(key, customers, product)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def wait_until_up() -> None:
    for _ in range(120):
        try:
            status, _ = request("GET", "/api/v1/health", None, "")
            if status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.5)
    sys.exit("gunicorn did not answer on /api/v1/health")


_connection: http.client.HTTPConnection | None = None


def request(method: str, path: str, body: object, key: str) -> tuple[int, float]:
    global _connection
    if _connection is None:
        _connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Api-Key {key}"}
    started = time.perf_counter()
    try:
        _connection.request(method, path, json.dumps(body) if body else None, headers)
        response = _connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        _connection.close()
        _connection = None
        raise
    return response.status, (time.perf_counter() - started) * 1000


def one_event(product: str, customer: str) -> dict[str, object]:
    return {
        "client_event_id": f"bench-{uuid.uuid4()}",
        "kind": "impression",
        "product": product,
        "customer": customer,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def latency(key: str, customers: list[str], product: str) -> None:
    rng = random.Random(7)
    recommend, floor, errors = [], [], 0
    for _ in range(20):  # warm both paths and the policy cache
        request(
            "POST", "/api/v1/recommendations", {"customer": customers[0], "k": 10}, key
        )
    for _ in range(REQUESTS):
        customer = rng.choice(customers)
        status, ms = request(
            "POST", "/api/v1/recommendations", {"customer": customer, "k": 10}, key
        )
        errors += status != 200
        recommend.append(ms)
        status, ms = request(
            "POST", "/api/v1/events", {"events": [one_event(product, customer)]}, key
        )
        errors += status != 200
        floor.append(ms)
    print(f"Latency over HTTP, {REQUESTS} requests each, one client")
    print(f"  {'endpoint':<34}{'p50 ms':>9}{'p99 ms':>9}")
    for name, times in (
        ("recommendations k=10", recommend),
        ("floor: events, one event", floor),
    ):
        p50, p99 = np.percentile(times, [50, 99])
        print(f"  {name:<34}{p50:>9.1f}{p99:>9.1f}")
    ratio = np.percentile(recommend, 99) / np.percentile(floor, 99)
    print(f"  p99 recommendations / p99 floor: {ratio:.2f}x (goal: 1.5x or less)")
    print(f"  non-200 answers: {errors}")


def throughput(key: str, customers: list[str], product: str) -> None:
    connections = threading.local()

    def send(_: int) -> int:
        # One connection per client thread; a sync worker closes it after
        # each answer, and http.client opens it again for the next request.
        local = getattr(connections, "http", None)
        if local is None:
            local = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            connections.http = local
        batch = [one_event(product, random.choice(customers)) for _ in range(100)]
        local.request(
            "POST",
            "/api/v1/events",
            json.dumps({"events": batch}),
            {"Content-Type": "application/json", "Authorization": f"Api-Key {key}"},
        )
        response = local.getresponse()
        response.read()
        return response.status

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(send, range(EVENT_BATCHES)))
    seconds = time.perf_counter() - started
    stored = FeedbackEvent.objects.filter(source="benchmark").count()
    print(f"Events in batches of 100, 4 concurrent clients: {EVENT_BATCHES} batches")
    print(f"  {EVENT_BATCHES * 100 / seconds:,.0f} events/s (goal: 5,000 or more)")
    print(f"  non-200 answers: {sum(status != 200 for status in statuses)}")
    print(f"  events stored by the benchmark client: {stored:,}")

    # The reference: the same batches validated and stored in this process,
    # one after another, with no HTTP, framework or client in the way.
    batches = [
        {"events": [one_event(product, random.choice(customers)) for _ in range(100)]}
        for _ in range(EVENT_BATCHES // 4)
    ]
    started = time.perf_counter()
    for batch in batches:
        record_feedback_events(
            source="benchmark-in-process", events=validate_feedback_batch(batch)
        )
    seconds = time.perf_counter() - started
    print(
        f"  reference, in this process (validate and store, one at a time): "
        f"{len(batches) * 100 / seconds:,.0f} events/s"
    )


if __name__ == "__main__":
    main()

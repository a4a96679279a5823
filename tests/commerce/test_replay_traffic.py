"""replay_traffic against a live server, on the real first week, and without one."""

import datetime as dt
import re
import socket

import pytest
from django.core.management import CommandError, call_command

from commerce.models import ApiScope, FeedbackEvent, ServedSlate
from commerce.services import create_api_client
from tests.conftest import make_policy_live

SMALL = {
    "epochs": 1,
    "batch_size": 64,
    "max_actions": 16,
    "policy": {"hidden": 8, "sequence_length": 10, "max_history_items": 32},
}


@pytest.mark.django_db(transaction=True)
def test_replay_serves_a_slate_per_invoice_and_stores_every_event(
    live_server, import_file, first_week_path, settings, tmp_path, capsys
):
    import_file(first_week_path)
    version = make_policy_live(
        settings, tmp_path / "policies", SMALL, before=dt.datetime(2010, 12, 6)
    )
    key = create_api_client(
        name="replay", scopes=[ApiScope.RECOMMENDATIONS, ApiScope.EVENTS]
    ).key

    replay = [
        "replay_traffic",
        "--url",
        f"{live_server.url}/api/v1",
        "--key",
        key,
        "--since",
        "2010-12-06",
        "--limit",
        "15",
        "--concurrency",
        "2",
    ]
    call_command(*replay, verbosity=0)

    printed = capsys.readouterr().out
    assert "Replayed 15 invoices" in printed
    assert "server errors (5xx)" in printed
    # Customers with no purchase before their invoice are served the fallback.
    assert ServedSlate.objects.count() == 15
    assert ServedSlate.objects.filter(policy_version=version.label).count() >= 1
    impressions = FeedbackEvent.objects.filter(source="replay", kind="impression")
    assert impressions.count() == 15 * 10
    assert impressions.filter(slate__isnull=False).count() == 150
    purchases = FeedbackEvent.objects.filter(source="replay", kind="purchase")
    original = FeedbackEvent.objects.filter(
        source="online-retail",
        kind="purchase",
        order_id__in=purchases.values("order_id"),
    )
    assert purchases.count() == original.count() > 0

    # A second replay sends the same lines again, each linked to its new slate.
    call_command(*replay, verbosity=0)

    again = capsys.readouterr().out
    assert re.search(r"client errors \(4xx\)\s+0\n", again)
    assert re.search(r"server errors \(5xx\)\s+0\n", again)
    assert purchases.count() == 2 * original.count()


@pytest.mark.django_db
def test_replay_stops_before_sending_when_no_server_answers(capsys):
    key = create_api_client(
        name="replay", scopes=[ApiScope.RECOMMENDATIONS, ApiScope.EVENTS]
    ).key
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1"

    with pytest.raises(CommandError) as refused:
        call_command("replay_traffic", "--url", url, "--key", key, verbosity=0)

    assert f"No server answers at {url}/health" in str(refused.value)
    assert "ConnectionRefusedError" in str(refused.value)
    assert "latency" not in capsys.readouterr().out
    assert ServedSlate.objects.count() == 0

"""run_audit on PostgreSQL: a small shop with faults injected, then real data."""

import datetime as dt
import io
import json
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from commerce.models import (
    ApiScope,
    Customer,
    EventKind,
    FeedbackEvent,
    Product,
    ServedSlate,
)
from commerce.services import ServedItem, create_api_client, log_served_slate
from governance.audits.thresholds import AuditThresholds
from governance.models import AuditRun, AuditStatus, Flag, GovernanceEvent, ReviewItem
from governance.services import AUDIT_STAGES, audit_thresholds, run_audit
from governance.tasks import run_scheduled_audit
from tests.conftest import make_policy_live
from tests.factories import CustomerFactory, MerchantFactory, ProductFactory

SECTIONS = {"fairness", "exposure", "anomalies", "quality"}


class Shop:
    """A day of traffic: 40 UK and 40 French customers, four slates each.

    Every slate shows ten of 30 products, ``promoted`` always first. UK
    customers click two items and buy one; French customers click one item
    in four slates and buy nothing. Other purchases are spread over the day.
    """

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.rng = np.random.default_rng(7)
        self.events: list[FeedbackEvent] = []
        merchants = [MerchantFactory.create(), MerchantFactory.create()]
        self.products = [
            ProductFactory.create(merchant=merchants[n % 2]) for n in range(30)
        ]
        self.promoted, self.burst_target = self.products[0], self.products[1]
        self.customers = [
            CustomerFactory.create(country="United Kingdom") for _ in range(40)
        ]
        self.customers += [CustomerFactory.create(country="France") for _ in range(40)]
        for customer in self.customers:
            for _ in range(4):
                self._serve(customer)
        for n in range(60):
            self._event(
                EventKind.PURCHASE,
                self.products[2 + n % 28],
                self.customers[n],
                self._moment(),
                order_id=f"order-{n}",
            )

    def _moment(self) -> dt.datetime:
        return self.now - dt.timedelta(minutes=int(self.rng.integers(60, 23 * 60)))

    def _serve(self, customer: Customer) -> None:
        others = self.rng.choice(np.arange(2, 30), size=9, replace=False)
        shown = [self.promoted, *(self.products[i] for i in others)]
        slate = log_served_slate(
            customer_id=customer.pk,
            session_id="",
            context={},
            policy_version="",
            items=[ServedItem(p.pk, 1.0, 0.5, "model") for p in shown],
        )
        moment = self._moment()
        uk = customer.country == "United Kingdom"
        for position, product in enumerate(shown, start=1):
            self._event(
                EventKind.IMPRESSION, product, customer, moment, slate, position
            )
            if position in (2, 3) and (
                uk or (position == 2 and self.rng.random() < 0.25)
            ):
                self._event(EventKind.CLICK, product, customer, moment, slate, position)
            if uk and position == 2:
                self._event(
                    EventKind.PURCHASE,
                    product,
                    customer,
                    moment,
                    slate,
                    position,
                    order_id=f"slate-{slate.pk}",
                )

    def _event(
        self,
        kind: str,
        product: Product,
        customer: Customer | None,
        moment: dt.datetime,
        slate: ServedSlate | None = None,
        position: int | None = None,
        **fields: object,
    ) -> None:
        self.events.append(
            FeedbackEvent(
                kind=kind,
                product=product,
                customer=customer,
                session_id="" if customer else f"session-{len(self.events)}",
                occurred_at=moment,
                slate=slate,
                slate_position=position,
                source="test",
                client_event_id=f"event-{len(self.events)}",
                **fields,
            )
        )

    def inject_click_burst(self, clicks: int = 150) -> None:
        """Fake clicks on one product from anonymous sessions, in ten minutes
        of one clock hour."""
        start = (self.now - dt.timedelta(hours=3)).replace(minute=5, second=0)
        for n in range(clicks):
            self._event(
                EventKind.CLICK,
                self.burst_target,
                None,
                start + dt.timedelta(seconds=4 * n),
            )

    def inject_returns(self, orders: int = 20, returned: int = 12) -> None:
        """Orders of the promoted product, most of them sent back."""
        for n in range(orders):
            customer = self.customers[n]
            bought = self._moment()
            self._event(
                EventKind.PURCHASE,
                self.promoted,
                customer,
                bought,
                order_id=f"promoted-{n}",
            )
            if n < returned:
                self._event(
                    EventKind.RETURN,
                    self.promoted,
                    customer,
                    bought + dt.timedelta(minutes=30),
                    order_id=f"C-promoted-{n}",
                )

    def save(self) -> None:
        FeedbackEvent.objects.bulk_create(self.events)
        self.events = []

    def audit(self, **options: Any) -> AuditRun:
        return run_audit(
            since=self.now - dt.timedelta(days=1),
            until=self.now + dt.timedelta(minutes=1),
            triggered_by="test",
            **options,
        )


@pytest.fixture
def shop(db) -> Shop:
    return Shop(timezone.now())


def flagged(audit_run: AuditRun, rule: str) -> set[tuple[str, str]]:
    return set(
        audit_run.flags.filter(rule=rule).values_list("target_type", "target_id")
    )


def test_a_clean_day_raises_no_burst_and_no_over_promotion(shop):
    shop.save()

    audit_run = shop.audit()

    assert audit_run.status == AuditStatus.SUCCEEDED
    assert flagged(audit_run, "anomaly.burst") == set()
    assert flagged(audit_run, "quality.over_promotion") == set()


def test_injected_faults_are_flagged_and_every_metric_is_stored(shop):
    shop.inject_click_burst()
    shop.inject_returns()
    shop.save()
    stages: list[str] = []

    audit_run = shop.audit(on_progress=stages.append)

    audit_run.refresh_from_db()
    assert audit_run.status == AuditStatus.SUCCEEDED
    assert stages == list(AUDIT_STAGES)
    assert (audit_run.slate_count, audit_run.slate_item_count) == (320, 3200)
    assert audit_run.event_count == FeedbackEvent.objects.count()
    assert audit_run.thresholds == json.loads(json.dumps(asdict(audit_thresholds())))
    assert set(audit_run.metrics) == SECTIONS | {"seconds"}

    # The burst: 150 clicks on one product in ten minutes, nowhere else.
    assert flagged(audit_run, "anomaly.burst") == {
        ("product", str(shop.burst_target.pk))
    }
    burst = audit_run.flags.get(rule="anomaly.burst")
    assert burst.evidence["buckets"][0]["count"] == 150
    target = shop.burst_target
    assert f"on product {target.external_id} ({target.title}) in one" in burst.summary
    assert burst.thresholds["burst_z"] == settings.AUDIT_BURST_Z
    # Over-promotion: first in every slate, 12 of its 20 orders returned.
    assert flagged(audit_run, "quality.over_promotion") == {
        ("product", str(shop.promoted.pk))
    }
    promoted = audit_run.flags.get(rule="quality.over_promotion")
    assert promoted.severity == "high"
    assert promoted.evidence["return_rate"] == 0.6
    assert promoted.summary.startswith(
        f"Product {shop.promoted.external_id} ({shop.promoted.title}) gets "
    )
    # Fairness: French customers click a quarter as often and never buy.
    assert flagged(audit_run, "fairness.ratio") == {
        ("customer_group", "country=France")
    }

    fairness = audit_run.metrics["fairness"]["attributes"]["country"]
    assert fairness["groups"]["United Kingdom"]["ctr"] == 0.2
    assert fairness["groups"]["United Kingdom"]["hit_rate"] == 1.0
    assert fairness["hit_rate"]["ratio"] == 0.0
    exposure = audit_run.metrics["exposure"]
    assert exposure["catalogue_size"] == 30
    # Every product but the burst's target is shown.
    assert exposure["coverage"] == round(29 / 30, 6)
    assert 0 < exposure["gini"] < 1
    top = exposure["top_products"][0]
    assert top["product_id"] == shop.promoted.pk
    assert top["slate_items"] == 320
    assert exposure["avg_recommended_popularity"] > 0
    assert exposure["merchants"] == 2
    anomalies = audit_run.metrics["anomalies"]
    assert anomalies["bursts"]["product"]["burst_buckets"] == 1
    assert anomalies["bots"]["clicks"] > 0
    assert anomalies["purchase_returns"]["returned_products"] == 12
    quality = audit_run.metrics["quality"]
    assert quality["returns"] == 12
    assert quality["over_promoted_products"] == 1


def test_flags_open_review_items_and_the_audit_is_logged(shop):
    shop.inject_click_burst()
    shop.save()

    first = shop.audit()
    second = shop.audit()

    flags = Flag.objects.filter(rule="anomaly.burst")
    assert flags.count() == 2
    # The second audit's flag joins the item the first one opened.
    assert ReviewItem.objects.filter(rule="anomaly.burst").count() == 1
    assert {flag.review_item_id for flag in flags} == {
        ReviewItem.objects.get(rule="anomaly.burst").pk
    }
    completed = GovernanceEvent.objects.filter(action="audit.completed")
    assert sorted(completed.values_list("target_id", flat=True)) == sorted(
        [str(first.pk), str(second.pk)]
    )
    event = completed.get(target_id=str(first.pk))
    assert event.actor_label == "test"
    assert event.after is not None
    assert event.after["status"] == "succeeded"
    assert event.after["flags"]["anomaly.burst"] == 1
    assert event.after["slates"] == 320


def test_a_failing_audit_is_marked_failed_and_raised(shop, monkeypatch):
    shop.inject_click_burst()
    shop.save()

    def broken(*args, **kwargs):
        raise RuntimeError("section broke")

    monkeypatch.setattr("governance.services.run_sections", broken)

    with pytest.raises(RuntimeError, match="section broke"):
        shop.audit()

    audit_run = AuditRun.objects.get()
    assert audit_run.status == AuditStatus.FAILED
    assert audit_run.error == "RuntimeError: section broke"
    assert audit_run.finished_at is not None
    assert not Flag.objects.exists()
    assert GovernanceEvent.objects.filter(
        action="audit.failed", target_id=str(audit_run.pk)
    ).exists()
    assert not GovernanceEvent.objects.filter(action="audit.completed").exists()


def test_an_empty_window_succeeds_with_undefined_metrics(db):
    ProductFactory.create()
    now = timezone.now()

    audit_run = run_audit(
        since=now - dt.timedelta(days=1), until=now, triggered_by="test"
    )

    assert audit_run.status == AuditStatus.SUCCEEDED
    assert audit_run.slate_count == 0
    assert audit_run.metrics["exposure"]["gini"] is None
    assert audit_run.metrics["fairness"]["attributes"] == {}
    assert audit_run.metrics["quality"]["return_rate"] is None


def test_consented_attributes_are_audited_and_others_are_not(shop):
    consenting = Customer.objects.filter(country="France")[:20]
    Customer.objects.filter(pk__in=[c.pk for c in consenting]).update(
        group_attributes={"age_band": "18-24"}, group_attributes_consent=True
    )
    Customer.objects.filter(country="United Kingdom").update(
        group_attributes={"age_band": "65+"}, group_attributes_consent=False
    )
    shop.save()

    attributes = shop.audit().metrics["fairness"]["attributes"]

    assert set(attributes) == {"country", "age_band"}
    assert set(attributes["age_band"]["groups"]) == {"18-24"}
    assert attributes["age_band"]["missing_slates"] == 320 - 80


def test_the_command_prints_metrics_and_flags(shop):
    shop.inject_click_burst()
    shop.save()
    out = io.StringIO()

    call_command("run_audit", stdout=out, verbosity=0)

    printed = out.getvalue()
    audit_run = AuditRun.objects.get()
    # By default: the 24 hours up to the latest slate, which it includes.
    latest = ServedSlate.objects.latest("created_at").created_at
    assert audit_run.window_end == latest + dt.timedelta(microseconds=1)
    assert audit_run.window_start == audit_run.window_end - dt.timedelta(hours=24)
    assert f"Audit {audit_run.pk} succeeded" in printed
    assert "exposure: coverage" in printed
    assert "fairness country: ctr difference / ratio" in printed
    assert f"anomaly.burst product:{shop.burst_target.pk}" in printed


def test_the_command_reads_iso_dates_and_refuses_an_empty_window(shop):
    shop.save()

    call_command(
        "run_audit", "--since", "2011-11-01", "--until", "2011-11-02T12:00", verbosity=0
    )

    audit_run = AuditRun.objects.get()
    assert audit_run.window_start == dt.datetime(2011, 11, 1, tzinfo=dt.UTC)
    assert audit_run.window_end == dt.datetime(2011, 11, 2, 12, tzinfo=dt.UTC)
    assert audit_run.slate_count == 0
    with pytest.raises(CommandError, match="must be before"):
        call_command("run_audit", "--since", "2011-11-02", "--until", "2011-11-01")
    with pytest.raises(CommandError, match="not an ISO date"):
        call_command("run_audit", "--since", "yesterday")


def test_the_scheduled_task_audits_the_last_window(shop):
    shop.inject_click_burst()
    shop.save()

    pk = run_scheduled_audit.delay().get()

    audit_run = AuditRun.objects.get(pk=pk)
    assert audit_run.triggered_by == "schedule"
    assert audit_run.window_end - audit_run.window_start == dt.timedelta(
        hours=settings.AUDIT_WINDOW_HOURS
    )
    assert flagged(audit_run, "anomaly.burst") == {
        ("product", str(shop.burst_target.pk))
    }
    entry = settings.CELERY_BEAT_SCHEDULE["governance-audit"]
    assert entry["task"] == "governance.tasks.run_scheduled_audit"


def test_the_settings_default_to_the_documented_thresholds():
    assert audit_thresholds() == AuditThresholds()


# Real data: the Online Retail log's first week, a trained policy, a replay.

SMALL_POLICY = {
    "epochs": 1,
    "batch_size": 64,
    "max_actions": 16,
    "policy": {"hidden": 8, "sequence_length": 10, "max_history_items": 32},
}
REPLAYED = (
    dt.datetime(2010, 12, 6, tzinfo=dt.UTC),
    dt.datetime(2010, 12, 8, tzinfo=dt.UTC),
)


@pytest.mark.django_db(transaction=True)
def test_an_audit_of_replayed_real_traffic_reports_every_metric_and_catches_faults(
    live_server, import_file, first_week_path, settings, tmp_path
):
    import_file(first_week_path)
    make_policy_live(
        settings, tmp_path / "policies", SMALL_POLICY, before=dt.datetime(2010, 12, 6)
    )
    key = create_api_client(
        name="replay", scopes=[ApiScope.RECOMMENDATIONS, ApiScope.EVENTS]
    ).key
    call_command(
        "replay_traffic",
        "--url",
        f"{live_server.url}/api/v1",
        "--key",
        key,
        "--since",
        "2010-12-06",
        "--limit",
        "60",
        verbosity=0,
    )
    since, until = REPLAYED

    clean = run_audit(since=since, until=until, triggered_by="test")

    # The replayed slates are logged now, but their events carry the
    # invoices' moments: the window finds them through their events.
    assert clean.slate_count == 60
    assert clean.slate_item_count == 600
    metrics = clean.metrics
    country = metrics["fairness"]["attributes"]["country"]
    assert "United Kingdom" in country["groups"]
    assert country["groups"]["United Kingdom"]["impressions"] > 0
    assert {"difference", "ratio"} <= set(country["hit_rate"])
    exposure = metrics["exposure"]
    assert exposure["products_shown"] > 10
    assert 0 < exposure["coverage"] < 1
    assert 0 < exposure["gini"] < 1
    assert exposure["avg_recommended_popularity"] > 0
    assert exposure["exposure_merit_gap"] is not None
    anomalies = metrics["anomalies"]
    assert anomalies["bursts"]["product"]["series"] > 0
    assert anomalies["bots"]["clicks"] > 0
    assert anomalies["purchase_returns"]["purchased_products"] > 0
    quality = metrics["quality"]
    assert quality["purchases"] > 0
    assert quality["returns"] > 0  # the real cancellations of those days
    assert quality["return_rate"] < 0.1

    most_shown = Product.objects.get(pk=exposure["top_products"][0]["product_id"])
    burst_target = Product.objects.exclude(pk=most_shown.pk).order_by("pk")[0]
    # Real wholesale baskets of fifty lines are not bursts.
    assert not clean.flags.filter(rule__startswith="anomaly.").exists()
    assert not clean.flags.filter(rule="quality.over_promotion").exists()
    inject_faults(
        most_shown, burst_target, at=dt.datetime(2010, 12, 7, 9, tzinfo=dt.UTC)
    )

    faulty = run_audit(since=since, until=until, triggered_by="test")

    assert flagged(faulty, "anomaly.burst") == {("product", str(burst_target.pk))}
    assert flagged(faulty, "quality.over_promotion") == {
        ("product", str(most_shown.pk))
    }


def inject_faults(promoted: Product, burst_target: Product, *, at: dt.datetime) -> None:
    """200 fake clicks on one product in ten minutes; three in five of the
    most shown product's orders in the window sent back."""
    events = [
        FeedbackEvent(
            kind=EventKind.CLICK,
            product=burst_target,
            session_id=f"fake-{n}",
            occurred_at=at + dt.timedelta(seconds=3 * n),
            source="fault",
            client_event_id=f"click-{n}",
        )
        for n in range(200)
    ]
    since, until = REPLAYED
    orders = {
        order: (customer, bought)
        for order, customer, bought in FeedbackEvent.objects.filter(
            product=promoted,
            kind=EventKind.PURCHASE,
            occurred_at__gte=since,
            occurred_at__lt=until,
            customer__isnull=False,
        ).values_list("order_id", "customer_id", "occurred_at")
    }
    assert len(orders) >= 10
    for n, (order, (customer, bought)) in enumerate(sorted(orders.items())):
        if n % 5 < 3:
            events.append(
                FeedbackEvent(
                    kind=EventKind.RETURN,
                    product=promoted,
                    customer_id=customer,
                    order_id=f"C{order}",
                    occurred_at=bought + dt.timedelta(hours=2),
                    source="fault",
                    client_event_id=f"return-{n}",
                )
            )
    FeedbackEvent.objects.bulk_create(events)

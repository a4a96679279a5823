"""What the staff pages show: the queue's filters, an item's evidence and
charts, overrides, audit runs and the governance event log."""

import datetime as dt
import re

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from commerce.models import ServedSlate, ServedSlateItem
from governance.charts import Series, bar_chart, format_number, line_chart
from governance.figures import chartable_series, figure_of
from governance.models import (
    AuditRun,
    GovernanceEvent,
    Override,
    OverrideKind,
    ReasonCode,
    ReviewStatus,
    Severity,
    TargetType,
)
from governance.services import (
    FlagSpec,
    claim_review_item,
    create_override,
    escalate_review_item,
    raise_flags,
    revoke_override,
)
from tests.factories import CustomerFactory, ProductFactory
from tests.governance.test_review_queue import (
    GOVERNANCE_ADMIN_GROUP,
    REVIEWER_GROUP,
    audit_run,
    flag_product,
    staff,
)

pytestmark = pytest.mark.django_db

FAIRNESS_EVIDENCE = {
    "attribute": "country",
    "group": "France",
    "metrics": {"click_rate": {"ratio": 0.42, "difference": -0.07}},
    "groups": {
        "United Kingdom": {"slates": 800, "click_rate": 0.12},
        "France": {"slates": 90, "click_rate": 0.05},
        "Germany": {"slates": 70, "click_rate": None},
    },
}


def svg_count(html: str) -> int:
    return len(re.findall(r"<svg class=\"chart\"", html))


@pytest.fixture
def reviewer():
    return staff("rita", REVIEWER_GROUP)


@pytest.fixture
def admin():
    return staff("ada", GOVERNANCE_ADMIN_GROUP)


def test_the_queue_filters_by_status_severity_rule_and_target(client, reviewer):
    products = ProductFactory.create_batch(3)
    over_promoted = flag_product(products[0], Severity.CRITICAL)
    burst = flag_product(products[1], Severity.LOW, rule="anomaly.burst")
    decided = flag_product(products[2], Severity.HIGH)
    decided.status, decided.decision = ReviewStatus.DECIDED, "dismiss"
    decided.reason_code = ReasonCode.FALSE_POSITIVE
    decided.save()
    client.force_login(reviewer)

    def shown(**filters: str) -> set[int]:
        html = client.get(reverse("governance:queue"), filters).text
        return {int(pk) for pk in re.findall(r'href="/governance/items/(\d+)/"', html)}

    assert shown() == {over_promoted.pk, burst.pk}
    assert shown(status="all") == {over_promoted.pk, burst.pk, decided.pk}
    assert shown(status="decided") == {decided.pk}
    assert shown(severity="low") == {burst.pk}
    assert shown(rule="anomaly.burst") == {burst.pk}
    assert shown(target=f"product:{products[0].pk}") == {over_promoted.pk}
    assert shown(assignee="me") == set()
    assert shown(status="nonsense") == {over_promoted.pk, burst.pk}


def test_the_queue_filters_by_assignee_and_bare_target_id(client, reviewer):
    other = staff("otto", REVIEWER_GROUP)
    mine, theirs, unassigned = (flag_product(p) for p in ProductFactory.create_batch(3))
    claim_review_item(reviewer=reviewer, item_id=mine.pk, version=mine.version)
    claim_review_item(reviewer=other, item_id=theirs.pk, version=theirs.version)
    client.force_login(reviewer)

    def shown(**filters: str) -> set[int]:
        html = client.get(reverse("governance:queue"), filters).text
        return {int(pk) for pk in re.findall(r'href="/governance/items/(\d+)/"', html)}

    assert shown(assignee="me") == {mine.pk}
    assert shown(assignee="none") == {unassigned.pk}
    assert shown(assignee="otto") == {theirs.pk}
    # A name that holds no item is not a choice: the filter is left out.
    assert shown(assignee="ghost") == {mine.pk, theirs.pk, unassigned.pk}
    assert shown(target=unassigned.target_id) == {unassigned.pk}
    assert shown(target=f"customer:{unassigned.target_id}") == set()


def test_the_queue_names_targets_by_the_shops_ids_and_finds_them_by_them(
    client, reviewer
):
    product = ProductFactory.create(external_id="85123A", title="T-light holder")
    customer = CustomerFactory.create(external_id="17838")
    # A product whose database id is the customer's shop id, to tell them apart.
    decoy = ProductFactory.create(pk=17838)
    on_product = flag_product(product)
    on_decoy = flag_product(decoy)
    [flag] = raise_flags(
        audit_run=on_product.flags.get().audit_run,
        flags=[
            FlagSpec(
                rule="anomaly.purchase_return",
                severity=Severity.MEDIUM,
                target_type=TargetType.CUSTOMER,
                target_id=str(customer.pk),
                summary="Customer 17838 returned 19 of 32 products they bought",
                evidence={},
                thresholds={},
            )
        ],
    )
    on_customer = flag.review_item
    assert on_customer is not None
    client.force_login(reviewer)

    def shown(**filters: str) -> set[int]:
        html = client.get(reverse("governance:queue"), filters).text
        return {int(pk) for pk in re.findall(r'href="/governance/items/(\d+)/"', html)}

    queue = client.get(reverse("governance:queue")).text
    assert "<td>product 85123A (T-light holder)</td>" in queue
    assert "<td>customer 17838</td>" in queue
    assert f"customer:{customer.pk}" not in queue
    assert shown(target="product:85123A") == {on_product.pk}
    assert shown(target="85123A") == {on_product.pk}
    assert shown(target="customer:17838") == {on_customer.pk}
    # Stored ids still work; a bare id matches any target it names.
    assert shown(target=f"customer:{customer.pk}") == {on_customer.pk}
    assert shown(target=f"product:{product.pk}") == {on_product.pk}
    assert shown(target="17838") == {on_customer.pk, on_decoy.pk}
    assert shown(target="product:17838") == {on_decoy.pk}
    assert shown(target="customer:85123A") == set()

    item_page = client.get(reverse("governance:item", args=[on_customer.pk])).text
    assert "customer <code>17838</code>" in item_page
    audit_page = client.get(reverse("governance:audit", args=[flag.audit_run_id])).text
    assert "<td>customer 17838</td>" in audit_page
    assert "<td>product 85123A (T-light holder)</td>" in audit_page


def test_the_queue_shows_its_default_status_selected(client, reviewer):
    client.force_login(reviewer)

    first_view = client.get(reverse("governance:queue")).text
    nonsense = client.get(reverse("governance:queue"), {"status": "nonsense"}).text

    assert '<option value="open" selected>open</option>' in first_view
    assert '<option value="open" selected>open</option>' in nonsense
    assert '<option value="escalated"' not in first_view


def test_reviewers_cannot_filter_the_queue_to_escalated_items(client, reviewer, admin):
    escalated, pending = (flag_product(p) for p in ProductFactory.create_batch(2))
    claimed = claim_review_item(
        reviewer=reviewer, item_id=escalated.pk, version=escalated.version
    )
    escalate_review_item(
        reviewer=reviewer, item_id=escalated.pk, version=claimed.version, note="n"
    )

    def shown(**filters: str) -> set[int]:
        html = client.get(reverse("governance:queue"), filters).text
        return {int(pk) for pk in re.findall(r'href="/governance/items/(\d+)/"', html)}

    client.force_login(reviewer)
    assert shown(status="escalated") == {pending.pk}
    client.force_login(admin)
    assert shown(status="escalated") == {escalated.pk}


def test_claim_next_on_the_page_takes_the_most_urgent_item(client, reviewer):
    products = ProductFactory.create_batch(2)
    flag_product(products[0], Severity.MEDIUM)
    critical = flag_product(products[1], Severity.CRITICAL)
    client.force_login(reviewer)

    response = client.post(reverse("governance:claim_next"), follow=True)

    assert response.redirect_chain == [
        (reverse("governance:item", args=[critical.pk]), 302)
    ]
    assert "You claimed item #" in response.text
    assert "Record decision" in response.text
    critical.refresh_from_db()
    assert (critical.status, critical.assignee) == (ReviewStatus.CLAIMED, reviewer)


def test_claim_next_with_an_empty_queue_says_so(client, reviewer):
    client.force_login(reviewer)

    response = client.post(reverse("governance:claim_next"), follow=True)

    assert "Nothing is waiting in the queue." in response.text


def test_an_item_shows_its_evidence_exposure_and_group_charts(client, reviewer):
    product = ProductFactory.create()
    other = ProductFactory.create()
    for day in (0, 0, 2):
        slate = ServedSlate.objects.create()
        ServedSlate.objects.filter(pk=slate.pk).update(
            created_at=timezone.now() - dt.timedelta(days=day)
        )
        for position, shown in enumerate([product, other], start=1):
            ServedSlateItem.objects.create(
                slate=slate,
                product=shown,
                position=position,
                score=1.0,
                propensity=0.5,
                reason="fallback",
            )
    [flag] = raise_flags(
        audit_run=audit_run(),
        flags=[
            FlagSpec(
                rule="fairness.ratio",
                severity=Severity.HIGH,
                target_type=TargetType.PRODUCT,
                target_id=str(product.pk),
                summary="France clicks far less",
                evidence=FAIRNESS_EVIDENCE,
                thresholds={"fairness_min_ratio": 0.8},
            )
        ],
    )
    client.force_login(reviewer)

    response = client.get(reverse("governance:item", args=[flag.review_item_id]))

    html = response.text
    assert response.status_code == 200
    assert "France clicks far less" in html
    assert "fairness_min_ratio" in html
    # Exposure over time; the click-rate gaps; slates and click rate by group.
    assert svg_count(html) == 4
    assert f"Slates showing {product.external_id} per day" in html
    assert "evidence / groups / click_rate" in html
    today = timezone.localdate().isoformat()
    assert f'<td>{today}</td><td class="num">2</td>' in html
    assert '<td class="num">0.5000</td>' in html


def test_audit_runs_render_whatever_metrics_they_hold(client, reviewer):
    end = timezone.now()
    run = AuditRun.objects.create(
        window_start=end - dt.timedelta(days=7),
        window_end=end,
        triggered_by="beat",
        status="succeeded",
        slate_count=960,
        metrics={
            "fairness": {"country": {"groups": FAIRNESS_EVIDENCE["groups"]}},
            "exposure": {
                "gini": 0.61,
                "top_share": {"top_1pct": 0.2, "top_10pct": 0.55},
                "by_day": {"2011-11-02": 40, "2011-11-01": 30},
            },
            "anomalies": {"bursts": [], "bots": 0},
            "quality": {"products": [{"sku": "A", "return_rate": 0.4}]},
        },
        thresholds={"return_rate_max": 0.2},
    )
    client.force_login(reviewer)

    listing = client.get(reverse("governance:audits"))
    detail = client.get(reverse("governance:audit", args=[run.pk]))

    assert f'href="/governance/audits/{run.pk}/"' in listing.text
    html = detail.text
    for section in ("Fairness", "Exposure", "Anomalies", "Quality"):
        assert f">{section}</h2>" in html
    assert "<code>gini</code>" in html
    assert "0.61" in html
    # top_share bars, by_day line; slates and click_rate per group.
    assert svg_count(html) == 4
    assert "Line chart of 2 values from 2011-11-01 to 2011-11-02" in html


def test_administrators_create_and_revoke_overrides_on_the_pages(client, admin):
    product = ProductFactory.create()
    client.force_login(admin)

    refused = client.post(
        reverse("governance:override_create"),
        {"override_kind": "cap", "product": product.external_id, "statement": "x"},
    )
    created = client.post(
        reverse("governance:override_create"),
        {
            "override_kind": "cap",
            "product": product.external_id,
            "override_value": "0.1",
            "group_attribute": "country",
            "group_value": "France",
            "reason_code": "over_exposure",
            "statement": "Shown to one in three French customers.",
        },
    )

    assert refused.status_code == 400
    assert "A cap override needs the exposure share" in refused.text
    assert created.status_code == 302
    override = Override.objects.get()
    assert (override.kind, override.value, override.group_value) == (
        "cap",
        0.1,
        "France",
    )
    listing = client.get(reverse("governance:overrides")).text
    assert "Shown to one in three French customers." in listing
    assert f"Revoke #{override.pk}" in listing

    revoked = client.post(
        reverse("governance:override_revoke", args=[override.pk]),
        {"reason": "campaign over"},
    )

    assert revoked.status_code == 302
    override.refresh_from_db()
    assert override.revoked_by == admin
    event = GovernanceEvent.objects.get(action="override.revoked")
    assert (event.target_id, event.reason) == (str(override.pk), "campaign over")
    in_force = client.get(reverse("governance:overrides")).text
    revoked_list = client.get(reverse("governance:overrides"), {"state": "revoked"})
    assert "Shown to one in three French customers." not in in_force
    assert "Shown to one in three French customers." in revoked_list.text
    assert f"Revoke #{override.pk}" not in revoked_list.text


def test_overrides_are_listed_by_state(client, reviewer):
    products = ProductFactory.create_batch(3)
    now = timezone.now()

    def override(product, **when):
        return create_override(
            actor=reviewer,
            kind=OverrideKind.SUPPRESS,
            reason_code=ReasonCode.BUSINESS,
            statement=f"statement {product.external_id}",
            product_id=product.pk,
            **when,
        )

    active = override(products[0])
    scheduled = override(products[1], starts_at=now + dt.timedelta(days=1))
    expired = override(
        products[2],
        starts_at=now - dt.timedelta(days=2),
        expires_at=now - dt.timedelta(days=1),
    )
    client.force_login(reviewer)

    def listed(state: str) -> str:
        return client.get(reverse("governance:overrides"), {"state": state}).text

    for state, shown in [
        ("active", active),
        ("scheduled", scheduled),
        ("expired", expired),
    ]:
        html = listed(state)
        others = {active, scheduled, expired} - {shown}
        assert f"statement {shown.product.external_id}" in html
        assert not any(f"statement {o.product.external_id}" in html for o in others)
    assert "Revoke #" not in listed("all")


def test_overrides_filter_by_kind_and_product(client, admin):
    products = ProductFactory.create_batch(3)

    def override(product, kind=OverrideKind.SUPPRESS, value=None):
        return create_override(
            actor=admin,
            kind=kind,
            value=value,
            reason_code=ReasonCode.BUSINESS,
            statement=f"statement {product.external_id}",
            product_id=product.pk,
        )

    suppressed = override(products[0])
    capped = override(products[1], OverrideKind.CAP, 0.2)
    revoked = override(products[2])
    revoke_override(actor=admin, override_id=revoked.pk, reason="done")
    client.force_login(admin)

    def listed(**filters: str) -> set[int]:
        html = client.get(reverse("governance:overrides"), filters).text
        return {int(pk) for pk in re.findall(r"<tr>\s*<td>(\d+)</td>", html)}

    assert listed() == {suppressed.pk, capped.pk}
    assert listed(state="all") == {suppressed.pk, capped.pk, revoked.pk}
    assert listed(kind="cap") == {capped.pk}
    assert listed(product=f" {products[0].external_id} ") == {suppressed.pk}
    # An unknown state reads as the default, the overrides in force.
    assert listed(state="bogus") == {suppressed.pk, capped.pk}
    assert listed(state="bogus", kind="nonsense") == {suppressed.pk, capped.pk}


def test_the_event_log_filters_and_pages(client, reviewer, settings):
    products = ProductFactory.create_batch(3)
    items = [flag_product(p) for p in products]
    client.force_login(reviewer)
    log = reverse("governance:log")

    opened = client.get(log, {"action": "review_item.opened"}).text
    one = client.get(
        log, {"target_type": "review_item", "target_id": str(items[1].pk)}
    ).text
    by_audit = client.get(log, {"actor": "audit:"}).text

    assert opened.count("<code>review_item.opened</code>") == 3
    assert one.count("<code>review_item.opened</code>") == 1
    assert f'href="/governance/items/{items[1].pk}/"' in one
    assert by_audit.count("<code>review_item.opened</code>") == 3
    assert "No events match." in client.get(log, {"actor": "nobody"}).text


def test_the_event_log_finds_people_in_any_case_and_ignores_unknown_actions(
    client, reviewer
):
    item = flag_product(ProductFactory.create())
    claim_review_item(reviewer=reviewer, item_id=item.pk, version=item.version)
    client.force_login(reviewer)
    log = reverse("governance:log")

    by_rita = client.get(log, {"actor": "RITA"}).text
    unknown = client.get(log, {"action": "review_item.vanished"}).text

    assert "<code>review_item.claimed</code>" in by_rita
    assert "<code>review_item.opened</code>" not in by_rita
    assert "<code>review_item.claimed</code>" in unknown
    assert "<code>review_item.opened</code>" in unknown


def test_the_event_log_is_paginated(client, reviewer, monkeypatch):
    monkeypatch.setattr("governance.views.PAGE_SIZE", 2)
    for product in ProductFactory.create_batch(3):
        flag_product(product)
    client.force_login(reviewer)

    first = client.get(reverse("governance:log"), {"action": "review_item.opened"})
    second = client.get(
        reverse("governance:log"), {"action": "review_item.opened", "page": 2}
    )

    assert first.text.count("<code>review_item.opened</code>") == 2
    assert "Page 1 of 2" in first.text
    assert "?action=review_item.opened&amp;page=2" in first.text
    assert second.text.count("<code>review_item.opened</code>") == 1


def test_the_login_page_logs_a_reviewer_in_and_returns_them(client, reviewer):
    reviewer.set_password("a long enough secret")
    reviewer.save()

    page = client.get(reverse("login"), {"next": "/governance/log/"})
    response = client.post(
        reverse("login"),
        {
            "username": "rita",
            "password": "a long enough secret",
            "next": "/governance/log/",
        },
    )

    assert page.status_code == 200
    assert 'name="password"' in page.text
    assert (response.status_code, response["Location"]) == (302, "/governance/log/")


# Figures and charts, on their own.


def test_figures_lay_out_nested_json_as_tables():
    figure = figure_of(
        {"gini": 0.612345, "groups": {"UK": {"n": 3}, "FR": {"n": 1}}, "ok": True}
    )

    rows = dict(figure.rows)
    assert figure.kind == "mapping"
    assert rows["gini"].text == "0.612"
    assert rows["ok"].text == "yes"
    assert rows["groups"].kind == "records"
    assert rows["groups"].columns == ["", "n"]
    assert [[c.text for c in r] for r in rows["groups"].records] == [
        ["UK", "3"],
        ["FR", "1"],
    ]


def test_chartable_series_finds_numbers_per_group_per_day_and_per_record():
    series = chartable_series(
        {
            "share": {"a": 0.5, "b": 0.25},
            "daily": {"2011-01-02": 1, "2011-01-01": 2},
            "rows": [{"sku": "A", "n": 1, "rate": None}, {"sku": "B", "n": 2}],
            "mixed": {"a": 1, "b": "text"},
        },
        "section",
    )

    assert [(s.title, s.points, s.over_time) for s in series] == [
        ("section / share", [("a", 0.5), ("b", 0.25)], False),
        ("section / daily", [("2011-01-01", 2.0), ("2011-01-02", 1.0)], True),
        ("section / rows / n by sku", [("A", 1.0), ("B", 2.0)], False),
    ]


def test_charts_are_accessible_svg_with_escaped_labels():
    bars = bar_chart("Share <by> group", [("<script>", 0.5), ("FR", -0.25)])
    line = line_chart("Per day", [("2011-01-01", 2.0), ("2011-01-02", 4.0)])

    assert bars.startswith('<svg class="chart" role="img"')
    assert "<script>" not in bars
    assert "&lt;script&gt;" in bars
    assert "<title id=" in bars
    assert "Bar chart of 2 values, from -0.25 to 0.5." in bars
    assert bars.count("<rect") == 2
    assert 'class="bar negative"' in bars
    assert line.count("<circle") == 2
    assert "Line chart of 2 values from 2011-01-01 to 2011-01-02" in line
    assert Series("t", []).points == []


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3"), (1234567, "1,234,567"), (0.123456, "0.123"), (1234.5, "1,234.5")],
)
def test_numbers_are_formatted_for_people(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    "model", ["auditrun", "flag", "reviewitem", "override", "governanceevent"]
)
def test_the_django_admin_reads_every_governance_model_and_changes_none(
    admin_client, model
):
    item = flag_product(ProductFactory.create())
    create_override(
        actor=User.objects.get(username="admin"),
        kind=OverrideKind.SUPPRESS,
        reason_code=ReasonCode.BUSINESS,
        statement="Recalled.",
        product_id=int(item.target_id),
    )
    row = {
        "auditrun": item.flags.get().audit_run_id,
        "flag": item.flags.get().pk,
        "reviewitem": item.pk,
        "override": Override.objects.get().pk,
        "governanceevent": GovernanceEvent.objects.earliest("id").pk,
    }[model]

    listing = admin_client.get(f"/admin/governance/{model}/")
    change = admin_client.get(f"/admin/governance/{model}/{row}/change/")
    add = admin_client.get(f"/admin/governance/{model}/add/")
    edit = admin_client.post(f"/admin/governance/{model}/{row}/change/", {})

    assert (listing.status_code, change.status_code) == (200, 200)
    assert 'name="_save"' not in change.text
    assert (add.status_code, edit.status_code) == (403, 403)

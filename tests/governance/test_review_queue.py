"""The review queue: concurrent claims, the rules of a decision, escalation,
and who may open the staff pages."""

import datetime as dt
import threading
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from commerce.models import ApiScope, Product
from commerce.services import create_api_client
from governance import services
from governance.access import GOVERNANCE_ADMIN_GROUP, REVIEWER_GROUP
from governance.errors import (
    InvalidDecisionError,
    InvalidOverrideError,
    ReviewStateError,
    StaleReviewError,
)
from governance.models import (
    AuditRun,
    Decision,
    GovernanceEvent,
    Override,
    OverrideKind,
    ReasonCode,
    ReviewItem,
    ReviewStatus,
    Severity,
    TargetType,
)
from governance.services import (
    FlagSpec,
    OverrideSpec,
    claim_next_review_item,
    claim_review_item,
    decide_review_item,
    escalate_review_item,
    raise_flags,
)
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


def staff(username: str, *groups: str) -> User:
    user = User.objects.create_user(username)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def audit_run() -> AuditRun:
    end = timezone.now()
    return AuditRun.objects.create(
        window_start=end - dt.timedelta(days=1), window_end=end, triggered_by="test"
    )


def flag_product(
    product: Product,
    severity: Severity = Severity.HIGH,
    rule: str = "quality.over_promotion",
) -> ReviewItem:
    [flag] = raise_flags(
        audit_run=audit_run(),
        flags=[
            FlagSpec(
                rule=rule,
                severity=severity,
                target_type=TargetType.PRODUCT,
                target_id=str(product.pk),
                summary=f"{product.external_id} is shown far beyond its merit",
                evidence={"return_rate": 0.41, "exposure_share": 0.12},
                thresholds={"return_rate_max": 0.2},
            )
        ],
    )
    assert flag.review_item is not None
    return flag.review_item


@pytest.fixture
def reviewer() -> User:
    return staff("rita", REVIEWER_GROUP)


@pytest.fixture
def admin() -> User:
    return staff("ada", GOVERNANCE_ADMIN_GROUP)


@pytest.fixture
def item() -> ReviewItem:
    return flag_product(ProductFactory.create())


def test_migrations_create_both_staff_groups_with_read_permissions():
    groups = {
        group.name: set(group.permissions.values_list("codename", flat=True))
        for group in Group.objects.filter(
            name__in=[REVIEWER_GROUP, GOVERNANCE_ADMIN_GROUP]
        )
    }

    assert set(groups) == {REVIEWER_GROUP, GOVERNANCE_ADMIN_GROUP}
    for codenames in groups.values():
        assert {"view_reviewitem", "view_override", "view_governanceevent"} <= (
            codenames
        )
        assert not any(c.startswith(("change_", "delete_")) for c in codenames)


# Two reviewers at the same time.


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_claiming_at_once_get_different_items():
    """Both claims run in open transactions at the same moment.

    The second barrier is met only while both transactions still hold their
    row locks: a claim that waited on the other's lock instead of skipping
    it would never reach it, and the barrier's timeout would fail the test.
    """
    products = ProductFactory.create_batch(3)
    most_urgent = flag_product(products[0], Severity.CRITICAL)
    second = flag_product(products[1], Severity.HIGH)
    last = flag_product(products[2], Severity.LOW)
    reviewers = [
        staff("rita", REVIEWER_GROUP),
        staff("rob", REVIEWER_GROUP),
    ]
    start, both_claimed = threading.Barrier(2), threading.Barrier(2)
    claimed: dict[str, int] = {}
    failures: list[BaseException] = []

    def claim(reviewer: User) -> None:
        try:
            start.wait(timeout=10)
            with transaction.atomic():
                item = claim_next_review_item(reviewer=reviewer)
                assert item is not None
                claimed[reviewer.username] = item.pk
                both_claimed.wait(timeout=10)
        except BaseException as failure:
            failures.append(failure)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(r,)) for r in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    assert sorted(claimed.values()) == sorted([most_urgent.pk, second.pk])
    for reviewer in reviewers:
        item = ReviewItem.objects.get(pk=claimed[reviewer.username])
        assert (item.status, item.assignee_id) == (ReviewStatus.CLAIMED, reviewer.pk)
    assert ReviewItem.objects.get(pk=last.pk).status == ReviewStatus.PENDING
    assert GovernanceEvent.objects.filter(action="review_item.claimed").count() == 2


# The rules of a decision.


def test_a_decision_without_a_note_or_reason_is_refused(reviewer, item):
    item = claim_review_item(reviewer=reviewer, item_id=item.pk, version=item.version)

    for reason_code, note in [(ReasonCode.LOW_QUALITY, "  "), ("", "returns")]:
        with pytest.raises(InvalidDecisionError):
            decide_review_item(
                reviewer=reviewer,
                item_id=item.pk,
                version=item.version,
                decision=Decision.DISMISS,
                reason_code=reason_code,  # type: ignore[arg-type]
                note=note,
            )

    item.refresh_from_db()
    assert (item.status, item.decision) == (ReviewStatus.CLAIMED, "")
    assert not GovernanceEvent.objects.filter(action="review_item.decided").exists()


def test_a_decision_on_a_stale_version_is_refused(reviewer, item):
    loaded = item.version
    claimed = claim_review_item(reviewer=reviewer, item_id=item.pk, version=loaded)

    with pytest.raises(StaleReviewError):
        decide_review_item(
            reviewer=reviewer,
            item_id=item.pk,
            version=loaded,
            decision=Decision.DISMISS,
            reason_code=ReasonCode.FALSE_POSITIVE,
            note="returns were a one-off",
        )

    item.refresh_from_db()
    assert item.status == ReviewStatus.CLAIMED
    assert item.version == claimed.version == loaded + 1


def test_an_override_decision_writes_its_override_and_both_events(reviewer, item):
    item = claim_review_item(reviewer=reviewer, item_id=item.pk, version=item.version)

    decide_review_item(
        reviewer=reviewer,
        item_id=item.pk,
        version=item.version,
        decision=Decision.OVERRIDE,
        reason_code=ReasonCode.LOW_QUALITY,
        note="two returns in five sales",
        override=OverrideSpec(kind=OverrideKind.SUPPRESS, statement="Many returns."),
    )

    override = Override.objects.get(review_item=item)
    assert (override.kind, override.product_id) == ("suppress", int(item.target_id))
    events = {
        event.action: event
        for event in GovernanceEvent.objects.filter(
            action__in=["review_item.decided", "override.created"]
        )
    }
    assert events["review_item.decided"].target_id == str(item.pk)
    assert events["override.created"].target_id == str(override.pk)
    assert {e.actor_id for e in events.values()} == {reviewer.pk}
    assert events["override.created"].after == {
        **services.override_state(override),
        "review_item": item.pk,
    }


def test_an_override_is_not_written_when_its_event_cannot_be(
    reviewer, item, monkeypatch
):
    item = claim_review_item(reviewer=reviewer, item_id=item.pk, version=item.version)
    record = services.record_governance_event

    def failing_for_overrides(**event: Any) -> GovernanceEvent:
        if event["action"] == "override.created":
            raise RuntimeError("the log is unavailable")
        return record(**event)

    monkeypatch.setattr(services, "record_governance_event", failing_for_overrides)

    with pytest.raises(RuntimeError):
        decide_review_item(
            reviewer=reviewer,
            item_id=item.pk,
            version=item.version,
            decision=Decision.OVERRIDE,
            reason_code=ReasonCode.LOW_QUALITY,
            note="two returns in five sales",
            override=OverrideSpec(kind=OverrideKind.SUPPRESS),
        )

    item.refresh_from_db()
    assert item.status == ReviewStatus.CLAIMED
    assert not Override.objects.exists()
    assert not GovernanceEvent.objects.filter(action="review_item.decided").exists()


def test_a_bad_override_leaves_the_item_undecided(reviewer, item):
    item = claim_review_item(reviewer=reviewer, item_id=item.pk, version=item.version)

    with pytest.raises(InvalidOverrideError):
        decide_review_item(
            reviewer=reviewer,
            item_id=item.pk,
            version=item.version,
            decision=Decision.OVERRIDE,
            reason_code=ReasonCode.OVER_EXPOSURE,
            note="cap it",
            override=OverrideSpec(kind=OverrideKind.CAP, value=5.0),
        )

    item.refresh_from_db()
    assert (item.status, item.decision) == (ReviewStatus.CLAIMED, "")


# Escalation.


def test_escalation_hands_the_item_to_administrators_only(
    client, reviewer, admin, item
):
    claimed = claim_review_item(
        reviewer=reviewer, item_id=item.pk, version=item.version
    )

    escalated = escalate_review_item(
        reviewer=reviewer,
        item_id=item.pk,
        version=claimed.version,
        note="a top seller; needs a business call",
    )

    assert (escalated.status, escalated.assignee) == (ReviewStatus.ESCALATED, None)
    assert escalated.priority == 40
    event = GovernanceEvent.objects.get(action="review_item.escalated")
    assert (event.actor_id, event.reason) == (
        reviewer.pk,
        "a top seller; needs a business call",
    )

    client.force_login(reviewer)
    assert item.title not in client.get(reverse("governance:queue")).text
    assert client.get(reverse("governance:item", args=[item.pk])).status_code == 403
    assert claim_next_review_item(reviewer=reviewer) is None
    with pytest.raises(ReviewStateError, match="only administrators"):
        claim_review_item(reviewer=reviewer, item_id=item.pk, version=escalated.version)

    client.force_login(admin)
    assert item.title in client.get(reverse("governance:queue")).text
    response = client.post(
        reverse("governance:claim", args=[item.pk]), {"version": escalated.version}
    )
    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.status, item.assignee) == (ReviewStatus.CLAIMED, admin)


def test_an_escalation_without_a_note_is_refused_on_the_page(client, reviewer, item):
    claimed = claim_review_item(
        reviewer=reviewer, item_id=item.pk, version=item.version
    )
    client.force_login(reviewer)

    response = client.post(
        reverse("governance:escalate", args=[item.pk]),
        {"version": claimed.version, "note": ""},
    )

    assert response.status_code == 400
    assert "This field is required." in response.text
    item.refresh_from_db()
    assert item.status == ReviewStatus.CLAIMED


# The decision form on the page.


def test_the_page_shows_why_a_decision_was_refused(client, reviewer, item):
    claimed = claim_review_item(
        reviewer=reviewer, item_id=item.pk, version=item.version
    )
    client.force_login(reviewer)
    url = reverse("governance:decide", args=[item.pk])
    valid = {
        "version": claimed.version,
        "decision": "override",
        "reason_code": "low_quality",
        "note": "returns",
        "override_kind": "suppress",
        "statement": "Most of its orders come back.",
    }

    no_note = client.post(url, {**valid, "note": ""})
    no_statement = client.post(url, {**valid, "statement": "  "})
    no_kind = client.post(url, {**valid, "override_kind": ""})
    bad_cap = client.post(url, {**valid, "override_kind": "cap", "override_value": 3})
    stale = client.post(url, {**valid, "version": claimed.version - 1})

    assert no_note.status_code == 400
    assert "This field is required." in no_note.text
    assert no_statement.status_code == 400
    assert "An override needs a statement of its reasons" in no_statement.text
    assert no_kind.status_code == 400
    assert "Choose the override to put in force." in no_kind.text
    assert bad_cap.status_code == 400
    assert "value must be a share above 0 and at most 1" in bad_cap.text
    assert stale.status_code == 409
    assert "changed since it was loaded" in stale.text
    item.refresh_from_db()
    assert item.status == ReviewStatus.CLAIMED
    assert not Override.objects.exists()

    decided = client.post(url, valid)

    assert decided.status_code == 302
    item.refresh_from_db()
    assert (item.status, item.decision) == (ReviewStatus.DECIDED, "override")
    override = Override.objects.get()
    assert (override.kind, override.statement) == (
        "suppress",
        "Most of its orders come back.",
    )


# Who may open the pages.

PAGES = [
    ("governance:queue", []),
    ("governance:item", ["item"]),
    ("governance:overrides", []),
    ("governance:audits", []),
    ("governance:audit", ["audit"]),
    ("governance:log", []),
]


def page_url(name: str, args: list[str], item: ReviewItem) -> str:
    values = {"item": item.pk, "audit": item.flags.get().audit_run_id}
    return reverse(name, args=[values[a] for a in args])


@pytest.mark.parametrize(("name", "args"), PAGES)
def test_anonymous_visitors_are_sent_to_log_in(client, item, name, args):
    url = page_url(name, args, item)

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


@pytest.mark.parametrize(("name", "args"), PAGES)
def test_a_user_outside_the_staff_groups_is_refused(client, item, name, args):
    client.force_login(staff("merchant-mo"))

    assert client.get(page_url(name, args, item)).status_code == 403


@pytest.mark.parametrize(("name", "args"), PAGES)
def test_reviewers_and_administrators_open_every_page(
    client, reviewer, admin, item, name, args
):
    for user in (reviewer, admin):
        client.force_login(user)

        assert client.get(page_url(name, args, item)).status_code == 200


def test_superusers_are_admitted_without_a_group(client, item):
    client.force_login(User.objects.create_superuser("root", password=None))

    assert client.get(reverse("governance:override_create")).status_code == 200


def test_override_creation_and_revocation_are_for_administrators(
    client, reviewer, item
):
    product = Product.objects.get(pk=int(item.target_id))
    override = services.create_override(
        actor=reviewer,
        kind=OverrideKind.DEMOTE,
        reason_code=ReasonCode.OVER_EXPOSURE,
        statement="Shown too often.",
        product_id=product.pk,
        value=0.5,
    )
    client.force_login(reviewer)

    form = client.get(reverse("governance:override_create"))
    create = client.post(
        reverse("governance:override_create"),
        {
            "override_kind": "suppress",
            "product": product.external_id,
            "reason_code": "low_quality",
            "statement": "Returns.",
        },
    )
    revoke = client.post(
        reverse("governance:override_revoke", args=[override.pk]), {"reason": "no"}
    )

    assert (form.status_code, create.status_code, revoke.status_code) == (
        403,
        403,
        403,
    )
    assert Override.objects.count() == 1
    override.refresh_from_db()
    assert override.revoked_at is None


def test_an_api_key_does_not_open_the_pages(client, item):
    key = create_api_client(name="shop", scopes=[ApiScope.RECOMMENDATIONS]).key
    headers = {"Authorization": f"Api-Key {key}"}

    page = client.get(reverse("governance:queue"), headers=headers)
    claim = client.post(reverse("governance:claim_next"), headers=headers)

    for response in (page, claim):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    item.refresh_from_db()
    assert item.status == ReviewStatus.PENDING

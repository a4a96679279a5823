import datetime as dt

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.utils import timezone

from commerce.models import ServedSlate, ServedSlateItem
from governance.errors import InvalidOverrideError
from governance.models import GovernanceEvent, Override, OverrideKind, ReasonCode
from governance.selectors import (
    SlateConstraints,
    customer_groups,
    slate_constraints,
    training_exclusions,
)
from governance.services import create_override, revoke_override
from rl_engine.selectors import purchase_lines
from tests.factories import CustomerFactory, FeedbackEventFactory, ProductFactory

pytestmark = pytest.mark.django_db

EVERYONE: dict[str, str] = {}


@pytest.fixture
def admin() -> User:
    return User.objects.create_user("admin-1")


def override(admin: User, kind: OverrideKind, **fields: object) -> Override:
    return create_override(
        actor=admin,
        kind=kind,
        reason_code=fields.pop("reason_code", ReasonCode.LOW_QUALITY),  # type: ignore[arg-type]
        statement=str(fields.pop("statement", "Returned too often.")),
        **fields,  # type: ignore[arg-type]
    )


def test_override_and_its_event_are_written_together(admin):
    product = ProductFactory.create()

    made = override(admin, OverrideKind.SUPPRESS, product_id=product.pk)

    event = GovernanceEvent.objects.get(action="override.created")
    assert event.target_id == str(made.pk)
    assert event.actor == admin
    assert event.after is not None
    assert event.after["kind"] == "suppress"
    assert event.after["product"] == product.pk
    assert event.after["group"] == "everyone"


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (OverrideKind.SUPPRESS, {}, "names a product"),
        (OverrideKind.CAP, {"value": 1.5}, "share above 0"),
        (OverrideKind.CAP, {"value": float("nan")}, "share above 0"),
        (OverrideKind.DEMOTE, {"value": 1.2}, "from 0 to below 1"),
        (OverrideKind.BOOST, {"value": 0.5}, "above 1"),
        (OverrideKind.PIN, {"value": 2.5}, "whole position"),
        (OverrideKind.EXCLUDE_TRAINING, {}, "names a customer"),
        (OverrideKind.SUPPRESS, {"group_attribute": "country"}, "group scope"),
    ],
)
def test_malformed_overrides_are_refused_and_nothing_is_stored(
    admin, kind, fields, message
):
    product = ProductFactory.create()
    target = {} if kind == OverrideKind.EXCLUDE_TRAINING else {"product_id": product.pk}
    if "names a product" in message:
        target = {}

    with pytest.raises(InvalidOverrideError, match=message):
        override(admin, kind, **target, **fields)

    assert Override.objects.count() == 0
    assert GovernanceEvent.objects.filter(action="override.created").count() == 0


def test_a_training_exclusion_takes_no_group_scope(admin):
    customer = CustomerFactory.create()

    with pytest.raises(InvalidOverrideError, match="no group scope"):
        override(
            admin,
            OverrideKind.EXCLUDE_TRAINING,
            customer_id=customer.pk,
            group_attribute="country",
            group_value="France",
        )

    assert Override.objects.count() == 0


def test_expiry_before_start_and_missing_statement_are_refused(admin):
    product = ProductFactory.create()
    now = timezone.now()

    with pytest.raises(InvalidOverrideError, match="expire after"):
        override(admin, OverrideKind.SUPPRESS, product_id=product.pk, expires_at=now)
    with pytest.raises(InvalidOverrideError, match="statement"):
        override(admin, OverrideKind.SUPPRESS, product_id=product.pk, statement=" ")


def test_suppression_applies_to_its_group_only(admin):
    product = ProductFactory.create(external_id="85123A")
    override(
        admin,
        OverrideKind.SUPPRESS,
        product_id=product.pk,
        group_attribute="country",
        group_value="France",
    )

    french = slate_constraints(customer_groups={"country": "France"})
    british = slate_constraints(customer_groups={"country": "United Kingdom"})

    assert french.suppressed == {"85123A"}
    assert british.suppressed == frozenset()
    assert slate_constraints(customer_groups=EVERYONE).suppressed == frozenset()


def test_expired_revoked_and_scheduled_overrides_are_not_in_force(admin):
    product = ProductFactory.create(external_id="A")
    other = ProductFactory.create(external_id="B")
    start = timezone.now() - dt.timedelta(days=2)
    override(
        admin,
        OverrideKind.SUPPRESS,
        product_id=product.pk,
        starts_at=start,
        expires_at=start + dt.timedelta(days=1),
    )
    live = override(admin, OverrideKind.SUPPRESS, product_id=other.pk)
    override(
        admin,
        OverrideKind.SUPPRESS,
        product_id=ProductFactory.create(external_id="C").pk,
        starts_at=timezone.now() + dt.timedelta(days=1),
    )
    assert slate_constraints(customer_groups=EVERYONE).suppressed == {"B"}

    revoke_override(actor=admin, override_id=live.pk, reason="Supplier fixed it.")

    assert slate_constraints(customer_groups=EVERYONE).suppressed == frozenset()
    revoked = GovernanceEvent.objects.get(action="override.revoked")
    assert revoked.before is not None
    assert revoked.before["revoked_at"] is None
    assert revoked.after is not None
    assert revoked.after["revoked_at"] is not None
    with pytest.raises(InvalidOverrideError, match="already revoked"):
        revoke_override(actor=admin, override_id=live.pk, reason="again")


def test_demotion_and_boost_scale_the_margin_over_the_floor(admin):
    demoted = ProductFactory.create(external_id="D")
    boosted = ProductFactory.create(external_id="B")
    override(admin, OverrideKind.DEMOTE, product_id=demoted.pk, value=0.5)
    override(admin, OverrideKind.BOOST, product_id=boosted.pk, value=3.0)
    constraints = slate_constraints(customer_groups=EVERYONE)
    items = np.array(["D", "B", "C"], dtype=object)

    scores, eligible = constraints.apply(
        items, np.array([-1.0, -2.0, -3.0]), np.ones(3, dtype=bool)
    )

    # Floor -3: D's margin 2 halves to 1, B's margin 1 triples to 3.
    np.testing.assert_allclose(scores, [-2.0, 0.0, -3.0])
    assert eligible.all()


def test_cap_suppresses_once_the_share_is_reached(admin):
    capped = ProductFactory.create(external_id="CAP")
    other = ProductFactory.create(external_id="OTHER")
    override(admin, OverrideKind.CAP, product_id=capped.pk, value=0.5)
    assert slate_constraints(customer_groups=EVERYONE).suppressed == frozenset()

    slate = ServedSlate.objects.create(session_id="s1")
    ServedSlateItem.objects.create(
        slate=slate, product=capped, position=1, score=1, propensity=1, reason="model"
    )
    ServedSlateItem.objects.create(
        slate=slate, product=other, position=2, score=1, propensity=1, reason="model"
    )
    cache.clear()

    assert slate_constraints(customer_groups=EVERYONE).suppressed == {"CAP"}


def test_pins_take_their_positions_when_eligible():
    constraints = SlateConstraints(pinned={"P": 2, "Q": 9})
    items = np.array(["A", "B", "C", "P", "Q"], dtype=object)
    eligible = np.ones(5, dtype=bool)

    slate, pinned = constraints.place_pins([0, 1, 2], items, eligible, k=3)

    assert slate == [0, 3, 1]
    assert pinned == {3}
    eligible[3] = False
    assert constraints.place_pins([0, 1, 2], items, eligible, k=3) == ([0, 1, 2], set())


def test_groups_use_consented_attributes_only():
    consenting = CustomerFactory.create(
        country="France",
        group_attributes={"age_band": "25-34"},
        group_attributes_consent=True,
    )
    declining = CustomerFactory.create(
        country="France",
        group_attributes={"age_band": "25-34"},
        group_attributes_consent=False,
    )

    assert customer_groups(consenting) == {"country": "France", "age_band": "25-34"}
    assert customer_groups(declining) == {"country": "France"}
    assert customer_groups(None) == {}


def test_training_excludes_the_customers_under_exclusion(admin):
    fraud, honest = (
        CustomerFactory.create(external_id="F1"),
        CustomerFactory.create(external_id="H1"),
    )
    for customer in (fraud, honest):
        FeedbackEventFactory.create(
            customer=customer, value=2, order_id=f"o-{customer.pk}"
        )
    override(
        admin,
        OverrideKind.EXCLUDE_TRAINING,
        customer_id=fraud.pk,
        reason_code=ReasonCode.FRAUD,
        statement="Automated purchases.",
    )

    excluded = training_exclusions()
    lines = purchase_lines(excluded_customers=excluded)

    assert excluded == {"F1"}
    assert set(lines["customer"]) == {"H1"}
    assert set(purchase_lines()["customer"]) == {"F1", "H1"}

"""Two merchants, their accounts, a reviewer and a shop's API key."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import Group, User

from commerce.models import ApiScope, Customer, Merchant, Product, ServedSlate
from commerce.services import create_api_client
from governance.access import REVIEWER_GROUP
from governance.models import Decision, OverrideKind, ReasonCode, ReviewItem
from governance.services import OverrideSpec, claim_review_item, decide_review_item
from merchants.ranking import ranking_weights
from rl_engine.serving import SlateRequest, live_policy, recommend
from tests.conftest import TextVectorCache, embed_with_cache, make_policy_live
from tests.factories import MerchantFactory, ProductFactory
from tests.governance.test_review_queue import flag_product

PASSWORD = "correct horse battery staple"
INTERNAL_NOTE = "Internal: the supplier's rep called twice about this one."


def merchant_account(username: str, *merchants: Merchant) -> User:
    user = User.objects.create_user(username, password=PASSWORD)
    for merchant in merchants:
        merchant.members.add(user)
    return user


def reviewer_account(username: str = "rita") -> User:
    user = User.objects.create_user(username, password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=REVIEWER_GROUP)[0])
    return user


def decide_with_override(
    product: Product,
    reviewer: User,
    *,
    statement: str,
    decision: Decision = Decision.OVERRIDE,
    reason_code: ReasonCode = ReasonCode.LOW_QUALITY,
) -> ReviewItem:
    """Flag the product, and have the reviewer claim and decide the item."""
    item = flag_product(product)
    claimed = claim_review_item(
        reviewer=reviewer, item_id=item.pk, version=item.version
    )
    return decide_review_item(
        reviewer=reviewer,
        item_id=item.pk,
        version=claimed.version,
        decision=decision,
        reason_code=reason_code,
        note=INTERNAL_NOTE,
        override=(
            OverrideSpec(kind=OverrideKind.SUPPRESS, statement=statement)
            if decision == Decision.OVERRIDE
            else None
        ),
    )


@dataclass(frozen=True)
class Shops:
    merchant_a: Merchant
    merchant_b: Merchant
    a_products: list[Product]
    b_products: list[Product]
    alice: User
    """Merchant A's account."""
    bob: User
    """Merchant B's account."""
    rita: User
    """A reviewer."""
    api_key: str
    """A shop frontend's key with every scope."""


@pytest.fixture
def shops(db) -> Shops:
    merchant_a = MerchantFactory.create(external_id="acme", name="Acme")
    merchant_b = MerchantFactory.create(external_id="bolt", name="Bolt")
    return Shops(
        merchant_a=merchant_a,
        merchant_b=merchant_b,
        a_products=ProductFactory.create_batch(2, merchant=merchant_a),
        b_products=ProductFactory.create_batch(2, merchant=merchant_b),
        alice=merchant_account("alice", merchant_a),
        bob=merchant_account("bob", merchant_b),
        rita=reviewer_account(),
        api_key=create_api_client(name="frontend", scopes=list(ApiScope.values)).key,
    )


@pytest.fixture(autouse=True)
def quick_password_hashing(settings) -> None:
    """The accounts here log in with a password; the default hasher's rounds
    are slow by design and buy a test nothing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


SMALL_POLICY = {
    "epochs": 1,
    "batch_size": 32,
    "max_actions": 16,
    "deterministic": True,
    "policy": {
        "hidden": 8,
        "sequence_length": 10,
        "max_history_items": 32,
        "max_recent_items": 32,
        "neighbours": 20,
    },
}
"""Trains in a few seconds on the sample's 51 baskets."""


@pytest.fixture(scope="session")
def sample_vectors() -> TextVectorCache:
    """MiniLM vectors of the sample's product texts, encoded once a session."""
    return {}


@pytest.fixture
def embedded_sample(
    import_file: Any, sample_path: Any, sample_vectors: TextVectorCache
) -> None:
    """The sample's 51 invoices imported, every product text embedded by MiniLM."""
    import_file(sample_path)
    embed_with_cache(sample_vectors)


@pytest.fixture
def live_version(embedded_sample: None, settings: Any, tmp_path: Any) -> Any:
    """A small policy trained on the sample, live in this process."""
    ranking_weights.clear()
    yield make_policy_live(settings, tmp_path / "policies", SMALL_POLICY)
    live_policy.refresh()
    ranking_weights.clear()


SERVED_CUSTOMERS = 12


def serve_customers() -> ServedSlate:
    """Serve a slate from the live policy to each of a dozen of the stored
    customers; return the latest personalised one."""
    customers = Customer.objects.order_by("external_id").values_list(
        "external_id", flat=True
    )[:SERVED_CUSTOMERS]
    for seed, customer in enumerate(customers):
        recommend(
            SlateRequest(
                customer_external_id=customer,
                session_id="",
                session_items=[],
                k=10,
                context={},
                exclude=set(),
                exclude_bought_within_days=None,
                non_personalised=False,
            ),
            rng=np.random.default_rng(seed),
        )
    latest = ServedSlate.objects.exclude(policy_version="").order_by("-created_at")
    slate = latest.select_related("customer").first()
    assert slate is not None
    return slate

import pytest
from django.db import IntegrityError, transaction

from commerce.models import product_text_hash
from tests.factories import CustomerFactory, FeedbackEventFactory, ProductFactory

pytestmark = pytest.mark.django_db


def test_a_client_event_id_is_stored_once_per_source():
    first = FeedbackEventFactory.create(source="shop-a", client_event_id="e-1")

    with pytest.raises(IntegrityError), transaction.atomic():
        FeedbackEventFactory.create(source="shop-a", client_event_id="e-1")
    other_source = FeedbackEventFactory.create(
        source="shop-b", client_event_id="e-1", product=first.product
    )
    assert other_source.pk != first.pk


def test_an_event_needs_a_customer_or_a_session():
    with pytest.raises(IntegrityError), transaction.atomic():
        FeedbackEventFactory.create(customer=None, session_id="")
    anonymous = FeedbackEventFactory.create(customer=None, session_id="s-1")
    assert anonymous.pk is not None


def test_product_text_hash_follows_title_and_description():
    product = ProductFactory.create(title="Regency cakestand", description="")
    assert product.text_hash == product_text_hash("Regency cakestand", "")

    product.description = "Three tiers"
    product.save()

    assert product.text_hash == product_text_hash("Regency cakestand", "Three tiers")
    assert product.text_hash != product_text_hash("Regency cakestand", "")


def test_negative_prices_are_refused():
    with pytest.raises(IntegrityError), transaction.atomic():
        ProductFactory.create(price=-1)
    assert CustomerFactory.create().group_attributes_consent is False

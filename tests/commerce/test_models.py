import importlib

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction

from commerce.models import Product, product_text_hash
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


def test_a_sku_names_one_product_across_merchants():
    ProductFactory.create(external_id="85123A")

    with pytest.raises(IntegrityError), transaction.atomic():
        ProductFactory.create(external_id="85123A")
    assert Product.objects.filter(external_id="85123A").count() == 1


def test_the_migration_to_one_product_per_sku_names_shared_skus():
    """A database that still holds a SKU under two merchants is refused, with
    the SKUs to resolve, before the constraint is changed."""
    migration = importlib.import_module(
        "commerce.migrations.0005_product_sku_unique_across_merchants"
    )
    # As the table was before the migration; the test's transaction restores it.
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE {Product._meta.db_table} DROP CONSTRAINT product_unique_sku"
        )
    for sku in ("85123A", "71053"):
        ProductFactory.create(external_id=sku, merchant__external_id="lights-ltd")
        ProductFactory.create(external_id=sku, merchant__external_id="candles-co")
    ProductFactory.create(external_id="22423")

    with (
        connection.schema_editor() as schema_editor,
        pytest.raises(
            RuntimeError,
            match=r"^A SKU must name one product, but 2 belong to more than one "
            r"merchant: .* The first: "
            r"71053 \(candles-co, lights-ltd\); 85123A \(candles-co, lights-ltd\)\.$",
        ),
    ):
        migration.refuse_shared_skus(apps, schema_editor)

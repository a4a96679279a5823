"""factory_boy factories for the store's models."""

import datetime as dt

import factory
from factory.django import DjangoModelFactory

from commerce.models import Customer, EventKind, FeedbackEvent, Merchant, Product


class MerchantFactory(DjangoModelFactory[Merchant]):
    class Meta:
        model = Merchant
        django_get_or_create = ["external_id"]

    external_id = factory.Sequence(lambda n: f"merchant-{n}")
    name = factory.LazyAttribute(lambda merchant: merchant.external_id.title())


class ProductFactory(DjangoModelFactory[Product]):
    class Meta:
        model = Product

    merchant = factory.SubFactory(MerchantFactory)
    external_id = factory.Sequence(lambda n: f"SKU{n:05d}")
    title = factory.Sequence(lambda n: f"Product {n}")
    price = factory.Faker("pydecimal", left_digits=3, right_digits=2, positive=True)


class CustomerFactory(DjangoModelFactory[Customer]):
    class Meta:
        model = Customer

    external_id = factory.Sequence(lambda n: f"{12000 + n}")
    country = "United Kingdom"


class FeedbackEventFactory(DjangoModelFactory[FeedbackEvent]):
    class Meta:
        model = FeedbackEvent

    customer = factory.SubFactory(CustomerFactory)
    product = factory.SubFactory(ProductFactory)
    kind = EventKind.PURCHASE
    quantity = 1
    occurred_at = factory.LazyFunction(
        lambda: dt.datetime(2011, 11, 1, 12, tzinfo=dt.UTC)
    )
    source = "test"
    client_event_id = factory.Sequence(lambda n: f"event-{n}")

"""Tables for the catalogue, customers, feedback events and served slates."""

import hashlib
import uuid
from typing import Any

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import Q


def product_text_hash(title: str, description: str) -> str:
    """Return the hash that decides whether a product's text must be re-embedded."""
    return hashlib.sha256(f"{title}\n{description}".encode()).hexdigest()


class Merchant(models.Model):
    """A seller whose products the platform recommends."""

    external_id = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=255)
    is_active = models.BooleanField(default=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="merchants"
    )
    """The merchant's own staff: they see this merchant's products and nothing
    of any other merchant's."""
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    """An item of a merchant's catalogue, identified by its SKU.

    A deployment serves one shop and its merchants are the shop's sellers, so a
    SKU names one product across all merchants: events, slates and the policy's
    item vocabulary refer to products by SKU alone.
    """

    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, related_name="products"
    )
    external_id = models.CharField("SKU", max_length=128)
    title = models.CharField(max_length=500)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    is_active = models.BooleanField(default=True)
    in_stock = models.BooleanField(default=True)
    # sha256 of title and description; the embedding cache is keyed on it.
    text_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Its index serves every lookup by SKU.
            models.UniqueConstraint(fields=["external_id"], name="product_unique_sku"),
            models.CheckConstraint(
                condition=Q(price__isnull=True) | Q(price__gte=0),
                name="product_price_not_negative",
            ),
        ]
        indexes = [
            models.Index(fields=["text_hash"], name="product_text_hash_idx"),
            # Serving reads the eligible catalogue on every policy load.
            models.Index(
                fields=["merchant"],
                condition=Q(is_active=True, in_stock=True),
                name="product_eligible_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} {self.title}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.text_hash = product_text_hash(self.title, self.description)
        super().save(*args, **kwargs)


class Customer(models.Model):
    """A shop's customer, known only by the shop's pseudonymous id."""

    external_id = models.CharField(max_length=128, unique=True)
    country = models.CharField(max_length=100, blank=True)
    # Attributes such as an age band that fairness audits group by. They are
    # used only while ``group_attributes_consent`` is true.
    group_attributes = models.JSONField(default=dict, blank=True)
    group_attributes_consent = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["country"], name="customer_country_idx")]

    def __str__(self) -> str:
        return self.external_id


class EventKind(models.TextChoices):
    IMPRESSION = "impression"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RETURN = "return"
    RATING = "rating"


class FeedbackEvent(models.Model):
    """One thing a customer did with a product, as reported by a shop or import."""

    customer = models.ForeignKey(
        Customer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="events",
    )
    # Anonymous visitors (and guest checkouts) are grouped by session.
    session_id = models.CharField(max_length=128, blank=True)
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="events"
    )
    # The shop's order or invoice number; purchases sharing it form one basket.
    order_id = models.CharField(max_length=128, blank=True)
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    quantity = models.PositiveIntegerField(default=1)
    # Money for purchases and returns (quantity x unit price), stars for ratings.
    value = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=64)
    client_event_id = models.CharField(max_length=128)
    slate = models.ForeignKey(
        "ServedSlate",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="events",
    )
    slate_position = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "client_event_id"], name="event_unique_client_id"
            ),
            models.CheckConstraint(
                condition=Q(customer__isnull=False) | ~Q(session_id=""),
                name="event_has_customer_or_session",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "occurred_at"], name="event_customer_idx"),
            models.Index(fields=["product", "occurred_at"], name="event_product_idx"),
            models.Index(fields=["kind", "occurred_at"], name="event_kind_idx"),
            models.Index(
                fields=["order_id"],
                condition=~Q(order_id=""),
                name="event_order_idx",
            ),
            # The log is appended in time order; BRIN keeps window scans cheap.
            BrinIndex(fields=["occurred_at"], name="event_occurred_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.product_id} at {self.occurred_at:%Y-%m-%d %H:%M}"


class SlateReason(models.TextChoices):
    MODEL = "model"
    EXPLORATION = "exploration"
    BOOST = "boost"
    FALLBACK = "fallback"


class ServedSlate(models.Model):
    """A ranked list of products shown to a customer, as served."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        Customer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="slates",
    )
    session_id = models.CharField(max_length=128, blank=True)
    context = models.JSONField(default=dict, blank=True)
    # The policy version's label; empty when no policy was live.
    policy_version = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            BrinIndex(fields=["created_at"], name="slate_created_brin"),
            models.Index(fields=["customer", "created_at"], name="slate_customer_idx"),
            models.Index(fields=["policy_version"], name="slate_policy_idx"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class ServedSlateItem(models.Model):
    """One product in a served slate, with the probability it was picked."""

    slate = models.ForeignKey(
        ServedSlate, on_delete=models.CASCADE, related_name="items"
    )
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="slate_items"
    )
    position = models.PositiveSmallIntegerField()
    score = models.FloatField()
    propensity = models.FloatField()
    reason = models.CharField(max_length=16, choices=SlateReason.choices)

    class Meta:
        ordering = ["slate", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["slate", "position"], name="slate_item_unique_position"
            ),
            models.CheckConstraint(
                condition=Q(propensity__gt=0) & Q(propensity__lte=1),
                name="slate_item_propensity_range",
            ),
        ]
        indexes = [models.Index(fields=["product"], name="slate_item_product_idx")]

    def __str__(self) -> str:
        return f"{self.slate_id} #{self.position}"


class ImportStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ImportRun(models.Model):
    """One run of a transaction import: what file, what it added, what it refused."""

    source = models.CharField(max_length=64)
    path = models.CharField(max_length=1024)
    file_sha256 = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=ImportStatus.choices, default=ImportStatus.RUNNING
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    # The first bad rows, each with its line number, column and value.
    bad_rows = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.source} {self.started_at:%Y-%m-%d %H:%M} {self.status}"


class ApiScope(models.TextChoices):
    RECOMMENDATIONS = "recommendations", "ask for recommendations"
    EVENTS = "events", "send feedback events"
    CATALOGUE = "catalogue", "read and sync the catalogue"


class ApiClient(models.Model):
    """A shop frontend or backend that calls the REST API with its own key.

    Only a hash of the key is stored; the key is shown once, when created. Its
    first characters (the prefix) find the row without a scan.
    """

    name = models.CharField(max_length=100, unique=True)
    # Events this client sends are unique per (source, client_event_id).
    source = models.CharField(max_length=64)
    key_prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def has_scope(self, scope: str) -> bool:
        return self.is_active and scope in self.scopes

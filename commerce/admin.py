from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from commerce.models import (
    ApiClient,
    Customer,
    FeedbackEvent,
    ImportRun,
    Merchant,
    Product,
    ServedSlate,
    ServedSlateItem,
)


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = ["name", "external_id", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "external_id"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "title",
        "merchant",
        "price",
        "is_active",
        "in_stock",
    ]
    list_filter = ["is_active", "in_stock", "merchant"]
    search_fields = ["external_id", "title"]
    list_select_related = ["merchant"]
    readonly_fields = ["text_hash", "created_at", "updated_at"]


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["external_id", "country", "group_attributes_consent", "created_at"]
    list_filter = ["group_attributes_consent", "country"]
    search_fields = ["external_id"]


class ReadOnlyLogAdmin(admin.ModelAdmin):
    """Logs are written by the API and importers; the admin only reads them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(FeedbackEvent)
class FeedbackEventAdmin(ReadOnlyLogAdmin):
    list_display = [
        "occurred_at",
        "kind",
        "product",
        "customer",
        "quantity",
        "value",
        "source",
    ]
    list_filter = ["kind"]
    # Exact matches use the indexes; a substring search would scan the log.
    search_fields = ["=client_event_id", "=order_id", "=customer__external_id"]
    list_select_related = ["product", "customer"]
    raw_id_fields = ["customer", "product", "slate"]
    date_hierarchy = "occurred_at"
    # Counting the whole event log on every page is slow; show "more" instead.
    show_full_result_count = False


class ServedSlateItemInline(admin.TabularInline):
    model = ServedSlateItem
    raw_id_fields = ["product"]
    extra = 0


@admin.register(ServedSlate)
class ServedSlateAdmin(ReadOnlyLogAdmin):
    list_display = ["id", "customer", "policy_version", "created_at"]
    list_filter = ["policy_version"]
    search_fields = ["=id", "=customer__external_id", "=session_id"]
    raw_id_fields = ["customer"]
    inlines = [ServedSlateItemInline]
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(ServedSlateItem)
class ServedSlateItemAdmin(ReadOnlyLogAdmin):
    list_display = ["slate", "position", "product", "score", "propensity", "reason"]
    list_filter = ["reason"]
    search_fields = ["=slate__id", "=product__external_id"]
    raw_id_fields = ["slate", "product"]
    show_full_result_count = False


@admin.register(ImportRun)
class ImportRunAdmin(ReadOnlyLogAdmin):
    list_display = ["id", "source", "path", "status", "started_at", "finished_at"]
    list_filter = ["status", "source"]
    search_fields = ["path", "file_sha256"]


@admin.register(ApiClient)
class ApiClientAdmin(ReadOnlyLogAdmin):
    """Clients are created and revoked by their commands, which log each change.

    The key's hash is never shown: the prefix is enough to tell keys apart.
    """

    shown = ("name", "source", "key_prefix", "scopes", "is_active", "created_at")
    list_display = shown
    list_filter = ["is_active"]
    search_fields = ["name", "source", "=key_prefix"]
    fields = shown
    readonly_fields = shown

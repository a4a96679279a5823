from django.contrib import admin

from commerce.admin import ReadOnlyLogAdmin
from rl_engine.models import PolicyVersion, ProductEmbedding


@admin.register(ProductEmbedding)
class ProductEmbeddingAdmin(ReadOnlyLogAdmin):
    list_display = ["text_hash", "model_name", "dimension", "created_at"]
    list_filter = ["model_name"]
    search_fields = ["=text_hash"]


@admin.register(PolicyVersion)
class PolicyVersionAdmin(ReadOnlyLogAdmin):
    """Versions change status through promote and rollback, which log who and why."""

    list_display = ["label", "status", "trained_before", "created_at", "promoted_at"]
    list_filter = ["status", "embedding_model"]
    search_fields = ["label"]

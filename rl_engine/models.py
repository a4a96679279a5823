"""Product text vectors and the policy registry."""

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q


class ProductEmbedding(models.Model):
    """The text vector of a product text, cached by the text's hash and model."""

    text_hash = models.CharField(max_length=64)
    model_name = models.CharField(max_length=255)
    dimension = models.PositiveSmallIntegerField()
    # float32, little-endian, ``dimension`` values.
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "text_hash"], name="embedding_unique_text"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_name}:{self.text_hash[:12]}"

    def as_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype="<f4")


class PolicyStatus(models.TextChoices):
    CANDIDATE = "candidate"
    LIVE = "live"
    RETIRED = "retired"


class PolicyVersion(models.Model):
    """A trained policy: what it was trained on, how it scored, where it lives."""

    label = models.CharField(max_length=64, unique=True)
    status = models.CharField(
        max_length=16, choices=PolicyStatus.choices, default=PolicyStatus.CANDIDATE
    )
    config = models.JSONField()
    # The training data: events strictly before ``trained_before``.
    data_start = models.DateTimeField(null=True, blank=True)
    trained_before = models.DateTimeField()
    transitions = models.PositiveIntegerField(default=0)
    # Training curves under names like "loss/td"; evaluation reports by split.
    metrics = models.JSONField(default=dict, blank=True)
    artifact_path = models.CharField(max_length=1024)
    artifact_sha256 = models.CharField(max_length=64)
    embedding_model = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=Q(status="live"),
                name="policy_single_live_version",
            )
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.status})"

"""A live policy trained on the real first week, with real MiniLM text vectors."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from rl_engine.models import PolicyVersion, ProductEmbedding
from rl_engine.selectors import embedding_model_name
from rl_engine.services import embed_products, promote_policy, train_policy_version
from rl_engine.serving import eligible_catalogue, live_policy, popularity

SMALL_POLICY = {
    "epochs": 2,
    "batch_size": 64,
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
"""Small enough to train in seconds on the first week's 1,900 baskets."""

TRAINED_BEFORE = dt.datetime(2010, 12, 8)


@pytest.fixture(scope="session")
def text_vector_cache() -> dict[tuple[str, str], bytes]:
    """MiniLM vectors of the first week's product texts, by (model, text hash).

    Encoding the 2,300 texts takes most of a minute on a small CPU; each test
    encodes them at most once per session and stores the rows anew.
    """
    return {}


@pytest.fixture
def embedded_first_week(
    import_file: Any,
    first_week_path: Any,
    text_vector_cache: dict[tuple[str, str], bytes],
) -> None:
    import_file(first_week_path)
    if not text_vector_cache:
        embed_products()
        text_vector_cache.update(
            ((row.model_name, row.text_hash), bytes(row.vector))
            for row in ProductEmbedding.objects.all()
        )
        return
    model = embedding_model_name()
    ProductEmbedding.objects.bulk_create(
        ProductEmbedding(
            model_name=name,
            text_hash=text_hash,
            dimension=len(vector) // 4,
            vector=vector,
        )
        for (name, text_hash), vector in text_vector_cache.items()
        if name == model
    )


@pytest.fixture
def live_version(
    embedded_first_week: None, settings: Any, tmp_path: Any
) -> Iterator[PolicyVersion]:
    """A policy trained on the first week's purchases, made live."""
    settings.POLICY_ARTIFACT_DIR = tmp_path / "policies"
    settings.POLICY_RELOAD_SECONDS = 0
    settings.CATALOGUE_CACHE_SECONDS = 0
    for cache in (eligible_catalogue, popularity):
        cache.clear()
    live_policy.refresh()
    version = train_policy_version(before=TRAINED_BEFORE, config_overrides=SMALL_POLICY)
    promoted = promote_policy(version=version, actor=None, reason="test", force=True)
    yield promoted
    live_policy.refresh()

"""A live policy trained on the real first week, with real MiniLM text vectors."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from rl_engine.models import PolicyVersion
from rl_engine.serving import live_policy
from tests.conftest import TextVectorCache, embed_with_cache, make_policy_live

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
def text_vector_cache() -> TextVectorCache:
    """MiniLM vectors of the first week's product texts, by (model, text hash).

    Encoding the 2,300 texts takes most of a minute on a small CPU; each test
    encodes them at most once per session and stores the rows anew.
    """
    return {}


@pytest.fixture
def embedded_first_week(
    import_file: Any, first_week_path: Any, text_vector_cache: TextVectorCache
) -> None:
    import_file(first_week_path)
    embed_with_cache(text_vector_cache)


@pytest.fixture
def live_version(
    embedded_first_week: None, settings: Any, tmp_path: Any
) -> Iterator[PolicyVersion]:
    """A policy trained on the first week's purchases, made live."""
    yield make_policy_live(
        settings, tmp_path / "policies", SMALL_POLICY, before=TRAINED_BEFORE
    )
    live_policy.refresh()

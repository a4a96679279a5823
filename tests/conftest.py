import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from django.conf import settings

from commerce.importers.transactions import ProductCodeFilter, TransactionLayout
from commerce.services import ImportResult, import_transactions

ROOT = Path(__file__).resolve().parent.parent
ONLINE_RETAIL = ROOT / "data" / "online-retail" / "online_retail.csv.gz"
SAMPLE = Path(__file__).resolve().parent / "fixtures" / "online_retail_sample.csv"


@pytest.fixture
def online_retail_path() -> Path:
    return ONLINE_RETAIL


@pytest.fixture
def sample_path() -> Path:
    """Every line of 51 invoices cut from the real file (see fixtures/)."""
    return SAMPLE


@pytest.fixture(scope="session")
def first_week_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every line of the real file's first week (2010-12-01 to 12-07)."""
    lines = pd.read_csv(ONLINE_RETAIL, dtype=str, keep_default_na=False)
    path = tmp_path_factory.mktemp("online-retail") / "first_week.csv"
    lines[lines["InvoiceDate"] < "2010-12-08"].to_csv(path, index=False)
    return path


ImportFile = Callable[..., ImportResult]


@pytest.fixture
def import_file() -> ImportFile:
    """Import a file with the project's default settings; keywords override."""

    def run(path: Path, **overrides: Any) -> ImportResult:
        options: dict[str, Any] = {
            "layout": TransactionLayout.online_retail(),
            "code_filter": ProductCodeFilter.of(
                settings.IMPORT_NON_PRODUCT_CODES, settings.IMPORT_NON_PRODUCT_PREFIXES
            ),
            "source": "online-retail",
            "default_merchant": settings.IMPORT_DEFAULT_MERCHANT,
        }
        options.update(overrides)
        return import_transactions(path=path, **options)

    return run


@pytest.fixture(autouse=True)
def fresh_serving_caches() -> None:
    """Start every test without the catalogue, popularity, policy or throttle
    counts that an earlier test left in this process's caches."""
    from django.core.cache import cache

    from rl_engine.serving import (
        eligible_catalogue,
        live_policy,
        popularity,
        popularity_as_of,
    )

    eligible_catalogue.clear()
    popularity.clear()
    popularity_as_of.cache_clear()
    live_policy.refresh()
    # Throttle counters live in the cache: one test's calls must not count
    # against the next one's rate.
    cache.clear()


TextVectorCache = dict[tuple[str, str], bytes]
"""MiniLM vectors by (model name, text hash), kept across a session's tests."""


def embed_with_cache(cache: TextVectorCache) -> None:
    """Embed every stored product text, encoding each at most once a session.

    The first call runs the real encoder and keeps its vectors; later calls
    store the kept vectors anew in the (rolled back and refilled) database.
    """
    from rl_engine.models import ProductEmbedding
    from rl_engine.selectors import embedding_model_name
    from rl_engine.services import embed_products

    if not cache:
        embed_products()
        cache.update(
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
        for (name, text_hash), vector in cache.items()
        if name == model
    )


def make_policy_live(
    settings: Any,
    artifact_dir: Path,
    config_overrides: dict[str, Any],
    before: dt.datetime | None = None,
) -> Any:
    """Train a policy on the stored log, promote it and load it in this process.

    Serving reads the live version and the catalogue afresh on every request.
    """
    from rl_engine.services import promote_policy, train_policy_version
    from rl_engine.serving import eligible_catalogue, live_policy, popularity

    settings.POLICY_ARTIFACT_DIR = artifact_dir
    settings.POLICY_RELOAD_SECONDS = 0
    settings.CATALOGUE_CACHE_SECONDS = 0
    version = train_policy_version(before=before, config_overrides=config_overrides)
    promoted = promote_policy(version=version, actor=None, reason="test", force=True)
    for cache in (eligible_catalogue, popularity):
        cache.clear()
    live_policy.refresh()
    return promoted

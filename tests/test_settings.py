"""Settings read from the environment, checked in a fresh interpreter."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SHOW_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_TASK_ALWAYS_EAGER)"
)
# Settings that the checks below set themselves.
CHECKED = {
    "SECRET_KEY",
    "DEBUG",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DATA_DIR",
    "CELERY_VISIBILITY_TIMEOUT_SECONDS",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
}
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k7Qv-3nX_p9Lw2sR8dYh4mJc6tBf1gZa0eUo5iNy7xKq3vWs2rTj",
    "DATABASE_URL": "postgres://u@127.0.0.1/x",
}
HTTPS = {
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}


def load_settings(
    *arguments: str, **environment: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGUMENTS`` (by default: print SHOW_SETTINGS) in the checkout."""
    inherited = {key: value for key, value in os.environ.items() if key not in CHECKED}
    env = {**inherited, "DJANGO_SETTINGS_MODULE": "config.settings", **environment}
    return subprocess.run(
        [sys.executable, *(arguments or ("-c", SHOW_SETTINGS))],
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


def deploy_warnings(**environment: str) -> set[str]:
    result = load_settings("manage.py", "check", "--deploy", **environment)
    return set(re.findall(r"\(security\.(W\d+)\)", result.stdout + result.stderr))


def test_the_deploy_checks_pass_when_the_environment_sets_https():
    insecure = deploy_warnings(**PRODUCTION)
    secure = deploy_warnings(**PRODUCTION, **HTTPS)

    # Cookies are secure by default once DEBUG is off; HTTPS is the proxy's to set.
    assert insecure == {"W004", "W008"}
    assert secure == set()


def test_secure_cookies_can_be_turned_off_for_plain_http():
    warnings = deploy_warnings(
        **PRODUCTION, **HTTPS, SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false"
    )

    assert warnings == {"W012", "W016"}


def test_a_proxy_ssl_header_needs_a_header_and_a_value():
    result = load_settings(**PRODUCTION, SECURE_PROXY_SSL_HEADER="https")

    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be a header and a value" in result.stderr


def test_celery_outlasts_training_and_beat_writes_into_the_data_directory(tmp_path):
    show = (
        "import django; django.setup(); from config.celery import app; "
        "print(app.conf.broker_transport_options['visibility_timeout'], "
        "app.conf.beat_schedule_filename)"
    )

    default = load_settings("-c", show, **PRODUCTION, DATA_DIR=str(tmp_path))
    tuned = load_settings(
        "-c", show, **PRODUCTION, CELERY_VISIBILITY_TIMEOUT_SECONDS="36000"
    )

    assert default.stdout.split() == ["21600", str(tmp_path / "celerybeat-schedule")]
    assert tuned.stdout.split()[0] == "36000"


def test_beat_creates_the_folder_of_its_schedule_file(tmp_path):
    from config.celery import DataDirScheduler, app

    schedule_file = tmp_path / "fresh-data-dir" / "celerybeat-schedule"

    scheduler = DataDirScheduler(app=app, schedule_filename=str(schedule_file))
    entries = set(scheduler.schedule)
    scheduler.close()

    assert "governance-audit" in entries
    assert list(schedule_file.parent.glob("celerybeat-schedule*"))

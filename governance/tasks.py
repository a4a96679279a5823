"""Celery tasks of governance: thin wrappers around the services.

Beat runs ``run_scheduled_audit`` every ``AUDIT_EVERY_SECONDS`` (settings).
A lost database connection is retried with backoff; each try is its own
audit run, and a failed one stays on record as failed.
"""

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from governance import services


@shared_task(
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_kwargs={"max_retries": 3},
)
def run_scheduled_audit(window_hours: float | None = None) -> int:
    """Audit the last ``window_hours`` (default ``AUDIT_WINDOW_HOURS``); return
    the audit run's id."""
    until = timezone.now()
    hours = window_hours if window_hours is not None else settings.AUDIT_WINDOW_HOURS
    audit_run = services.run_audit(
        since=until - dt.timedelta(hours=hours),
        until=until,
        triggered_by="schedule",
    )
    return audit_run.pk

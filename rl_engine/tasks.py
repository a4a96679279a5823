"""Celery tasks: thin wrappers around the services, with their retry policy.

``train_policy`` is routed to the ``training`` queue (settings), which GPU
workers serve; the rest run on the default ``cpu`` queue. A worker that dies
mid-training leaves no version registered (the row is written last, in one
transaction), and with acks_late the task is delivered again and resumes from
its checkpoint.
"""

import datetime as dt
from typing import Any

from celery import shared_task
from django.db import OperationalError

from rl_engine import services
from rl_engine.core.protocol import PeriodName
from rl_engine.models import PolicyVersion

RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "retry_kwargs": {"max_retries": 3},
}


@shared_task(**RETRY)
def embed_products() -> dict[str, int]:
    result = services.embed_products()
    return {"embedded": result.embedded, "cached": result.cached}


@shared_task(**RETRY)
def train_policy(
    before: str | None = None, config_overrides: dict[str, Any] | None = None
) -> str:
    """Train and register a candidate; ``before`` is an ISO timestamp."""
    version = services.train_policy_version(
        before=dt.datetime.fromisoformat(before) if before else None,
        config_overrides=config_overrides,
    )
    return version.label


@shared_task(**RETRY)
def evaluate_policy(label: str, split: PeriodName | None = None) -> dict[str, Any]:
    version = PolicyVersion.objects.get(label=label)
    return services.evaluate_policy_version(version=version, split=split)

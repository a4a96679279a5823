"""A training task through a real Celery worker over Redis, end to end."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app
from governance.models import GovernanceEvent
from rl_engine.models import PolicyStatus, PolicyVersion
from rl_engine.tasks import train_policy

ROOT = Path(__file__).resolve().parents[2]
REDIS = ("127.0.0.1", 6379)
BROKER = f"redis://{REDIS[0]}:{REDIS[1]}/15"

SMALL = {
    "epochs": 1,
    "batch_size": 64,
    "max_actions": 16,
    "policy": {"hidden": 8, "sequence_length": 10, "max_history_items": 32},
}


def redis_is_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_broker() -> Iterator[None]:
    if not redis_is_up():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide Redis at {REDIS[0]}:{REDIS[1]}")
        pytest.skip(f"needs a Redis broker at {REDIS[0]}:{REDIS[1]}")
    previous = {
        "broker_url": app.conf.broker_url,
        "result_backend": app.conf.result_backend,
        "task_always_eager": app.conf.task_always_eager,
    }
    app.conf.update(broker_url=BROKER, result_backend=BROKER, task_always_eager=False)
    yield
    app.conf.update(previous)


@pytest.fixture
def worker(redis_broker: None, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Start a worker on the training queue, pointed at the test database."""
    env = {
        **os.environ,
        "CELERY_BROKER_URL": BROKER,
        "CELERY_RESULT_BACKEND": BROKER,
        "DATABASE_NAME": connection.settings_dict["NAME"],
        "POLICY_ARTIFACT_DIR": str(tmp_path / "policies"),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--queues",
            "training",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--hostname",
            f"test-training-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.django_db(transaction=True)
def test_training_task_runs_on_a_worker_and_registers_a_version(
    import_file, first_week_path, worker
):
    import_file(first_week_path)

    # An explicit connection: the app's producer pool may have been opened
    # for the default broker while an earlier test ran tasks in-process.
    with (
        app.connection_for_write(BROKER) as connection,
        connection.Producer() as producer,
    ):
        app.control.purge(connection=connection)
        train_policy.apply_async(
            kwargs={"before": "2010-12-06T00:00:00", "config_overrides": SMALL},
            producer=producer,
        )

    # The worker writes the version row when the task is done.
    deadline = time.monotonic() + 240
    while not PolicyVersion.objects.exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.terminate()
            output = worker.communicate(timeout=20)[0]
            pytest.fail(f"no version was registered; worker output:\n{output[-4000:]}")
        time.sleep(0.5)
    label = PolicyVersion.objects.get().label

    version = PolicyVersion.objects.get(label=label)
    assert version.status == PolicyStatus.CANDIDATE
    assert version.transitions == 93
    assert Path(version.artifact_path).exists()
    assert GovernanceEvent.objects.filter(
        action="policy.registered", target_id=label
    ).exists()
    assert settings.CELERY_TASK_ROUTES["rl_engine.tasks.train_policy"] == {
        "queue": "training"
    }

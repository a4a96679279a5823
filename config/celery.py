"""The Celery app. Tasks are found in each installed app's ``tasks`` module."""

import os
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("governed_recommender")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class DataDirScheduler(PersistentScheduler):
    """Beat's default scheduler, which first creates its schedule file's folder.

    The file lives in the data directory, which a host that runs only beat
    may not have yet.
    """

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()

"""The Celery app: settings come from Django's (CELERY_*), tasks from fleet.tasks."""

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("agentina")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _ensure_filesystem_broker_folders() -> None:
    """kombu's filesystem transport does not create its folders; do it for it."""
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


@app.on_after_configure.connect
def _prepare_broker(sender: Celery, **kwargs: Any) -> None:
    _ensure_filesystem_broker_folders()


@beat_init.connect
def _catch_up_daily_work(sender: Any = None, **kwargs: Any) -> None:
    """A control plane that was down at midnight would otherwise wait a day to expire tokens."""
    app.send_task("fleet.expire_tokens")

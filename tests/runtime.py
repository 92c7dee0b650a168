"""Running the real processes (Celery worker and beat) against the test database."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

CELERY = str(Path(sys.executable).parent / "celery")


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@contextmanager
def celery_worker_and_beat(tmp_path: Path, **env: str) -> Iterator[Path]:
    """A worker (solo pool) and beat on the test database; yields their log file."""
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "beat-schedule"),
        **env,
    }
    log_path = tmp_path / "celery.log"
    log = log_path.open("w")
    procs = [
        subprocess.Popen(
            [CELERY, "-A", "config", *args],
            env=full_env,
            cwd=settings.BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for args in (
            ["worker", "--pool", "solo", "--loglevel", "INFO", "--hostname", "test-worker@%h"],
            ["beat", "--loglevel", "INFO"],
        )
    ]
    try:
        yield log_path
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

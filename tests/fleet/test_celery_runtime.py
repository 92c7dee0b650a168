"""A real Celery worker and beat, as `make run` and production start them, against the
test database: beat's schedule (shortened by settings) writes snapshots and marks a silent
agent offline, its start-up catch-up expires tokens, and a task sent from the command line
reaches the worker too."""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from fleet.choices import AgentStatus, TokenStatus
from fleet.models import ActivationToken, Agent, SweepState
from fleet.services.sweeps import STALE_SWEEP
from fleet.services.tokens import token_mint
from tests import factories

CELERY = str(Path(sys.executable).parent / "celery")


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def _wait_for(predicate, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(params=["filesystem", pytest.param("redis", marks=pytest.mark.redis)])
def broker_env(request, tmp_path):
    if request.param == "filesystem":
        return {"CELERY_BROKER_URL": "filesystem://", "CELERY_BROKER_DIR": str(tmp_path / "broker")}
    return {"CELERY_BROKER_URL": settings.CELERY_BROKER_URL}


@pytest.mark.django_db(transaction=True)
def test_beat_and_a_sent_task_reach_a_real_worker(broker_env, tmp_path, customer):
    overdue, _ = token_mint(customer=customer, expires_in=timedelta(seconds=-5))
    silent = factories.agent(customer, last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    SweepState.objects.create(name=STALE_SWEEP, last_run_at=timezone.now())  # no gap: no grace
    env = {
        **os.environ,
        **broker_env,
        "DATABASE_URL": _database_url(),
        "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "beat-schedule"),
        "STALE_SWEEP_SECONDS": "2",
        "SNAPSHOT_SECONDS": "3",
    }
    log = (tmp_path / "celery.log").open("w")
    procs = [
        subprocess.Popen(
            [CELERY, "-A", "config", *args],
            env=env,
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
        # Beat sends the daily expiry once at start-up (catch-up after downtime).
        assert _wait_for(
            lambda: ActivationToken.objects.get(pk=overdue.pk).status == TokenStatus.EXPIRED
        ), (tmp_path / "celery.log").read_text()[-3000:]
        subprocess.run(
            [CELERY, "-A", "config", "call", "fleet.mark_stale_agents"],
            env=env,
            cwd=settings.BASE_DIR,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert _wait_for(lambda: Agent.objects.get(pk=silent.pk).status == AgentStatus.OFFLINE), (
            tmp_path / "celery.log"
        ).read_text()[-3000:]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    text = (tmp_path / "celery.log").read_text()
    assert "fleet.expire_tokens" in text
    assert "succeeded" in text

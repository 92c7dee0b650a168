"""A real Celery worker and beat, as `make run` and production start them, against the
test database: beat's schedule (shortened by settings) writes snapshots and marks a silent
agent offline, its start-up catch-up expires tokens, and a task sent from the command line
reaches the worker too."""

import os
import subprocess
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from fleet.choices import AgentStatus, TokenStatus
from fleet.models import ActivationToken, Agent, FleetSnapshot, SweepState
from fleet.services.sweeps import STALE_SWEEP
from fleet.services.tokens import token_mint
from tests import factories
from tests.runtime import CELERY, celery_worker_and_beat, database_url, wait_for


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
    schedule = {"STALE_SWEEP_SECONDS": "2", "SNAPSHOT_SECONDS": "3"}
    with celery_worker_and_beat(tmp_path, **broker_env, **schedule) as log:
        # Beat sends the daily expiry once at start-up (catch-up after downtime).
        assert wait_for(lambda: ActivationToken.objects.get(pk=overdue.pk).status == "expired"), (
            log.read_text()[-3000:]
        )
        # The schedule's stale sweep and minute snapshot (every 2 s and 3 s here).
        assert wait_for(lambda: Agent.objects.get(pk=silent.pk).status == AgentStatus.OFFLINE), (
            log.read_text()[-3000:]
        )
        assert wait_for(
            lambda: FleetSnapshot.objects.filter(customer=customer, agents_total=1).exists()
        ), log.read_text()[-3000:]
        sent = ActivationToken.objects.filter(pk=overdue.pk)
        sent.update(status=TokenStatus.OUTSTANDING)
        subprocess.run(
            [CELERY, "-A", "config", "call", "fleet.expire_tokens"],
            env={**os.environ, **broker_env, "DATABASE_URL": database_url()},
            cwd=settings.BASE_DIR,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert wait_for(lambda: sent.get().status == TokenStatus.EXPIRED)
    text = log.read_text()
    assert "fleet.expire_tokens" in text
    assert "succeeded" in text

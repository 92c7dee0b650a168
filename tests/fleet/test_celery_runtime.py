"""A real Celery worker and beat, as `make run` and production start them, against the
test database: beat's schedule (shortened by settings) writes snapshots and marks a silent
agent offline, its start-up catch-up expires tokens, and a task sent from the command line
reaches the worker too.

Every wait is on a condition in the database, with a deadline far above what a healthy
run needs (a loaded two-core machine may take many seconds to start three Python
processes); a worker or beat that dies fails the test at once, with the log."""

import os
import subprocess
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from fleet.choices import AgentStatus, TokenStatus
from fleet.models import ActivationToken, Agent, FleetSnapshot
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.runtime import CELERY, celery_processes, database_url, free_port, redis_server

DEADLINE = 240  # seconds; a healthy run meets each condition within a few


@pytest.fixture(params=["filesystem", pytest.param("redis", marks=pytest.mark.redis)])
def broker_env(request, tmp_path):
    if request.param == "filesystem":
        yield {"CELERY_BROKER_URL": "filesystem://", "CELERY_BROKER_DIR": str(tmp_path / "broker")}
        return
    # A Redis of its own: on a shared one, a worker of another test run (or of `make run`)
    # consumes this test's one-off messages, and this worker theirs.
    port = free_port()
    with redis_server(port):
        yield {"CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"}


@pytest.mark.django_db(transaction=True)
def test_beat_and_a_sent_task_reach_a_real_worker(broker_env, tmp_path, customer):
    overdue, _ = token_mint(customer=customer, expires_in=timedelta(seconds=-5), actor=SYSTEM)
    silent = factories.agent(customer, last_heartbeat_at=timezone.now() - timedelta(hours=2))
    factories.sweep_state()  # swept just now: no gap, so no grace
    schedule = {
        "STALE_SWEEP_SECONDS": "2",
        "SNAPSHOT_SECONDS": "3",
        # An hour's online window: however late a loaded machine gets the first sweep
        # going, it is no gap that earns the fleet a window of grace. The silent agent
        # was last heard two hours ago.
        "AGENT_ONLINE_WINDOW_SECONDS": "3600",
    }
    with celery_processes(tmp_path, **broker_env, **schedule) as celery:
        # Beat sends the daily expiry once at start-up (catch-up after downtime).
        token = ActivationToken.objects.filter(pk=overdue.pk)
        celery.wait_for(
            lambda: token.get().status == TokenStatus.EXPIRED, "start-up expiry", DEADLINE
        )
        # A task sent from the command line; its process starts while the schedule runs.
        token.update(status=TokenStatus.OUTSTANDING)
        call = subprocess.Popen(
            [CELERY, "-A", "config", "call", "fleet.expire_tokens"],
            env={**os.environ, **broker_env, "DATABASE_URL": database_url()},
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            # The schedule's stale sweep and minute snapshot (every 2 s and 3 s here).
            celery.wait_for(
                lambda: Agent.objects.get(pk=silent.pk).status == AgentStatus.OFFLINE,
                "stale sweep",
                DEADLINE,
            )
            celery.wait_for(
                lambda: FleetSnapshot.objects.filter(customer=customer, agents_total=1).exists(),
                "snapshot",
                DEADLINE,
            )
            output, _ = call.communicate(timeout=DEADLINE)
        finally:
            if call.poll() is None:
                call.kill()
                call.wait()
        assert call.returncode == 0, output.decode(errors="replace")
        celery.wait_for(
            lambda: token.get().status == TokenStatus.EXPIRED, "the sent task", DEADLINE
        )
    text = celery.log.read_text()
    assert "fleet.expire_tokens" in text
    assert "succeeded" in text

"""End to end: the app served by Django's live server on PostgreSQL, a real Celery worker
and beat on Redis, and ten agents run by the reference agent's own code over HTTP."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agentina import cli
from agentina.client import Client
from agentina.simulate import Fleet
from fleet.choices import AnomalyKind, JobStatus
from fleet.models import Agent, Anomaly, Job, Release, Rollout
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from fleet.services.rollouts import rollout_start
from fleet.services.sweeps import STALE_SWEEP
from tests import factories
from tests.runtime import celery_worker_and_beat, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def test_a_fleet_works_goes_offline_and_upgrades_until_a_smoke_check_fails(
    live_server, customer, settings, tmp_path, capsys
):
    settings.AGENT_HEARTBEAT_SECONDS = 1
    settings.AGENT_ONLINE_WINDOW = timedelta(seconds=6)
    factories.license(customer, max_agents=20, max_concurrent_tasks_per_agent=2)
    factories.release("1.9.3")
    target = factories.release("1.10.0")
    factories.sweep_state(STALE_SWEEP, last_run_at=timezone.now())
    _, key = api_key_mint(customer=customer, name="e2e", actor=SYSTEM)
    fleet = Fleet(
        server=live_server.url,
        api_key=key,
        state_root=tmp_path / "agents",
        failure_rate=0,
        smoke_failures={3},
        log=lambda m: None,
    )
    schedule = {
        "STALE_SWEEP_SECONDS": "2",
        "SNAPSHOT_SECONDS": "3",
        "ROLLOUT_ADVANCE_SECONDS": "2",
        "AGENT_ONLINE_WINDOW_SECONDS": "6",
    }
    with celery_worker_and_beat(tmp_path, **schedule) as log:
        agents = fleet.enroll(10)
        assert Agent.objects.filter(customer=customer, status="online").count() == 10
        fleet.start()
        try:
            # Jobs submitted through the customer API are claimed and completed.
            ids = fleet.submit(12)
            assert wait_for(
                lambda: Job.objects.filter(pk__in=ids, status=JobStatus.SUCCEEDED).count() == 12,
                timeout=60,
            ), list(Job.objects.values("status", "role"))

            # One agent stops: within the (shortened) window it is offline in the numbers.
            stopped = agents[9]
            stopped.halt()
            assert wait_for(
                lambda: Agent.objects.get(pk=stopped.state.agent_id).status == "offline", timeout=30
            ), log.read_text()[-2000:]
            metrics = Client(live_server.url, key).call("GET", "/fleet/metrics")
            assert (metrics["agents_online"], metrics["agents_active"]) == (9, 10)

            # A wave to 1.10.0: agent 3 fails its smoke check and the wave pauses.
            rollout = rollout_start(
                customer=customer,
                release=target,
                reason="e2e",
                canary=Agent.objects.get(pk=agents[0].state.agent_id),
                canary_soak=timedelta(0),
                batch_watch=timedelta(0),
                throughput_drop_tolerance=Decimal("0.99"),
                online_ratio_floor=Decimal("0.5"),
                actor=SYSTEM,
            )
            assert wait_for(
                lambda: Rollout.objects.get(pk=rollout.pk).state == "paused", timeout=90
            ), log.read_text()[-3000:]
            rollout.refresh_from_db()
            assert "smoke_check_failed" in rollout.paused_reason
            assert Anomaly.objects.filter(kind=AnomalyKind.ROLLOUT_GATE).exists()
            assert Agent.objects.get(pk=agents[3].state.agent_id).version == "1.9.3"
            assert Agent.objects.get(pk=agents[0].state.agent_id).version == "1.10.0"
            assert Agent.objects.get(pk=stopped.state.agent_id).version == "1.9.3"  # excluded
        finally:
            fleet.halt()

    # `agentina status` says what the server says.
    args = cli.parser().parse_args(["status", "--state-dir", str(tmp_path / "agents" / "agent-0")])
    assert cli.cmd_status(args) == 0
    out = capsys.readouterr().out
    assert "10 of 20 agents, 2 concurrent tasks per agent" in out
    assert "version      1.10.0" in out
    assert "latest       1.10.0 — up to date" in out
    assert Release.objects.count() == 2

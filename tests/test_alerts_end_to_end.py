"""Alerts through the real processes: a Celery worker and beat on PostgreSQL and Redis send
a signed webhook when an agent falls silent, and another when its heartbeat returns."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.models import Agent, SweepState
from fleet.services.agents import agent_record_heartbeat
from fleet.services.alerts import alert_channel_create, events
from fleet.services.audit import SYSTEM
from fleet.services.sweeps import STALE_SWEEP
from fleet.versions import SemVer
from tests import factories
from tests.runtime import celery_processes

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def test_a_silent_agent_is_one_offline_webhook_and_its_return_another(
    customer, httpserver, tmp_path, monkeypatch, settings
):
    # This process only writes; the worker sends (beat's sweep picks what is scheduled).
    monkeypatch.setattr(events, "alert_deliveries_send_soon", lambda ids: None)
    received: list[tuple[float, dict]] = []

    def hook(request):
        from werkzeug import Response

        received.append((time.time(), json.loads(request.get_data())))
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(hook)
    alert_channel_create(
        customer=customer, kind="webhook", url=httpserver.url_for("/hook"), actor=SYSTEM
    )
    factories.sweep_state(STALE_SWEEP, last_run_at=timezone.now())
    agent = factories.agent(customer, last_heartbeat_at=timezone.now() + timedelta(hours=1))
    factories.agent(customer, last_heartbeat_at=timezone.now() + timedelta(hours=1))  # stays
    window, sweep = 3, 1
    schedule = {
        "AGENT_ONLINE_WINDOW_SECONDS": str(window),
        "STALE_SWEEP_SECONDS": str(sweep),
        "ALERT_DELIVERY_SWEEP_SECONDS": str(sweep),
        "SNAPSHOT_SECONDS": "3600",
        "ROLLOUT_ADVANCE_SECONDS": "3600",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/11",  # this test's own queue
    }
    with celery_processes(tmp_path, **schedule) as celery:
        # The clock starts once beat and the worker sweep (their start-up is no latency
        # of the product's): the agent's last heartbeat is then.
        started = timezone.now()
        celery.wait_for(
            lambda: SweepState.objects.get(name=STALE_SWEEP).last_run_at > started,
            "a first sweep",
            timeout=60,
        )
        Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=timezone.now())
        celery.wait_for(
            lambda: any(b["type"] == "agents.offline" for _, b in received),
            "an agents.offline webhook",
            timeout=60,
        )
        arrived, offline = next((t, b) for t, b in received if b["type"] == "agents.offline")
        agent.refresh_from_db()
        assert agent.status == "offline"
        assert offline["data"]["count"] == 1 and offline["data"]["agents"] == [agent.name]
        # Marked one sweep after the window, and sent within a sweep of that; the slack
        # is for beat's and the worker's own latency on a loaded 2-core CI machine.
        slack = 3
        assert (agent.offline_since - agent.last_heartbeat_at).total_seconds() < (
            window + sweep + slack
        )
        assert arrived - agent.offline_since.timestamp() < sweep + slack

        agent_record_heartbeat(agent=agent, version=SemVer("1.0.0"), running_job_ids=[])
        celery.wait_for(
            lambda: any(b["type"] == "agents.back_online" for _, b in received),
            "an agents.back_online webhook",
            timeout=30,
        )
        time.sleep(2 * sweep)  # more sweeps: nothing is sent twice
    types = [b["type"] for _, b in received]
    assert types == ["agents.offline", "agents.back_online"], types
    assert received[1][1]["data"]["still_offline"] == 0
    assert Agent.objects.get(pk=agent.pk).status == "online"

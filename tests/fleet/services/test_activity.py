"""Provider incidents fold many agents' reports into one finding that resolves itself;
minute snapshots count online agents by role and activity."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import AgentActivity, AlertEventType, AnomalyKind
from fleet.models import AlertEvent, Anomaly, Job
from fleet.services.activity import provider_incidents_sweep
from fleet.services.snapshots import fleet_snapshots_take
from tests import factories

pytestmark = pytest.mark.django_db


def trouble(customer, activity=AgentActivity.RATE_LIMITED, provider="anthropic", **kwargs):
    return factories.agent(
        customer,
        activity=activity,
        activity_provider=provider,
        activity_since=timezone.now(),
        **kwargs,
    )


def test_many_agents_blaming_one_provider_are_one_finding_that_resolves_itself(
    customer, other_customer
):
    start = timezone.now().replace(second=0, microsecond=0)
    with time_machine.travel(start, tick=False):
        agents = [trouble(customer) for _ in range(2)]
        trouble(customer, provider="openai")  # another provider: its own count
        trouble(other_customer)  # another customer: its own count
        assert provider_incidents_sweep() == {"open": 0, "resolved": 0}  # 2 < 3
        agents.append(trouble(customer, AgentActivity.PROVIDER_ERROR))
        provider_incidents_sweep()
    [incident] = Anomaly.objects.filter(kind=AnomalyKind.PROVIDER_INCIDENT)
    assert incident.customer_id == customer.pk
    assert incident.message.startswith(
        f"Anthropic rate-limits 2 and fails for 1 agents since {start:%H:%M} UTC"
    )
    with time_machine.travel(start + timedelta(minutes=1), tick=False):
        agents += [trouble(customer) for _ in range(11)]
        provider_incidents_sweep()  # joined: the same finding, new words
    incident.refresh_from_db()
    assert Anomaly.objects.filter(kind=AnomalyKind.PROVIDER_INCIDENT).count() == 1
    assert "rate-limits 13 and fails for 1 agents" in incident.message
    assert AlertEvent.objects.filter(type=AlertEventType.ANOMALY_OPENED).count() <= 1
    for agent in agents:
        agent.activity = AgentActivity.WORKING
        agent.save(update_fields=["activity"])
    agents[0].activity = AgentActivity.RATE_LIMITED  # one left: not cleared yet
    agents[0].save(update_fields=["activity"])
    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        assert provider_incidents_sweep()["resolved"] == 0
        agents[0].activity = AgentActivity.IDLE
        agents[0].save(update_fields=["activity"])
        assert provider_incidents_sweep()["resolved"] == 1
    incident.refresh_from_db()
    assert incident.resolved_at is not None


def test_silent_agents_do_not_make_an_incident(customer):
    for _ in range(3):
        trouble(customer, last_heartbeat_at=timezone.now() - timedelta(hours=1))
    assert provider_incidents_sweep()["open"] == 0


def test_the_sweep_costs_the_same_statements_for_5_or_50_agents(customer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def statements() -> int:
        with CaptureQueriesContext(connection) as ctx:
            provider_incidents_sweep()
        return len(ctx.captured_queries)

    for _ in range(5):
        trouble(customer)
    provider_incidents_sweep()  # opens it
    few = statements()
    for n in range(45):
        trouble(customer, provider="anthropic" if n % 2 else "openai")
    provider_incidents_sweep()  # opens openai's
    assert statements() == few


def test_snapshots_count_online_agents_by_role_and_activity(customer):
    trouble(customer)
    factories.agent(customer, activity=AgentActivity.WAITING_FOR_INPUT)
    factories.agent(customer, role="reviewer", activity=AgentActivity.IDLE)
    factories.agent(customer, activity=AgentActivity.IDLE, last_heartbeat_at=None)  # offline
    factories.agent(customer)  # never said
    [snapshot] = [s for s in fleet_snapshots_take() if s.customer_id == customer.pk]
    assert snapshot.agents_by_activity == {
        "coder": {"rate_limited": 1, "waiting_for_input": 1},
        "reviewer": {"idle": 1},
    }
    assert Job.objects.count() == 0

"""Pause, drain and resume: a held agent heartbeats and finishes what it runs, claims
nothing, and claims again once resumed — by hand or when its timeout passes."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import AgentStatus, AuditAction, JobStatus
from fleet.errors import AgentStateConflict
from fleet.models import Agent, AuditEvent, Job
from fleet.services.agent_controls import agent_pause, agent_resume, agents_drained
from fleet.services.agents import agent_record_heartbeat
from fleet.services.audit import SYSTEM
from fleet.services.jobs import job_claim_next, job_complete
from fleet.services.sweeps import agents_mark_stale
from fleet.versions import SemVer
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(customer):
    factories.license(customer, max_agents=10, max_concurrent_tasks_per_agent=2)
    return factories.agent(customer, last_heartbeat_at=timezone.now())


def claim(agent):
    return job_claim_next(agent=Agent.objects.get(pk=agent.pk), max_concurrent=2)


def test_a_paused_agent_claims_nothing_and_claims_again_once_resumed(customer, agent):
    factories.job(customer, role=agent.role)
    assert agent_pause(agent=agent, reason="host maintenance", actor=SYSTEM) == "paused"
    assert claim(agent) is None
    assert Job.objects.get().status == JobStatus.QUEUED
    assert agent_resume(agent=agent, actor=SYSTEM)
    assert claim(agent) is not None
    agent.refresh_from_db()
    assert (agent.status, agent.paused_reason, agent.paused_until) == ("online", "", None)
    actions = list(
        AuditEvent.objects.filter(target_id=str(agent.pk), target_type="fleet.agent")
        .order_by("at", "pk")
        .values_list("action", "changes")
    )
    assert actions[0][0] == AuditAction.AGENT_PAUSE
    assert actions[0][1]["reason"] == [None, "host maintenance"]
    assert actions[1][0] == AuditAction.AGENT_RESUME


def test_a_paused_agent_keeps_its_running_jobs_and_may_finish_them(customer, agent):
    factories.job(customer, role=agent.role)
    job = claim(agent)
    agent_pause(agent=agent, reason="quiet please", actor=SYSTEM)
    held = Agent.objects.get(pk=agent.pk)
    job_complete(agent=held, job_id=job.pk, lease_id=job.lease_id, result={"ok": 1})
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PAUSED


def test_drain_is_a_pause_once_the_running_jobs_finish(customer, agent):
    for _ in range(3):
        factories.job(customer, role=agent.role)
    first, second = claim(agent), claim(agent)
    assert agent_pause(agent=agent, reason="scale down", drain=True, actor=SYSTEM) == "draining"
    assert claim(agent) is None  # draining claims nothing either
    held = Agent.objects.get(pk=agent.pk)
    job_complete(agent=held, job_id=first.pk, lease_id=first.lease_id, result=None)
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.DRAINING
    job_complete(agent=held, job_id=second.pk, lease_id=second.lease_id, result=None)
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PAUSED
    assert AuditEvent.objects.filter(action=AuditAction.AGENT_DRAINED).count() == 1


def test_drain_of_an_idle_agent_pauses_it_at_once(agent):
    assert agent_pause(agent=agent, reason="scale down", drain=True, actor=SYSTEM) == "paused"


def test_the_sweep_ends_a_drain_whose_last_job_went_back_to_the_queue(customer, agent):
    factories.job(customer, role=agent.role)
    job = claim(agent)
    agent_pause(agent=agent, reason="r", drain=True, actor=SYSTEM)
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    agents_mark_stale()
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PAUSED
    assert agents_drained() == 0  # called twice: nothing more


def test_a_pause_with_a_timeout_is_resumed_by_beat(customer, agent):
    agent_pause(agent=agent, reason="r", timeout=timedelta(minutes=30), actor=SYSTEM)
    with time_machine.travel(timezone.now() + timedelta(minutes=29), tick=False):
        Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=timezone.now())
        agents_mark_stale()
        assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PAUSED
    with time_machine.travel(timezone.now() + timedelta(minutes=31), tick=False):
        Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=timezone.now())
        agents_mark_stale()
    agent.refresh_from_db()
    assert (agent.status, agent.paused_until) == ("online", None)
    assert AuditEvent.objects.filter(action=AuditAction.AGENT_RESUME, actor_label="system").exists()


def test_a_silent_paused_agent_stays_paused_and_its_heartbeat_keeps_it_so(agent):
    agent_pause(agent=agent, reason="r", actor=SYSTEM)
    Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    agents_mark_stale(now=timezone.now())
    held = Agent.objects.get(pk=agent.pk)
    assert held.status == AgentStatus.PAUSED
    assert held.presence == AgentStatus.OFFLINE  # what every page shows: not heard from
    agent_record_heartbeat(agent=held, version=SemVer(str(held.version)), running_job_ids=[])
    held.refresh_from_db()
    assert held.status == AgentStatus.PAUSED and held.presence == AgentStatus.PAUSED


def test_pausing_twice_changes_the_reason_not_the_status(agent):
    agent_pause(agent=agent, reason="first", actor=SYSTEM)
    assert agent_pause(agent=agent, reason="second", actor=SYSTEM) == "paused"
    agent.refresh_from_db()
    assert agent.paused_reason == "second"
    assert agent_resume(agent=agent, actor=SYSTEM) is True  # resumes once...
    assert agent_resume(agent=agent, actor=SYSTEM) is False  # ...and a repeat does nothing


@pytest.mark.parametrize("status", ["upgrading", "decommissioned"])
def test_an_upgrading_or_retired_agent_cannot_be_paused(customer, status):
    extra = {"decommissioned_at": timezone.now()} if status == "decommissioned" else {}
    agent = factories.agent(customer, status=status, **extra)
    with pytest.raises(AgentStateConflict):
        agent_pause(agent=agent, reason="r", actor=SYSTEM)
    assert Agent.objects.get(pk=agent.pk).status == status


def test_a_pause_needs_a_reason(agent):
    with pytest.raises(AgentStateConflict):
        agent_pause(agent=agent, reason=" \x00 ", actor=SYSTEM)
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ONLINE

"""A running job cancelled by an operator, or past its max runtime, stops on the reference
agent: the heartbeat names it in `cancel`, the runner drops it and reports it stopped, and
the job is cancelled (timed out when that was the reason)."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from agentina.client import Client
from agentina.outbox import Outbox
from agentina.runner import Runner
from agentina.state import AgentState
from fleet.choices import AuditAction, JobCancelReason, JobStatus
from fleet.models import AuditEvent, Job
from fleet.services.audit import SYSTEM
from fleet.services.jobs import job_cancel
from fleet.services.sweeps import agents_mark_stale
from fleet.services.tokens import token_mint
from tests import factories
from tests.agentina.test_activation_recovery import activate
from tests.agentina.test_outbox import Clock, FaultyServer, outbox_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(customer) -> str:
    factories.license(customer, max_agents=5)
    return token_mint(customer=customer, actor=SYSTEM)[1]


@pytest.fixture
def server(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0  # heartbeats see the queued job at once
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)
    return FaultyServer()


def blocking_runner(tmp_path, server, release: threading.Event, logs: list[str]) -> Runner:
    """The reference agent whose jobs run until `release` is set (or forever)."""
    agent = AgentState.load(tmp_path / "state")

    def execute(payload):
        release.wait(timeout=30)
        return True, {"late": "result"}

    return Runner(
        Client("http://cp.test", agent.secret, server, retries=0, sleep=lambda s: None),
        agent,
        execute,
        log=logs.append,
        outbox=Outbox.in_state_dir(tmp_path / "state"),
        clock=Clock(),
    )


def started(tmp_path, customer, token, server, release, logs, **job):
    assert activate(tmp_path, token, server) == 0
    job = factories.job(customer, **job)
    runner = blocking_runner(tmp_path, server, release, logs)
    runner.start()
    runner.step()  # heartbeat, claim: the job runs
    assert list(runner.running) == [job.pk]
    return runner, job


def test_a_cancelled_running_job_stops_on_the_agent_and_is_reported(
    tmp_path,
    customer,
    token,
    server,
):
    release, logs = threading.Event(), []
    runner, job = started(tmp_path, customer, token, server, release, logs)
    try:
        job_cancel(customer=customer, job_id=job.pk, actor=SYSTEM)
        assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING  # its agent's to stop
        runner.step()  # the heartbeat says cancel: dropped, reported, acknowledged
        assert runner.running == {}
        assert outbox_files(tmp_path) == []
        assert (f"/jobs/{job.pk}/stopped", 200) in server.answered
        done = Job.objects.get(pk=job.pk)
        assert (done.status, done.stop_reason) == (JobStatus.CANCELLED, JobCancelReason.OPERATOR)
        assert done.result is None and "Cancelled while it ran" in done.error
        assert any(f"job {job.pk}: stopped" in line for line in logs)
        assert AuditEvent.objects.filter(action=AuditAction.JOB_STOPPED).count() == 1
        runner.step()  # the next beat names it no more, and asks nothing
        assert server.beats()[-1] == []
    finally:
        release.set()


def test_a_job_past_its_max_runtime_is_stopped_the_same_way_and_counted_timed_out(
    tmp_path,
    customer,
    token,
    server,
    settings,
):
    settings.JOB_LEASE = timedelta(hours=1)  # the lease holds: only the runtime runs out
    release, logs = threading.Event(), []
    runner, job = started(tmp_path, customer, token, server, release, logs, max_runtime_seconds=600)
    try:
        with time_machine.travel(timezone.now() + timedelta(seconds=599), tick=False):
            agents_mark_stale()
        assert Job.objects.get(pk=job.pk).stop_requested_at is None
        with time_machine.travel(timezone.now() + timedelta(seconds=601), tick=False):
            agents_mark_stale()
        assert Job.objects.get(pk=job.pk).stop_reason == JobCancelReason.TIMED_OUT
        runner.step()
        done = Job.objects.get(pk=job.pk)
        assert done.status == JobStatus.CANCELLED
        assert done.error.startswith("Timed out")
        assert AuditEvent.objects.filter(action=AuditAction.JOB_TIMED_OUT).count() == 1
    finally:
        release.set()

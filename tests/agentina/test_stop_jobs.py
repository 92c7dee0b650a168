"""A running job cancelled by an operator, or past its max runtime, stops on the reference
agent: the heartbeat names it in `cancel`, the runner drops it and reports it stopped, and
the job is cancelled (timed out when that was the reason)."""

import contextlib
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from agentina.client import Client
from agentina.outbox import Outbox
from agentina.runner import STOPPED, Runner, command_executor, simulated_executor
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


def blocking_runner(
    tmp_path, server, release: threading.Event, logs: list[str], executor=None
) -> Runner:
    """The reference agent whose jobs run until `release` is set (or forever), or with
    the executor given."""
    agent = AgentState.load(tmp_path / "state")

    def execute(payload):
        release.wait(timeout=30)
        return True, {"late": "result"}

    return Runner(
        Client("http://cp.test", agent.secret, server, retries=0, sleep=lambda s: None),
        agent,
        executor or execute,
        log=logs.append,
        outbox=Outbox.in_state_dir(tmp_path / "state"),
        clock=Clock(),
    )


def started(tmp_path, customer, token, server, release, logs, executor=None, **job):
    assert activate(tmp_path, token, server) == 0
    job = factories.job(customer, **job)
    runner = blocking_runner(tmp_path, server, release, logs, executor)
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


# --- a job's command is ended with everything it started ------------------------------------


def running_in_group(pgid: int) -> list[int]:
    """The live processes of process group `pgid`, its leader included even if it left the
    group. Zombies have ended: nobody may reap an orphan here (PID 1 may not be an init)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            pid = int(stat.parent.name)
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if state != "Z" and pgid in (pid, int(pgrp)):
                live.append(pid)
    return live


def until(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def command(tmp_path):
    """A job's command that says its shell's pid (its process group's, in its own session),
    sleeps in a child process, then writes a marker; the processes left at the end are
    killed, so a failing test leaves no sleeper behind."""
    files = {"pgid": tmp_path / "pgid", "marker": tmp_path / "marker"}
    line = f"echo $$ > {files['pgid']}; sleep 60; echo done > {files['marker']}"
    yield line, files
    if files["pgid"].exists():
        for pid in running_in_group(int(files["pgid"].read_text())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def group_of(files) -> int:
    assert until(lambda: files["pgid"].exists() and files["pgid"].read_text().strip())
    pgid = int(files["pgid"].read_text())
    assert until(lambda: len(running_in_group(pgid)) == 2)  # the shell and its sleep
    return pgid


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@needs_proc
def test_a_cancelled_exec_command_is_ended_with_its_children_and_reported_stopped(
    tmp_path, customer, token, server, command
):
    line, files = command
    release, logs = threading.Event(), []
    runner, job = started(
        tmp_path, customer, token, server, release, logs, command_executor(line, grace=1)
    )
    pgid = group_of(files)
    job_cancel(customer=customer, job_id=job.pk, actor=SYSTEM)
    runner.step()  # the heartbeat says cancel
    assert runner.running == {}
    assert (f"/jobs/{job.pk}/stopped", 200) in server.answered
    assert until(lambda: running_in_group(pgid) == [], seconds=5)
    assert not files["marker"].exists()
    done = Job.objects.get(pk=job.pk)
    assert (done.status, done.result) == (JobStatus.CANCELLED, None)
    runner.step()  # the stopped job's outcome is not reported a second time
    assert [path for path, _ in server.answered if path.startswith(f"/jobs/{job.pk}/")] == [
        f"/jobs/{job.pk}/stopped"
    ]


@needs_proc
def test_a_stopped_command_that_ignores_sigterm_is_killed_after_the_grace(command):
    line, files = command
    stop = threading.Event()
    execute = command_executor(f"trap '' TERM; {line}", grace=0.5)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(execute({}, stop)))
    thread.start()
    pgid = group_of(files)
    stop.set()
    stopped_at = time.monotonic()
    thread.join(5)
    assert time.monotonic() - stopped_at >= 0.5  # SIGTERM did nothing: SIGKILL did
    assert outcome == [(False, STOPPED)]
    assert until(lambda: running_in_group(pgid) == [], seconds=5)  # a killed one exits soon
    assert not files["marker"].exists()


@needs_proc
def test_a_command_past_its_timeout_is_ended_with_its_children(command):
    line, files = command
    started_at = time.monotonic()
    ok, error = command_executor(line, timeout=1, grace=1)({})
    assert time.monotonic() - started_at < 5
    assert not ok and "timeout" in error
    assert until(lambda: running_in_group(int(files["pgid"].read_text())) == [], seconds=5)
    assert not files["marker"].exists()


def test_a_command_gets_the_payload_on_stdin_and_its_stdout_is_the_result():
    assert command_executor("cat")({"task": "t"}) == (True, {"task": "t"})
    assert command_executor("echo broken >&2; exit 3")({}) == (False, "broken\n")


def test_a_simulated_job_told_to_stop_ends_at_once():
    stop = threading.Event()
    stop.set()
    started_at = time.monotonic()
    assert simulated_executor(seconds=(30, 30))({}, stop) == (False, STOPPED)
    assert time.monotonic() - started_at < 1

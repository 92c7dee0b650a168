"""A finished job's result is never lost: it waits in the agent's outbox (on disk) until
the server acknowledged it, through faults and restarts, and the heartbeats keep naming
the job so its lease holds meanwhile."""

import json as jsonlib
import os
import stat
import threading
import time
from collections import deque
from datetime import timedelta

import pytest
import time_machine
from django.test import Client as DjangoClient
from django.utils import timezone

from agentina.client import ApiError, Client
from agentina.outbox import OUTBOX_DIR, Finished, Outbox
from agentina.runner import Runner
from agentina.state import AgentState
from fleet.choices import AuditAction, JobStatus
from fleet.models import AuditEvent, Job
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.agentina.test_activation_recovery import activate
from tests.agentina.test_cli import FakeTransport, state

LOST = "lost"  # the server acts, the answer is lost on the way back
REFUSED = "refused"  # the connection fails before the request reaches the server


class FaultyServer:
    """The Control Plane in this process, headers included, with faults queued per path
    ending: LOST, REFUSED, or a (status, body, headers) answer given instead of the server."""

    def __init__(self) -> None:
        self.faults: dict[str, deque] = {}
        self.sent: list[tuple[str, object]] = []
        self.answered: list[tuple[str, int]] = []  # what the server itself answered

    def fault(self, ending: str, *faults) -> None:
        self.faults.setdefault(ending, deque()).extend(faults)

    def request(self, method, url, *, json=None, headers):
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        self.sent.append((path.removeprefix("/api/v1"), json))
        queued = next((q for end, q in self.faults.items() if path.endswith(end) and q), None)
        fault = queued.popleft() if queued else None
        if fault == REFUSED:
            raise ConnectionError("connection refused")
        if isinstance(fault, tuple):
            return fault
        response = DjangoClient().generic(
            method,
            path,
            data=jsonlib.dumps(json),
            content_type="application/json",
            **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
        )
        self.answered.append((path.removeprefix("/api/v1"), response.status_code))
        if fault == LOST:
            raise ConnectionError("connection reset by peer (the answer was lost)")
        body = response.json() if response.content else None
        return response.status_code, body, dict(response.headers)

    def beats(self) -> list[list[int]]:
        return [body["running_job_ids"] for path, body in self.sent if path == "/agents/heartbeat"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


UNAVAILABLE = (
    503,
    {"code": "service_unavailable", "detail": "The Control Plane is briefly unavailable."},
    {"Retry-After": "1"},
)


@pytest.fixture
def token(customer) -> str:
    factories.license(customer, max_agents=5)
    return token_mint(customer=customer, actor=SYSTEM)[1]


@pytest.fixture
def server(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0  # heartbeats see the queued job at once
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)
    return FaultyServer()


def runner_for(tmp_path, server, clock=None, logs=None, runs=None) -> Runner:
    """The reference agent as `agentina run` makes it, on the in-process server; its
    client gives up at the first fault, so the outbox alone must carry the result. Each
    run of a job appends its payload to `runs`."""
    agent = AgentState.load(tmp_path / "state")

    def execute(payload):
        if runs is not None:
            runs.append(payload)
        return True, {"pr": 7}

    return Runner(
        Client("http://cp.test", agent.secret, server, retries=0, sleep=lambda s: None),
        agent,
        execute,
        log=(logs if logs is not None else []).append,
        outbox=Outbox.in_state_dir(tmp_path / "state"),
        clock=clock or Clock(),
    )


def claim_and_finish(runner: Runner) -> int:
    runner.start()
    runner.step()  # heartbeat (one job waits), claim
    [(job_id, held)] = runner.running.items()
    held.future.result(timeout=5)
    return job_id


def succeeded_audits(job_id: int) -> int:
    return AuditEvent.objects.filter(
        action=AuditAction.JOB_SUCCEEDED, target_id=str(job_id)
    ).count()


def outbox_files(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "state" / OUTBOX_DIR).iterdir())


@pytest.mark.django_db
def test_a_complete_that_meets_faults_is_retried_and_the_job_completes_once(
    tmp_path, customer, token, server
):
    assert activate(tmp_path, token, server) == 0
    agent_id = AgentState.load(tmp_path / "state").agent_id
    job = factories.job(customer)
    clock = Clock()
    runner = runner_for(tmp_path, server, clock)
    assert claim_and_finish(runner) == job.pk
    claimed = Job.objects.get(pk=job.pk)
    server.fault("/complete", REFUSED, UNAVAILABLE, LOST)

    runner.step()  # refused: the result waits on disk, and the heartbeat names the job
    assert outbox_files(tmp_path) == [f"{job.pk}.json"]
    path = tmp_path / "state" / OUTBOX_DIR / f"{job.pk}.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert jsonlib.loads(path.read_text())["lease_id"] == str(claimed.lease_id)
    assert server.beats()[-1] == [job.pk]
    assert claimed.agent_id == agent_id

    # 200 s later (past half a lease), a 503: still waiting, and the lease was extended,
    # so it never lapses while the result waits.
    with time_machine.travel(timezone.now() + timedelta(seconds=200)):
        clock.now += 1
        runner.step()
    assert server.beats()[-1] == [job.pk]
    assert Job.objects.get(pk=job.pk).lease_expires_at > claimed.lease_expires_at
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING

    clock.now += 0.5  # within the backoff (2 s after a second fault): not sent
    sent = len(server.sent)
    runner.step()
    assert [p for p, _ in server.sent[sent:]] == ["/agents/heartbeat"]

    clock.now += 2  # the server acts but its answer is lost: kept
    runner.step()
    assert outbox_files(tmp_path) == [f"{job.pk}.json"]

    clock.now += 4  # the repeat is answered with the job: acknowledged, removed
    runner.step()
    assert outbox_files(tmp_path) == []
    assert server.beats()[-1] == []
    done = Job.objects.get(pk=job.pk)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"pr": 7})
    assert succeeded_audits(job.pk) == 1
    completes = [p for p, _ in server.sent if p.endswith("/complete")]
    assert len(completes) == 4  # refused, 503, lost, acknowledged


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_during_a_real_database_cut_heartbeats_answer_and_the_result_waits_then_lands_once(
    tmp_path, customer, token, server, buffer, database_through_proxy
):
    """No simulated answers: the app's own connection to PostgreSQL is cut under it, with
    the production setup (steady heartbeats go to the presence buffer on Redis)."""
    assert activate(tmp_path, token, server) == 0
    job = factories.job(customer)
    clock, runs = Clock(), []
    runner = runner_for(tmp_path, server, clock, runs=runs)
    assert claim_and_finish(runner) == job.pk

    database_through_proxy.cut()
    answered = len(server.answered)
    for _turn in range(2):  # as run() does: a failed call is logged, the next turn retries
        with pytest.raises(ApiError):
            runner.step()  # the complete, a heartbeat naming the job, a claim (the queue
        clock.now += 5  # count is from before the cut)
    complete, beat, claim = f"/jobs/{job.pk}/complete", "/agents/heartbeat", "/jobs/claim"
    assert server.answered[answered:] == [(complete, 503), (beat, 200), (claim, 503)] * 2
    assert outbox_files(tmp_path) == [f"{job.pk}.json"]
    assert server.beats()[-1] == [job.pk]

    database_through_proxy.heal()
    answered = len(server.answered)
    runner.step()
    assert server.answered[answered:] == [(complete, 200), (beat, 200)]
    assert outbox_files(tmp_path) == []
    done = Job.objects.get(pk=job.pk)
    assert (done.status, done.result, done.attempts) == (JobStatus.SUCCEEDED, {"pr": 7}, 1)
    assert succeeded_audits(job.pk) == 1
    assert len(runs) == 1  # the job ran once


@pytest.mark.django_db
def test_a_restarted_runner_sends_the_results_in_its_outbox(tmp_path, customer, token, server):
    assert activate(tmp_path, token, server) == 0
    job = factories.job(customer)
    first = runner_for(tmp_path, server)
    assert claim_and_finish(first) == job.pk
    server.fault("/complete", REFUSED)
    first.step()
    assert outbox_files(tmp_path) == [f"{job.pk}.json"]
    del first  # the process dies (a deploy, a crash) with the result on disk

    logs: list[str] = []
    second = runner_for(tmp_path, server, logs=logs)
    assert second.held_job_ids() == [job.pk]  # named by its heartbeats until sent
    second.start()  # sends what waits before anything else
    assert outbox_files(tmp_path) == []
    done = Job.objects.get(pk=job.pk)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"pr": 7})
    assert succeeded_audits(job.pk) == 1
    second.step()
    assert server.beats()[-1] == []


def fake_runner(tmp_path, *answers, logs=None):
    fake = Client("http://cp.test", "s", FakeTransport(*answers), retries=0, sleep=lambda s: None)
    return Runner(
        fake,
        state(),
        lambda payload: (True, {"pr": 1}),
        log=(logs if logs is not None else []).append,
        outbox=Outbox.in_state_dir(tmp_path),
        clock=Clock(),
    )


BEAT = (200, {"next_heartbeat_seconds": 30, "jobs_pending": 1, "upgrade": None})
IDLE = (200, {"next_heartbeat_seconds": 30, "jobs_pending": 0, "upgrade": None})


def test_while_a_result_waits_the_heartbeat_names_its_job(tmp_path):
    runner = fake_runner(
        tmp_path,
        BEAT,
        (200, {"id": 4, "lease_id": "l4", "payload": {}}),
        ConnectionError("refused"),  # complete
        IDLE,
        (502, {}),  # complete, a backoff later
        IDLE,
        IDLE,  # (within the next backoff: not sent)
    )
    runner.step()
    runner.running[4].future.result(timeout=5)
    runner.step()
    runner.clock.now += 1  # type: ignore[attr-defined]
    runner.step()
    runner.step()
    calls = [(c[1].rsplit("/api/v1", 1)[1], c[2]) for c in runner.client.transport.calls]
    assert [path for path, _ in calls].count("/jobs/4/complete") == 2
    beats = [body["running_job_ids"] for path, body in calls if path == "/agents/heartbeat"]
    assert beats == [[], [4], [4], [4]]
    assert Outbox.in_state_dir(tmp_path).entries() == [Finished(4, "l4", True, {"pr": 1})]


@pytest.mark.parametrize(
    ("status", "code"),
    [(409, "stale_lease"), (409, "job_already_finished"), (404, "not_found")],
)
def test_a_final_refusal_drops_the_result(tmp_path, status, code):
    logs: list[str] = []
    runner = fake_runner(
        tmp_path,
        BEAT,
        (200, {"id": 4, "lease_id": "l4", "payload": {}}),
        (status, {"code": code, "detail": "Drop the result."}),
        IDLE,
        logs=logs,
    )
    runner.step()
    runner.running[4].future.result(timeout=5)
    runner.step()
    assert runner.held_job_ids() == []
    assert list(tmp_path.joinpath(OUTBOX_DIR).iterdir()) == []
    assert runner.client.transport.calls[-1][2]["running_job_ids"] == []
    assert any(code in line and "dropped" in line for line in logs), logs


def test_a_503_and_a_429_are_retried_after_their_retry_after_within_a_cap():
    waits: list[float] = []
    fake = Client(
        "http://cp.test",
        "s",
        FakeTransport(
            (503, {"code": "service_unavailable"}, {"Retry-After": "7"}),
            (429, {"code": "rate_limited"}, {"retry-after": "3600"}),
            (503, {"code": "service_unavailable"}, {}),
            (200, {"ok": True}),
        ),
        sleep=waits.append,
    )
    assert fake.call("GET", "/x") == {"ok": True}
    assert waits == [7, 60, 2.0]  # at least what was asked, at most a minute; else backoff


class FlakyServer:
    """Answers the run loop; `complete` fails `down` times before it is acknowledged."""

    def __init__(self, down: int) -> None:
        self.down, self.claimed, self.calls = down, False, []

    def request(self, method, url, *, json=None, headers):
        path = url.rsplit("/api/v1", 1)[1]
        self.calls.append((path, json))
        if path == "/agents/me":
            return 200, {"license": {"max_concurrent_tasks_per_agent": 1}}
        if path == "/agents/heartbeat":
            return 200, {"next_heartbeat_seconds": 0.2, "jobs_pending": int(not self.claimed)}
        if path == "/jobs/claim":
            self.claimed = True
            return 200, {"id": 9, "lease_id": "l9", "payload": {}}
        if self.down:
            self.down -= 1
            raise ConnectionError("connection refused")
        return 200, {"id": 9}


def last_beat(calls) -> list[int]:
    return [body for path, body in calls if path == "/agents/heartbeat"][-1]["running_job_ids"]


def run_for(runner: Runner, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(5)


def test_the_run_loop_retries_the_outbox_and_a_stopped_runner_keeps_it_on_disk(tmp_path):
    down = FlakyServer(down=1000)
    logs: list[str] = []
    runner = Runner(
        Client("http://cp.test", "s", down, retries=0, sleep=lambda s: None),
        state(),
        lambda payload: (True, {"pr": 9}),
        log=logs.append,
        outbox=Outbox.in_state_dir(tmp_path),
        retry_base=0.05,
    )
    run_for(runner, 1.0)
    completes = [p for p, _ in down.calls if p == "/jobs/9/complete"]
    assert len(completes) >= 3  # retried, with backoff, between heartbeats too
    assert last_beat(down.calls) == [9]
    assert "1 result(s) wait in the outbox; the next run sends them" in logs[-1]
    assert [p.name for p in (tmp_path / OUTBOX_DIR).iterdir()] == ["9.json"]

    up = FlakyServer(down=2)
    up.claimed = True
    restarted = Runner(
        Client("http://cp.test", "s", up, retries=0, sleep=lambda s: None),
        state(),
        lambda payload: (True, None),
        log=logs.append,
        outbox=Outbox.in_state_dir(tmp_path),
        retry_base=0.05,
    )
    run_for(restarted, 1.0)
    assert [p for p, _ in up.calls].count("/jobs/9/complete") == 3  # twice refused, then sent
    assert ("/jobs/9/complete", {"lease_id": "l9", "result": {"pr": 9}}) in up.calls
    assert list((tmp_path / OUTBOX_DIR).iterdir()) == []
    assert last_beat(up.calls) == []

"""The cached hot paths stay exact: what a web process keeps about an agent, and the
heartbeats it buffers in Redis, never hide a revocation, a silence or an outage."""

import time
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from fleet.api.agents import heartbeat_interval
from fleet.choices import AgentStatus, Channel
from fleet.models import Agent
from fleet.services.agents import agent_decommission
from fleet.services.audit import SYSTEM
from fleet.services.licenses import license_update
from fleet.services.presence import presence_flush, presence_send
from fleet.services.sweeps import STALE_SWEEP, agents_mark_stale
from tests import factories
from tests.beat import sweep_until
from tests.fleet.api.conftest import activate, beat
from tests.runtime import free_port, redis_server, wait_for, web_process

pytestmark = pytest.mark.django_db


def stored(agent) -> Agent:
    return Agent.objects.get(pk=agent.agent.pk)


@pytest.fixture
def polls_every_request(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)


def test_a_process_keeps_the_agent_and_learns_of_changes_from_the_poll(agent, settings):
    beat(agent)
    factories.job(agent.agent.customer, role="coder")
    # Another process retires the agent: the row and its change record, nothing here.
    Agent.objects.filter(pk=agent.agent.pk).update(
        status=AgentStatus.DECOMMISSIONED, decommissioned_at=timezone.now()
    )
    factories.agent_facts_change(changed_at=timezone.now(), agent_id=agent.agent.pk)
    # Still kept here (the poll has not run), yet nothing it asks for is granted: its
    # writes are conditional on a status that holds a seat, a claim on an online one.
    assert agent.api.post("/jobs/claim").status_code == 204
    refused = beat(agent, load=0.5)
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
    assert "decommissioned" in refused.json()["detail"]
    assert agent.api.get("/agents/me").status_code == 401
    assert stored(agent).status == AgentStatus.DECOMMISSIONED
    settings.AGENT_CACHE_POLL_SECONDS = 0
    assert agent.api.post("/jobs/claim").status_code == 401  # forgotten: refused at the door


def test_a_rotated_secret_stops_working_at_once_in_the_process_that_rotated_it(agent):
    beat(agent)
    old = agent.secret
    new = agent.api.post("/agents/rotate-secret").json()["agent_secret"]
    assert beat(agent).status_code == 401  # (the client still sends the old secret)
    assert agent.api.post("/agents/heartbeat", {"version": "1.9.3"}, secret=new).status_code == 200
    assert agent.api.post("/agents/heartbeat", {"version": "1.9.3"}, secret=old).status_code == 401


def test_a_license_change_reaches_the_kept_agent(agent):
    factories.release("2.0.0-beta.1", channel=Channel.BETA)
    assert beat(agent).json()["update_available"]["version"] == "1.10.0"
    license = agent.agent.customer.licenses.get(is_current=True)
    license.channel = Channel.BETA
    license_update(license=license, actor=SYSTEM)
    assert beat(agent).json()["update_available"] == {
        "version": "2.0.0-beta.1",
        "channel": "beta",
    }


def test_heartbeat_says_how_many_jobs_wait_for_the_agents_role(agent, polls_every_request):
    customer = agent.agent.customer
    for role in ["coder", "coder", "coder", "reviewer"]:
        factories.job(customer, role=role)
    factories.job(factories.customer(), role="coder")  # someone else's
    assert beat(agent).json()["jobs_pending"] == 3
    agent.api.post("/jobs/claim")
    assert beat(agent).json()["jobs_pending"] == 2


def test_the_heartbeat_interval_grows_with_the_fleet_within_30_to_60_seconds(settings):
    settings.AGENT_HEARTBEATS_PER_SECOND = 2000
    for fleet, low, high in [(10, 30, 36), (100_000, 40, 60), (1_000_000, 48, 60)]:
        seen = {heartbeat_interval(fleet) for _ in range(300)}
        assert low <= min(seen) and max(seen) <= high, (fleet, seen)
        assert len(seen) > 3  # jittered, so a restarted fleet does not beat in step
    # The whole fleet stays near the rate: 100,000 agents every ~50 s is ~2,000 a second.
    mean = sum(heartbeat_interval(100_000) for _ in range(2000)) / 2000
    assert 48 <= mean <= 52


@pytest.mark.redis
def test_a_steady_heartbeat_touches_no_database_and_the_flush_writes_it(
    agent, buffer, django_assert_num_queries
):
    beat(agent)  # the process loads the agent and polls
    written_before = stored(agent).last_heartbeat_at
    later = timezone.now() + timedelta(seconds=40)
    with time_machine.travel(later, tick=False), django_assert_num_queries(0):
        assert beat(agent, load=0.7).status_code == 200
    assert stored(agent).last_heartbeat_at == written_before  # coalesced
    presence_send()
    assert buffer.hlen("agentina:presence:pending") == 1
    flushed = presence_flush()
    assert (flushed.written, flushed.complete) == (1, True)
    row = stored(agent)
    assert (row.last_heartbeat_at, row.load) == (later, 0.7)
    assert presence_flush().written == 0  # flushed once: a second flush has nothing


@pytest.mark.redis
def test_a_decommissioned_agents_buffered_beats_leave_it_retired_and_refused(
    agent, buffer, settings
):
    """Steady heartbeats buffered (by this process, which still kept the agent) before
    and just after the decommission reach the database after it: they neither move its
    record nor let its secret back in."""
    beat(agent)
    later = timezone.now() + timedelta(seconds=40)
    with time_machine.travel(later, tick=False):
        assert beat(agent, load=0.7).status_code == 200  # buffered
        retired_at = stored(agent).last_heartbeat_at
        # Another process decommissions it (the row and its change record); this one
        # has not polled yet.
        Agent.objects.filter(pk=agent.agent.pk).update(
            status=AgentStatus.DECOMMISSIONED, decommissioned_at=later
        )
        factories.agent_facts_change(changed_at=later, agent_id=agent.agent.pk)
        assert beat(agent, load=0.9).status_code == 200  # kept: within the 2 s promise
    presence_send()
    assert presence_flush().written == 0
    retired = stored(agent)
    assert (retired.status, retired.last_heartbeat_at, retired.load) == (
        AgentStatus.DECOMMISSIONED,
        retired_at,
        None,
    )
    settings.AGENT_CACHE_POLL_SECONDS = 0
    assert beat(agent).status_code == 401


@pytest.mark.redis
def test_a_silent_agent_is_offline_within_the_window_though_its_beats_were_buffered(agent, buffer):
    t0 = timezone.now()
    factories.sweep_state(STALE_SWEEP, last_run_at=t0, grace_until=None)
    beat(agent)
    with time_machine.travel(t0 + timedelta(seconds=100), tick=False):
        beat(agent)  # its last heartbeat: buffered, not written
    assert stored(agent).last_heartbeat_at < t0 + timedelta(seconds=5)
    # The database alone would say "silent since t0" from t0 + 180 s; the sweep flushes
    # first, so the agent stays online until 180 s after the beat it really sent last.
    sweep_until(t0 + timedelta(seconds=270), start=t0 + timedelta(seconds=30))
    assert stored(agent).status == AgentStatus.ONLINE
    assert stored(agent).last_heartbeat_at == t0 + timedelta(seconds=100)
    sweep_until(t0 + timedelta(seconds=300), start=t0 + timedelta(seconds=300))
    assert stored(agent).status == AgentStatus.OFFLINE


@pytest.mark.redis
def test_a_redis_outage_during_heartbeats_loses_no_agents_presence(licensed, settings):
    port = free_port()
    fleet = [activate(licensed) for _ in range(3)]
    settings.PRESENCE_BATCH_SECONDS = 3600
    t0 = timezone.now()
    factories.sweep_state(STALE_SWEEP, last_run_at=t0, grace_until=None)
    with redis_server(port) as server:
        settings.PRESENCE_BUFFER_URL = f"redis://127.0.0.1:{port}/0"
        assert not presence_flush().complete  # a new Redis: nothing says no beat was lost
        assert not presence_flush(for_sweep=True).complete  # the sweep's: it knows now
        assert presence_flush().complete
        for agent in fleet:
            beat(agent)
        with time_machine.travel(t0 + timedelta(seconds=30), tick=False):
            for agent in fleet:
                beat(agent)
            presence_send()  # in Redis now, and about to be lost with it
        server.kill()
        server.wait()
        with time_machine.travel(t0 + timedelta(seconds=60), tick=False):
            for agent in fleet[:2]:
                assert beat(agent).status_code == 200  # taken into the batch
            presence_send()  # Redis refuses it: the batch goes to the database
            assert beat(fleet[2]).status_code == 200  # Redis known down: written at once
        for agent in fleet:
            assert stored(agent).last_heartbeat_at == t0 + timedelta(seconds=60)
        # The beats at t0 + 30 s were lost with Redis; the sweep cannot know whom they
        # covered, so it waits a window instead of marking anyone offline.
        with time_machine.travel(t0 + timedelta(seconds=90), tick=False):
            assert agents_mark_stale().in_grace
        # Once: while Redis stays away, heartbeats reach the database and marking resumes.
        sweeps = sweep_until(t0 + timedelta(seconds=240), start=t0 + timedelta(seconds=120))
        assert all(sweep.in_grace for sweep in sweeps)
        with time_machine.travel(t0 + timedelta(seconds=250), tick=False):
            for agent in fleet[:2]:
                assert beat(agent).status_code == 200
        sweeps = sweep_until(t0 + timedelta(seconds=300), start=t0 + timedelta(seconds=270))
        assert not any(sweep.in_grace for sweep in sweeps)
        assert sum(sweep.marked_offline for sweep in sweeps) == 1
        assert [stored(a).status for a in fleet] == ["online", "online", "offline"]
    with redis_server(port):  # back, and empty: a loss, until the sweep has seen it
        assert not presence_flush().complete
        assert not presence_flush(for_sweep=True).complete
        assert presence_flush().complete


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_revoked_agent_is_refused_by_every_web_process_within_5_seconds(licensed, tmp_path):
    agent = activate(licensed)
    headers = {"Authorization": f"Bearer {agent.secret}"}
    body = {"version": "1.9.3"}
    with web_process(tmp_path) as first, web_process(tmp_path) as second:
        for base in (first, second):  # each process now keeps the agent
            response = httpx.post(f"{base}/api/v1/agents/heartbeat", json=body, headers=headers)
            assert response.status_code == 200, response.text
        agent_decommission(agent=agent.agent, actor=SYSTEM)
        revoked_at = time.monotonic()
        refused_after = {}
        for base in (first, second):
            assert wait_for(
                lambda base=base: (
                    httpx.post(
                        f"{base}/api/v1/agents/heartbeat", json=body, headers=headers
                    ).status_code
                    == 401
                ),
                timeout=10,
            )
            refused_after[base] = time.monotonic() - revoked_at
    assert max(refused_after.values()) < 5, refused_after
    assert settings.AGENT_CACHE_POLL_SECONDS <= 2

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import AgentStatus, AnomalyKind, JobStatus
from fleet.models import Anomaly, AuditEvent, Job, Release
from fleet.services.agents import agent_decommission
from fleet.services.audit import SYSTEM
from fleet.services.releases import release_yank
from tests import factories
from tests.beat import sweep_until
from tests.fleet.api.conftest import beat

pytestmark = pytest.mark.django_db


def test_steady_heartbeat_reads_nothing_and_writes_one_row(agent, django_assert_num_queries):
    """Without a presence buffer: the agent is known to this process after its first
    heartbeat, so the next one is its UPDATE alone."""
    beat(agent)
    with django_assert_num_queries(1):
        response = beat(agent, load=0.4)
    assert response.status_code == 200
    body = response.json()
    assert 30 <= body["next_heartbeat_seconds"] <= 36
    assert body["upgrade"] is None
    assert agent.refresh().load == 0.4


def test_heartbeat_records_server_time_not_the_agents_clock(agent):
    sent_at = timezone.now() - timedelta(hours=3)
    before = timezone.now()
    body = beat(agent, sent_at=sent_at.isoformat()).json()
    agent.refresh()
    assert agent.agent.last_heartbeat_at >= before
    assert abs(agent.agent.clock_offset_seconds + 3 * 3600) < 5
    assert body["server_time"]
    skew = Anomaly.objects.get(kind=AnomalyKind.CLOCK_SKEW)
    beat(agent, sent_at=(timezone.now() - timedelta(hours=3)).isoformat())
    skew.refresh_from_db()
    assert skew.occurrences == 1  # flagged when it appears, not on every beat


def test_update_available_is_a_hint_for_agents_behind_latest(agent):
    assert beat(agent).json()["update_available"] == {"version": "1.10.0", "channel": "stable"}
    assert beat(agent, version="1.10.0").json()["update_available"] is None
    agent.refresh()
    assert agent.agent.version == "1.10.0"
    assert AuditEvent.objects.filter(action="agent.heartbeat_state").count() == 1
    release_yank(release=Release.objects.get(version="1.10.0"), reason="bad", actor=SYSTEM)
    assert beat(agent, version="1.9.3").json()["update_available"] is None


def test_an_agent_on_a_yanked_newer_release_is_told_to_move_and_counted(agent, licensed, key_api):
    newer = factories.release("1.11.0")
    agent.api.post("/agents/heartbeat", {"version": "1.11.0"})
    release_yank(release=newer, reason="crashes", actor=SYSTEM)
    hint = agent.api.post("/agents/heartbeat", {"version": "1.11.0"}).json()["update_available"]
    assert hint == {"version": "1.10.0", "channel": "stable"}
    assert key_api.get("/fleet/metrics").json()["agents_not_on_latest"] == 1


def test_an_offline_agent_comes_back_and_its_anomaly_closes(agent):
    later = timezone.now() + timedelta(minutes=5)
    sweep_until(later)
    assert agent.refresh().status == AgentStatus.OFFLINE
    assert Anomaly.objects.get(kind=AnomalyKind.AGENT_OFFLINE).resolved_at is None
    with time_machine.travel(later, tick=False):
        assert beat(agent).status_code == 200
    assert agent.refresh().status == AgentStatus.ONLINE
    assert Anomaly.objects.get().resolved_at is not None
    assert AuditEvent.objects.filter(action="anomaly.resolve").exists()


def test_leases_are_extended_only_when_half_a_lease_has_passed(
    agent, django_assert_num_queries, assert_data_statements
):
    factories.job(agent.agent.customer_id, role="coder")
    job = agent.api.post("/jobs/claim").json()
    first_expiry = Job.objects.get().lease_expires_at
    # agent update, lease update, and the change every web process re-reads the agent on
    # (in one transaction, so a decommission cannot fall between them)
    with assert_data_statements(3):
        beat(agent, running_job_ids=[job["id"]])
    # Leases fresh: nothing to extend; the agent is re-read once after its change.
    with django_assert_num_queries(2) as queries:
        beat(agent, running_job_ids=[job["id"]])
    assert not any(q["sql"].startswith('UPDATE "fleet_job"') for q in queries.captured_queries)
    later = timezone.now() + timedelta(minutes=3)
    with time_machine.travel(later, tick=False):
        beat(agent, running_job_ids=[job["id"]])
    extended = Job.objects.get().lease_expires_at
    assert extended > first_expiry
    assert extended == later + timedelta(minutes=5)


def test_heartbeat_never_extends_another_agents_job(agent, licensed):
    from tests.fleet.api.conftest import activate

    other = activate(licensed)
    factories.job(licensed, role="coder")
    job = other.api.post("/jobs/claim").json()
    before = Job.objects.get().lease_expires_at
    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=False):
        beat(agent, running_job_ids=[job["id"]])
    assert Job.objects.get().lease_expires_at == before
    assert Job.objects.get().status == JobStatus.RUNNING


def test_a_decommissioned_agent_is_refused_on_its_next_call(agent):
    assert beat(agent).status_code == 200
    agent_decommission(agent=agent.agent, actor=SYSTEM)
    response = beat(agent)
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


def test_rotating_the_secret_retires_the_old_one(agent):
    new = agent.api.post("/agents/rotate-secret").json()["agent_secret"]
    assert beat(agent).status_code == 401
    assert agent.api.post("/agents/heartbeat", {"version": "1.9.3"}, secret=new).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer nope",
        "Basic Zm9vOmJhcg==",
        "Bearer agtn_agt_" + "a" * 38,
        "Bearer agtn_agt_" + "a" * 32 + "éééééé",
    ],
)
def test_bad_credentials_are_401_without_a_lookup(
    anon, licensed, header, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = anon.client.post(
            "/api/v1/agents/heartbeat",
            {"version": "1.9.3"},
            content_type="application/json",
            HTTP_AUTHORIZATION=header,
        )
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [
        {"version": "one"},
        {"version": "1.9.3", "running_job_ids": ["x"]},
        {"version": "1.9.3", "running_job_ids": [2**70]},
        {"version": "1.9.3", "running_job_ids": list(range(1, 1002))},
        {"version": "1.9.3", "load": -1},
        {"version": "1.9.3", "sent_at": "yesterday"},
        {"version": "1.9.3\x00"},
        {},
    ],
)
def test_bad_heartbeats_are_422_and_change_nothing(agent, body):
    before = agent.refresh().last_heartbeat_at
    response = agent.api.post("/agents/heartbeat", body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert agent.refresh().last_heartbeat_at == before


@pytest.mark.parametrize(
    ("sent_at", "ahead"),
    [
        ("2024-01-01T00:00:00", False),  # naive: read as UTC
        ("9999-12-31T00:00:00Z", True),
        ("0001-01-01T00:00:00+00:00", False),
    ],
)
def test_naive_or_far_off_agent_clocks_are_reported_not_refused(agent, sent_at, ahead):
    """A live agent with a broken clock is still alive: its heartbeat counts, the skew
    (bounded to what the column holds) is stored and becomes a finding."""
    response = agent.api.post("/agents/heartbeat", {"version": "1.9.3", "sent_at": sent_at})
    assert response.status_code == 200
    stored = agent.refresh()
    assert (stored.clock_offset_seconds > 10**8) is ahead
    assert abs(stored.clock_offset_seconds) > 10**7
    assert Anomaly.objects.filter(kind=AnomalyKind.CLOCK_SKEW, agent=stored).exists()


def test_a_sent_at_that_is_not_a_time_is_422(agent):
    response = agent.api.post("/agents/heartbeat", {"version": "1.9.3", "sent_at": "yesterday"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "sent_at"


def test_me_shows_what_agentina_status_prints(agent, licensed):
    body = agent.api.get("/agents/me").json()
    assert body["agent_id"] == agent.agent.pk
    assert body["license"] == {
        "plan": "team",
        "max_agents": 10,
        "seats_used": 1,
        "max_concurrent_tasks_per_agent": 2,
        "channel": "stable",
    }
    assert body["latest_release"] == "1.10.0"
    assert body["update_available"] == {"version": "1.10.0", "channel": "stable"}
    assert body["host"] == agent.agent.host.hostname


def test_upgrade_results(agent):
    ok = agent.api.post(
        "/agents/upgrade-result",
        {"outcome": "succeeded", "from_version": "1.9.3", "to_version": "1.10.0"},
    )
    assert ok.status_code == 200
    assert agent.refresh().version == "1.10.0"
    failed = agent.api.post(
        "/agents/upgrade-result",
        {
            "outcome": "smoke_check_failed",
            "from_version": "1.10.0",
            "to_version": "1.11.0",
            "detail": "health endpoint 500",
        },
    )
    assert failed.status_code == 200
    assert agent.refresh().version == "1.10.0"
    rollback = Anomaly.objects.get(kind=AnomalyKind.ROLLBACK)
    assert rollback.severity == "critical" and "health endpoint 500" in rollback.message
    assert AuditEvent.objects.filter(action__startswith="agent.upgrade_").count() == 2


def test_agent_findings_fold_by_fingerprint(agent):
    first = agent.api.post("/anomalies", {"message": "repo unreachable", "fingerprint": "git-503"})
    second = agent.api.post(
        "/anomalies", {"message": "repo unreachable again", "fingerprint": "git-503"}
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["occurrences"] == 2
    assert Anomaly.objects.count() == 1
    other = agent.api.post("/anomalies", {"message": "disk full", "severity": "critical"})
    assert other.json()["id"] != first.json()["id"]

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import AgentStatus, AnomalyKind, JobStatus
from fleet.models import Agent, Anomaly, Job
from fleet.services.detections import fleet_detect
from fleet.services.snapshots import fleet_snapshots_take
from tests import factories

pytestmark = pytest.mark.django_db


def detect(now=None):
    with time_machine.travel(now or timezone.now(), tick=False):
        return fleet_detect(fleet_snapshots_take())


def open_kinds():
    return sorted(
        Anomaly.objects.filter(resolved_at__isnull=True).values_list("fingerprint", flat=True)
    )


@pytest.fixture
def healthy(customer):
    """Two zones, an indexer, nobody behind, everybody online: nothing to find."""
    factories.license(customer)
    factories.release("1.10.0")
    for zone, role in (("a", "coder"), ("b", "indexer"), ("b", "reviewer")):
        factories.agent(
            customer,
            factories.host(customer, zone=zone, memory_mb=8192),
            role=role,
            version="1.10.0",
        )
    return customer


def test_a_healthy_fleet_has_no_findings(healthy):
    assert detect() == []
    assert not Anomaly.objects.exists()


def test_low_online_ratio_opens_then_resolves(healthy):
    Agent.objects.filter(role="reviewer").update(
        last_heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    detect()
    finding = Anomaly.objects.get(kind=AnomalyKind.LOW_ONLINE_RATIO)
    assert "2 of 3 agents are online (67%" in finding.message
    detect()
    finding.refresh_from_db()
    assert finding.occurrences == 2
    Agent.objects.update(last_heartbeat_at=timezone.now())
    detect()
    finding.refresh_from_db()
    assert finding.resolved_at is not None
    assert finding.resolution_note == "The condition cleared."


def test_version_skew_more_than_one_minor_behind(healthy):
    Agent.objects.filter(role="coder").update(version="1.9.0")
    detect()
    assert not Anomaly.objects.filter(kind=AnomalyKind.VERSION_SKEW).exists()  # one minor: fine
    Agent.objects.filter(role="coder").update(version="1.8.5")
    detect()
    assert (
        "1 agent(s) are more than one minor"
        in Anomaly.objects.get(kind=AnomalyKind.VERSION_SKEW).message
    )


def test_anti_patterns(healthy):
    Agent.objects.filter(role="indexer").update(
        status=AgentStatus.DECOMMISSIONED, decommissioned_at=timezone.now()
    )
    factories.Host.objects.update(zone="a")
    host = factories.host(healthy, zone="a", memory_mb=1024)
    for _ in range(2):
        factories.agent(healthy, host, role="tester", version="1.10.0")
    detect()
    fingerprints = open_kinds()
    assert f"anti_pattern:no_indexer:c{healthy.pk}" in fingerprints
    assert f"anti_pattern:one_zone:c{healthy.pk}" in fingerprints
    memory = Anomaly.objects.get(fingerprint=f"anti_pattern:memory:h{host.pk}")
    assert "wanting at least 2448 MB; it has 1024 MB" in memory.message


def test_repeated_failures_of_one_agent(healthy):
    coder = Agent.objects.get(role="coder")
    for _ in range(3):
        factories.job(
            healthy,
            role="coder",
            status=JobStatus.FAILED,
            agent=coder,
            finished_at=timezone.now(),
        )
    detect()
    finding = Anomaly.objects.get(kind=AnomalyKind.JOB_FAILURES)
    assert (finding.agent_id, finding.fingerprint) == (coder.pk, f"job_failures:a{coder.pk}")


def test_throughput_drop_against_the_same_hour_with_a_steady_queue(healthy):
    now = timezone.now().replace(second=0, microsecond=0)
    factories.day_ago_hours(healthy, now, range(1, 8), jobs_completed=100)
    factories.snapshot(healthy, taken_at=now - timedelta(hours=1), queue_depth=6)
    for _ in range(5):
        factories.job(healthy, role="coder")  # the queue still holds work
    for _ in range(40):
        factories.job(
            healthy,
            role="coder",
            status=JobStatus.SUCCEEDED,
            finished_at=now - timedelta(minutes=10),
        )
    detect(now)
    drop = Anomaly.objects.get(kind=AnomalyKind.THROUGHPUT_DROP)
    assert "40 jobs completed in the last hour against 100" in drop.message
    assert "dropped 60%" in drop.message
    # With an empty queue the same numbers mean there is no work, not a drop.
    Job.objects.filter(status=JobStatus.QUEUED).delete()
    detect(now + timedelta(minutes=1))
    drop.refresh_from_db()
    assert drop.resolved_at is not None


def test_hosts_without_a_zone_are_not_one_zone(healthy):
    factories.Host.objects.update(zone="")
    detect()
    assert not Anomaly.objects.filter(fingerprint__startswith="anti_pattern:one_zone").exists()


def test_retryable_failures_count_towards_repeated_failures(healthy):
    from tests.fleet.api.conftest import activate

    agent = activate(healthy, version="1.10.0")
    for priority in (3, 2, 1):
        factories.job(healthy, role="coder", priority=priority)
    for _ in range(3):
        job = agent.api.post("/jobs/claim").json()
        agent.api.post(
            f"/jobs/{job['id']}/fail",
            {"lease_id": job["lease_id"], "error": "boom", "retryable": True},
        )
        Job.objects.filter(pk=job["id"]).update(priority=-1)  # let the next one be claimed
    assert set(Job.objects.values_list("status", "agent_id")) == {("queued", agent.agent.pk)}
    detect()
    assert Anomaly.objects.get(kind=AnomalyKind.JOB_FAILURES).agent_id == agent.agent.pk

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from fleet import policy
from fleet.choices import AgentStatus, AnomalyKind, JobStatus
from fleet.models import Agent, Anomaly, FleetSnapshot, Job
from fleet.services.detections import fleet_detect
from fleet.services.snapshots import fleet_snapshots_take
from tests import factories
from tests.conftest import data_statements

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(customer):
    """Four agents (one silent, one decommissioned), jobs in every state."""
    factories.license(customer)
    factories.release("1.8.0")
    factories.release("1.10.0")
    now = timezone.now()
    busy = factories.agent(customer, version="1.10.0", role="coder")
    factories.agent(customer, version="1.9.3", role="reviewer")
    factories.agent(
        customer, version="1.8.0", role="tester", last_heartbeat_at=now - timedelta(minutes=10)
    )
    factories.agent(customer, status=AgentStatus.DECOMMISSIONED, version="1.0.0")
    factories.job(customer, role="coder", status=JobStatus.RUNNING, agent=busy, started_at=now)
    for minutes, wait in ((1, 10), (2, 30), (3, 120), (90, 5)):
        job = factories.job(
            customer,
            role="coder",
            status=JobStatus.SUCCEEDED,
            agent=busy,
            finished_at=now - timedelta(minutes=minutes),
            started_at=now - timedelta(minutes=minutes + 1),
        )
        Job.objects.filter(pk=job.pk).update(queued_at=job.started_at - timedelta(seconds=wait))
    factories.job(
        customer,
        role="coder",
        status=JobStatus.FAILED,
        agent=busy,
        finished_at=now - timedelta(minutes=3),
    )
    factories.job(customer, role="tester")
    return customer


def test_a_snapshot_holds_the_fleets_numbers(fleet):
    [snap] = fleet_snapshots_take()
    assert snap.taken_at.second == 0
    assert (snap.agents_total, snap.agents_online, snap.agents_busy) == (3, 2, 1)
    assert snap.agents_by_status == {
        "online": 3,
        "offline": 0,
        "upgrading": 0,
        "draining": 0,
        "paused": 0,
        "cleaned_up": 0,
        "decommissioned": 0,
    }
    assert snap.agents_by_role == {"coder": 1, "reviewer": 1, "tester": 1, "indexer": 0}
    assert snap.online_ratio == pytest.approx(2 / 3)
    assert (snap.jobs_completed_last_hour, snap.jobs_failed_last_hour) == (3, 1)
    assert (snap.queue_depth, snap.jobs_running) == (1, 1)
    # waits of jobs started in the last 5 minutes: 10, 30, 120 s, the running one 0 s,
    # and the queued one so far, 0 s
    assert snap.wait_p50_seconds == pytest.approx(10, abs=0.5)
    assert 90 <= snap.wait_p95_seconds <= 120
    assert snap.idle_ratio == pytest.approx(0.5)  # 1 of 2 online agents busy this minute
    assert (snap.agents_not_on_latest, snap.agents_minor_behind) == (2, 1)


def test_twice_in_a_minute_is_one_row_and_idle_averages_over_the_hour(fleet):
    start = timezone.now().replace(second=5)
    with time_machine.travel(start, tick=False):
        fleet_snapshots_take()
        fleet_snapshots_take()
    assert FleetSnapshot.objects.count() == 1
    Job.objects.filter(status=JobStatus.RUNNING).update(
        status=JobStatus.SUCCEEDED, finished_at=start
    )
    Agent.objects.update(last_heartbeat_at=start + timedelta(minutes=1))
    with time_machine.travel(start + timedelta(minutes=1), tick=False):
        [snap] = fleet_snapshots_take()
    assert FleetSnapshot.objects.count() == 2
    # minute 1: 1 busy of 2 online; minute 2: 0 busy of 3 online -> 1 - 1/5
    assert snap.idle_ratio == pytest.approx(0.8)


def _statements(fn):
    with data_statements() as statements:
        fn()
    return len(statements)


def test_snapshot_and_detection_statements_do_not_grow_with_the_fleet(fleet):
    def run():
        fleet_detect(fleet_snapshots_take())

    def grow(n):
        host = factories.host(fleet, memory_mb=None)
        Agent.objects.bulk_create(factories.agent_row(fleet, host) for _ in range(n))
        other = factories.customer()
        Agent.objects.bulk_create(
            factories.agent_row(other, factories.host(other)) for _ in range(n // 10)
        )

    grow(10)
    run()  # the first run opens findings; compare steady runs
    small = _statements(run)
    grow(2000)
    run()
    assert _statements(run) == small


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_snapshots_at_once_write_one_row_and_one_finding_each(fleet):
    barrier = threading.Barrier(2)
    now = timezone.now()

    def take():
        try:
            barrier.wait()
            with time_machine.travel(now, tick=False):
                fleet_detect(fleet_snapshots_take())
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert FleetSnapshot.objects.count() == 1
    low = Anomaly.objects.filter(kind=AnomalyKind.LOW_ONLINE_RATIO)
    assert low.count() == 1
    assert low.get().occurrences == 2  # the second folded into the first


def test_a_stalled_queue_shows_long_waits_not_no_number(customer):
    for _ in range(5):
        job = factories.job(customer, role="coder")
        Job.objects.filter(pk=job.pk).update(queued_at=timezone.now() - timedelta(hours=2))
    [snap] = fleet_snapshots_take()
    assert snap.wait_p50_seconds == pytest.approx(7200, abs=5)


def test_minutes_beat_missed_are_rebuilt_from_history_when_it_resumes(fleet, other_customer):
    """Beat stops for ten minutes (worker killed, broker gone): the next snapshot rebuilds
    every missed minute of every customer from the jobs', agents' and findings' times,
    and leaves empty what no history holds (presence), rather than guessing."""
    start = timezone.now()
    minute = start.replace(second=0, microsecond=0)
    with time_machine.travel(start, tick=False):
        fleet_snapshots_take()
    tester_job = Job.objects.get(status=JobStatus.QUEUED)
    Job.objects.filter(pk=tester_job.pk).update(  # claimed at +3, done at +6
        status=JobStatus.SUCCEEDED,
        started_at=minute + timedelta(minutes=3),
        finished_at=minute + timedelta(minutes=6),
    )
    with time_machine.travel(minute + timedelta(minutes=4), tick=False):
        factories.agent(fleet, role="indexer")
    with time_machine.travel(minute + timedelta(minutes=2), tick=False):
        factories.anomaly(fleet, resolved_at=minute + timedelta(minutes=8))

    with time_machine.travel(start + timedelta(minutes=11), tick=False):
        fleet_snapshots_take()

    for customer in (fleet, other_customer):
        assert FleetSnapshot.objects.filter(customer=customer).count() == 12  # none missing
    rows = {
        int((s.taken_at - minute) / timedelta(minutes=1)): s
        for s in FleetSnapshot.objects.filter(customer=fleet)
    }
    assert [m for m, s in sorted(rows.items()) if s.backfilled] == list(range(1, 11))
    assert not rows[0].backfilled and not rows[11].backfilled
    at = {m: (s.queue_depth, s.jobs_running, s.jobs_completed_last_hour) for m, s in rows.items()}
    assert (at[2], at[3], at[5], at[6]) == ((1, 1, 3), (0, 2, 3), (0, 2, 3), (0, 1, 4))
    assert (rows[3].agents_total, rows[4].agents_total) == (3, 4)
    assert rows[4].agents_by_role["indexer"] == 1
    assert [rows[m].anomalies_unresolved for m in (1, 2, 7, 8)] == [0, 1, 1, 0]
    # presence, busy and versions are not kept per minute: empty, never a made-up number
    gap = rows[5]
    assert (gap.agents_online, gap.agents_busy, gap.online_ratio, gap.idle_ratio) == (None,) * 4
    assert (gap.agents_not_on_latest, gap.wait_p95_seconds) == (None, None)
    # the minute after the gap averages idle over the minutes that were measured
    assert rows[11].idle_ratio is not None


def test_a_gap_older_than_the_backfill_limit_is_left_a_gap(fleet):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        fleet_snapshots_take()
    resumed = start + policy.SNAPSHOT_BACKFILL_LIMIT + timedelta(minutes=2)
    with time_machine.travel(resumed, tick=False):
        fleet_snapshots_take()
    assert FleetSnapshot.objects.count() == 2
    assert not FleetSnapshot.objects.filter(backfilled=True).exists()

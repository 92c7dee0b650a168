from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AgentStatus, AnomalyKind, Channel, JobStatus, MemberRole
from fleet.models import Anomaly, FleetRollup, FleetSnapshot, Job
from fleet.selectors import fleet_metrics, minor_floor, snapshot_series, throughput_baselines
from fleet.versions import SemVer
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def finished(customer, agent, status, ago, now):
    return Job.objects.create(
        customer=customer, role="coder", agent=agent, status=status, finished_at=now - ago
    )


def snapshot(customer, taken_at, **fields):
    return FleetSnapshot.objects.create(customer=customer, taken_at=taken_at, **fields)


def anomaly(customer, n, *, resolved=False):
    return Anomaly.objects.create(
        customer=customer,
        kind=AnomalyKind.AGENT_REPORTED,
        fingerprint=f"fp-{n}",
        message="disk full",
        resolved_at=timezone.now() if resolved else None,
    )


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def small_fleet(customer, other_customer, now):
    """Four agents holding a seat (three online) on 1.10.0, 1.10.0, 1.9.2 and 1.8.0
    against latest stable 1.10.0; jobs, anomalies and snapshots with known numbers; and
    another customer whose fleet must not count."""
    factories.license(customer, channel=Channel.STABLE)
    factories.release("1.10.0")
    factories.release("1.11.0-beta.1", channel=Channel.BETA)
    a = factories.agent(customer, version="1.10.0")
    factories.agent(customer, version="1.10.0")
    factories.agent(customer, version="1.9.2")
    factories.agent(
        customer, version="1.8.0", status=AgentStatus.OFFLINE, last_heartbeat_at=now - HOUR
    )
    factories.agent(customer, version="0.1.0", status=AgentStatus.DECOMMISSIONED)
    for ago in (timedelta(minutes=10), timedelta(minutes=50)):
        finished(customer, a, JobStatus.SUCCEEDED, ago, now)
    finished(customer, a, JobStatus.SUCCEEDED, timedelta(minutes=90), now)  # previous hour
    finished(customer, a, JobStatus.SUCCEEDED, 3 * HOUR, now)  # counts in neither
    finished(customer, a, JobStatus.FAILED, timedelta(minutes=5), now)
    Job.objects.create(customer=customer, role="coder")
    Job.objects.create(customer=customer, role="tester")
    Job.objects.create(customer=customer, role="coder", agent=a, status=JobStatus.RUNNING)
    anomaly(customer, 1)
    anomaly(customer, 2, resolved=True)
    # The same hour on two previous days: a baseline of (6 + 3) / 2 completions.
    factories.day_ago_hours(customer, now, range(1, 2), jobs_completed=6)
    factories.day_ago_hours(customer, now, range(2, 3), jobs_completed=3)
    snapshot(customer, now - timedelta(minutes=2), idle_ratio=0.5, wait_p50_seconds=1.0)
    latest = snapshot(
        customer,
        now - timedelta(minutes=1),
        idle_ratio=0.1,
        wait_p50_seconds=4.0,
        wait_p95_seconds=30.0,
    )

    other = factories.agent(other_customer, version="1.0.0", last_heartbeat_at=now - HOUR)
    finished(other_customer, other, JobStatus.SUCCEEDED, timedelta(minutes=10), now)
    Job.objects.create(customer=other_customer, role="coder")
    anomaly(other_customer, 1)
    snapshot(other_customer, now, idle_ratio=0.9)
    return latest


def test_a_customers_numbers_on_a_small_known_fleet_in_eight_queries(
    customer, small_fleet, now, django_assert_num_queries
):
    with django_assert_num_queries(8):
        metrics = fleet_metrics(customer, now=now)

    assert metrics.as_dict() == {
        "at": now,
        "agents_active": 4,
        "agents_online": 3,
        "online_ratio": 0.75,
        "jobs_completed_last_hour": 2,
        "jobs_completed_previous_hour": 1,
        "jobs_failed_last_hour": 1,
        "jobs_timed_out_last_hour": 0,
        "queue_depth": 2,
        "jobs_running": 1,
        "anomalies_unresolved": 1,
        "latest_version": "1.10.0",
        "agents_not_on_latest": 2,
        "agents_minor_behind": 1,  # 1.8.0; 1.9.2 is only one minor behind
        "throughput_baseline": 4.5,
        "idle_ratio": 0.1,
        "wait_p50_seconds": 4.0,
        "wait_p95_seconds": 30.0,
        "snapshot_at": small_fleet.taken_at,
        "throughput_trend": 2 / 4.5,
    }


def test_staff_see_every_fleet_together_against_stable_without_snapshot_rates(
    customer, small_fleet, now
):
    metrics = fleet_metrics(None, now=now)
    assert (metrics.agents_active, metrics.agents_online) == (5, 3)
    assert (metrics.jobs_completed_last_hour, metrics.queue_depth) == (3, 3)
    assert metrics.anomalies_unresolved == 2
    assert (metrics.latest_version, metrics.agents_not_on_latest) == ("1.10.0", 3)
    assert (metrics.idle_ratio, metrics.snapshot_at, metrics.throughput_baseline) == (
        None,
        None,
        None,
    )


def test_a_beta_customer_is_measured_against_the_newest_beta(customer, now):
    factories.license(customer, channel=Channel.BETA)
    factories.release("1.10.0")
    factories.release("1.11.0-beta.1", channel=Channel.BETA)
    factories.agent(customer, version="1.10.0")
    metrics = fleet_metrics(customer.pk, now=now)
    assert (metrics.latest_version, metrics.agents_not_on_latest) == ("1.11.0-beta.1", 1)


def test_an_empty_fleet_has_no_ratio_no_latest_and_no_trend(customer):
    metrics = fleet_metrics(customer)
    assert metrics.agents_active == 0
    assert metrics.online_ratio is None
    assert (metrics.latest_version, metrics.agents_not_on_latest) == (None, 0)
    assert metrics.throughput_trend is None


def test_without_a_baseline_the_trend_compares_with_the_hour_before(customer, now):
    agent = factories.agent(customer)
    for ago in (timedelta(minutes=10), timedelta(minutes=20), timedelta(minutes=30)):
        finished(customer, agent, JobStatus.SUCCEEDED, ago, now)
    for ago in (timedelta(minutes=70), timedelta(minutes=80)):
        finished(customer, agent, JobStatus.SUCCEEDED, ago, now)
    metrics = fleet_metrics(customer, now=now)
    assert metrics.throughput_baseline is None
    assert metrics.throughput_trend == 1.5


def test_baselines_average_this_time_of_day_over_the_previous_week_per_customer(
    customer, other_customer, now
):
    factories.day_ago_hours(customer, now, range(1, 2), jobs_completed=10)
    factories.day_ago_hours(customer, now, range(7, 8), jobs_completed=20)
    factories.day_ago_hours(customer, now, range(8, 9), jobs_completed=1000)  # too old
    factories.day_ago_hours(other_customer, now, range(1, 2), jobs_completed=7)
    # Day 3 has only one of its two hours: an incomplete window is no baseline.
    later = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    factories.day_ago_hours(customer, later + timedelta(days=3), range(3, 4), jobs_completed=0)
    FleetRollup.objects.filter(customer=customer, period_start=later).delete()
    # Minute snapshots no longer make the baseline (they are kept 48 hours).
    snapshot(customer, now - timedelta(days=2), jobs_completed_last_hour=1000)

    assert throughput_baselines(now) == {customer.pk: 15.0, other_customer.pk: 7.0}
    assert throughput_baselines(now, customer) == {customer.pk: 15.0}


def test_a_baseline_weighs_the_two_clock_hours_its_hour_spans(customer):
    at = timezone.now().replace(hour=14, minute=15, second=0, microsecond=0)
    day = at - timedelta(days=1)
    for start, jobs in ((day.replace(minute=0) - HOUR, 80), (day.replace(minute=0), 40)):
        FleetRollup.objects.create(
            customer=customer, resolution="hour", period_start=start, jobs_completed=jobs
        )
    # 13:15 to 14:15: three quarters of the 13:00 hour, a quarter of the 14:00 hour.
    assert throughput_baselines(at) == {customer.pk: 0.75 * 80 + 0.25 * 40}
    assert throughput_baselines(at.replace(minute=0)) == {customer.pk: 80.0}


@pytest.mark.parametrize(
    ("latest", "within", "behind"),
    [
        ("1.10.3", "1.9.0", "1.8.99"),
        ("2.0.0", "2.0.0-alpha", "1.99.0"),
        ("1.1.0", "1.0.0", "0.9.0"),
    ],
)
def test_the_minor_floor_admits_one_minor_behind_and_no_further(latest, within, behind):
    floor = minor_floor(SemVer(latest))
    assert SemVer(within) >= floor
    assert SemVer(behind) < floor


def test_the_series_is_one_entry_a_minute_oldest_first_with_gaps_as_none(customer, other_customer):
    now = timezone.now().replace(second=0, microsecond=0)
    old = snapshot(customer, now - timedelta(hours=25))
    earlier = snapshot(customer, now - timedelta(minutes=5))
    later = snapshot(customer, now - timedelta(minutes=2))
    snapshot(other_customer, now - timedelta(minutes=4))

    # Two missed minutes between, and this minute not taken yet (the last one shown is
    # the minute before): a chart draws the gap where it was.
    assert snapshot_series(customer, now=now) == [earlier, None, None, later, None]
    series = snapshot_series(customer, hours=48, now=now)
    assert (series[0], series[-5], series[-2], series[-1]) == (old, earlier, later, None)
    assert len(series) == 25 * 60
    assert snapshot_series(customer, hours=1, now=now + timedelta(hours=2)) == []


def test_failed_and_timed_out_jobs_of_the_last_hour_are_counted(customer, django_user_model):
    owner = member_client(customer, django_user_model, MemberRole.OWNER, "olga")
    now = timezone.now()
    agent = factories.agent(customer)
    finished(customer, agent, JobStatus.FAILED, timedelta(minutes=5), now)
    finished(customer, agent, JobStatus.FAILED, 2 * HOUR, now)  # too old
    for reason, ago in (("timed_out", timedelta(minutes=9)), ("timed_out", 2 * HOUR)):
        job = finished(customer, agent, JobStatus.CANCELLED, ago, now)
        Job.objects.filter(pk=job.pk).update(stop_reason=reason)
    operator = finished(customer, agent, JobStatus.CANCELLED, timedelta(minutes=1), now)
    Job.objects.filter(pk=operator.pk).update(stop_reason="operator")  # cancelled, not timed out
    metrics = fleet_metrics(customer)
    assert (metrics.jobs_failed_last_hour, metrics.jobs_timed_out_last_hour) == (1, 1)
    page = owner.get("/portal/").content.decode()
    assert "1 failed</a>" in page and "1 timed out</a>" in page

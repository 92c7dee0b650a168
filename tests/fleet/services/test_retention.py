"""Rollups and retention: each hour folded from its minutes and counted exactly from its
jobs, each day from its hours; the prune deletes exactly what is past its period (and
nothing that is not folded yet), in chunks that stop at a budget and go on next run."""

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import (
    AlertChannelKind,
    AlertDeliveryState,
    AuditAction,
    BulkActionState,
    JobStatus,
    RolloutState,
    RollupResolution,
    TokenStatus,
)
from fleet.models import (
    ActivationToken,
    AlertChannel,
    AlertDelivery,
    AlertEvent,
    Anomaly,
    AuditEvent,
    BulkAction,
    FleetRollup,
    FleetSnapshot,
    Job,
    RolloutTarget,
)
from fleet.services.retention import retention_prune
from fleet.services.rollups import rollups_daily, rollups_hourly
from fleet.tasks import roll_up_and_prune
from tests import factories

pytestmark = pytest.mark.django_db
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@pytest.fixture
def now():
    return timezone.now().replace(second=0, microsecond=0)


def hour_of(now, hours_ago):
    return now.replace(minute=0) - hours_ago * HOUR


def finished_job(customer, at, status=JobStatus.SUCCEEDED):
    return factories.job(customer, status=status, finished_at=at)


def test_an_hour_is_folded_from_its_minutes_and_counted_from_its_jobs(
    customer, other_customer, now
):
    start = hour_of(now, 2)
    for minute, ratio in ((0, 1.0), (10, 0.5), (59, 0.75)):
        factories.snapshot(
            customer,
            taken_at=start + timedelta(minutes=minute),
            online_ratio=ratio,
            queue_depth=minute,
            agents_total=4,
        )
    for minute in (1, 30, 59):
        finished_job(customer, start + timedelta(minutes=minute))
    finished_job(customer, start + timedelta(minutes=5), JobStatus.FAILED)
    finished_job(customer, start + HOUR)  # the next hour's
    finished_job(other_customer, start + timedelta(minutes=3))

    assert rollups_hourly(now=now) == 3  # two hours of the customer, one of the other
    hour = FleetRollup.objects.get(customer=customer, period_start=start)
    assert (hour.minutes, hour.jobs_completed, hour.jobs_failed) == (3, 3, 1)
    assert (hour.online_ratio, hour.online_ratio_avg) == (0.5, pytest.approx(0.75))
    assert (hour.queue_depth, hour.agents_total) == (59, 4)
    assert FleetRollup.objects.get(customer=customer, period_start=start + HOUR).jobs_completed == 1
    assert FleetRollup.objects.get(customer=other_customer).jobs_completed == 1

    # Again: the same rows, and a minute the backfill rebuilt late is folded in.
    factories.snapshot(customer, taken_at=start + timedelta(minutes=20), online_ratio=0.25)
    rollups_hourly(now=now)
    assert FleetRollup.objects.filter(resolution=RollupResolution.HOUR).count() == 3
    hour.refresh_from_db()
    assert (hour.minutes, hour.online_ratio, hour.jobs_completed) == (4, 0.25, 3)


def test_days_are_folded_from_their_hours(customer, now):
    yesterday = (now - DAY).replace(hour=0, minute=0)
    for hour, jobs in ((0, 10), (5, 20), (23, 30)):
        FleetRollup.objects.create(
            customer=customer,
            resolution=RollupResolution.HOUR,
            period_start=yesterday + hour * HOUR,
            minutes=60,
            jobs_completed=jobs,
            online_ratio=0.9 if hour else 0.6,
        )
    rollups_daily(now=now)
    day = FleetRollup.objects.get(resolution=RollupResolution.DAY)
    assert (day.period_start, day.minutes, day.jobs_completed) == (yesterday, 180, 60)
    assert (day.online_ratio, day.jobs_completed_last_hour) == (0.6, 2.5)


def test_the_prune_deletes_exactly_what_is_past_its_period(customer, now, settings):
    """Each kind of row just past its period goes; just inside it stays."""
    settings.RETAIN_MINUTE_SNAPSHOTS_HOURS = 48
    kept, gone = {}, {}

    def pair(name, make, period):
        gone[name], kept[name] = make(now - period - HOUR), make(now - period + HOUR)

    pair("minute", lambda at: factories.snapshot(customer, taken_at=at), 48 * HOUR)
    pair(
        "hour",
        lambda at: FleetRollup.objects.create(
            customer=customer, resolution=RollupResolution.HOUR, period_start=at
        ),
        90 * DAY,
    )
    pair("job", lambda at: finished_job(customer, at), 90 * DAY)
    pair("anomaly", lambda at: factories.anomaly(customer, resolved_at=at), 180 * DAY)
    pair(
        "bulk",
        lambda at: BulkAction.objects.create(
            customer=customer,
            kind="resume",
            state=BulkActionState.DONE,
            actor_label="x",
            finished_at=at,
        ),
        90 * DAY,
    )
    pair(
        "token",
        lambda at: factories.token(customer, status=TokenStatus.EXPIRED, expires_at=at),
        90 * DAY,
    )

    def audit(action):
        def make(at):
            event = factories.audit_event(customer, action=action)
            AuditEvent.objects.filter(pk=event.pk).update(at=at)
            return event

        return make

    pair("claim", audit(AuditAction.JOB_CLAIM), 90 * DAY)
    pair("audit", audit(AuditAction.TOKEN_MINT), 400 * DAY)
    pair(
        "alert",
        lambda at: AlertEvent.objects.create(
            customer=customer, type="agent_offline", created_at=at, dedup_key=str(at)
        ),
        30 * DAY,
    )
    release = factories.release("9.9.9")
    pair(
        "wave",
        lambda at: factories.rollout(
            customer, release, state=RolloutState.COMPLETED, finished_at=at
        ),
        400 * DAY,
    )

    # What is never pruned, however old: open findings, running jobs, redeemed tokens,
    # waves still going, a claim younger than its jobs' period kept as a mint would be.
    ancient = now - 1000 * DAY
    open_finding = factories.anomaly(customer)
    running = factories.job(customer, status=JobStatus.RUNNING, agent=factories.agent(customer))
    Job.objects.filter(pk=running.pk).update(queued_at=ancient)
    agent = factories.agent(customer)
    redeemed = factories.token(customer, status=TokenStatus.REDEEMED, expires_at=ancient)
    agent.activation_token = redeemed
    agent.save()
    target = factories.rollout_target(gone["wave"], agent)
    channel = AlertChannel.objects.create(
        customer=customer, kind=AlertChannelKind.WEBHOOK, url="https://hooks.example/x"
    )
    AlertDelivery.objects.create(
        customer=customer,
        event=gone["alert"],
        channel=channel,
        state=AlertDeliveryState.FAILED,
        retry_until=now,
    )
    minutes_before = FleetSnapshot.objects.count()

    # Nothing rolled up yet: not a single minute goes, whatever its age.
    first = retention_prune(now=now)
    assert FleetSnapshot.objects.count() == minutes_before
    assert (first.deleted["minute snapshots"], first.deleted["finished jobs"]) == (0, 1)
    FleetRollup.objects.create(
        customer=customer, resolution=RollupResolution.HOUR, period_start=now.replace(minute=0)
    )
    FleetRollup.objects.create(
        customer=customer, resolution=RollupResolution.DAY, period_start=now.replace(hour=0)
    )

    pruned = retention_prune(now=now)

    assert pruned.complete
    for name, row in gone.items():
        assert not type(row).objects.filter(pk=row.pk).exists(), f"{name} should be pruned"
    for name, row in kept.items():
        assert type(row).objects.filter(pk=row.pk).exists(), f"{name} should be kept"
    assert Anomaly.objects.filter(pk=open_finding.pk).exists()
    assert Job.objects.filter(pk=running.pk).exists()
    assert ActivationToken.objects.filter(pk=redeemed.pk).exists()
    assert not RolloutTarget.objects.filter(pk=target.pk).exists()  # went with its wave
    assert not AlertDelivery.objects.exists()  # went with its alert
    assert pruned.deleted["minute snapshots"] == 1
    assert retention_prune(now=now).deleted == dict.fromkeys(pruned.deleted, 0)  # twice


def test_a_year_of_rows_stops_growing_once_retention_runs(customer, now):
    """Row counts level off: a year of daily jobs, audit and minute snapshots leaves
    about their periods' worth, and job counts live on in the rollups."""
    agent = factories.agent(customer)
    for day in range(365):
        at = now - day * DAY - HOUR  # clear of the cutoff, whenever the task runs
        Job.objects.bulk_create(
            [
                Job(
                    customer=customer,
                    role="coder",
                    status=JobStatus.SUCCEEDED,
                    agent=agent,
                    finished_at=at - timedelta(minutes=n),
                )
                for n in range(3)
            ]
        )
    FleetSnapshot.objects.bulk_create(
        FleetSnapshot(customer=customer, taken_at=now - n * 10 * timedelta(minutes=1))
        for n in range(1, 14 * 24 * 6)  # two weeks of a minute in ten
    )
    roll_up_and_prune.apply()
    assert Job.objects.count() == 3 * 90
    assert FleetSnapshot.objects.filter(taken_at__lt=now - 49 * HOUR).count() == 0
    hours = FleetRollup.objects.filter(resolution=RollupResolution.HOUR)
    days = FleetRollup.objects.filter(resolution=RollupResolution.DAY)
    assert hours.filter(period_start__lt=now - 91 * DAY).count() == 0
    assert (
        sum(days.values_list("jobs_completed", flat=True))
        + sum(
            hours.filter(period_start__gte=now.replace(hour=0, minute=0)).values_list(
                "jobs_completed", flat=True
            )
        )
        == 3 * 365
    )
    before = {m: m.objects.count() for m in (Job, FleetSnapshot, FleetRollup)}
    roll_up_and_prune.apply()  # claimed for the hour already: nothing more
    assert {m: m.objects.count() for m in before} == before


def test_a_run_stops_at_its_budget_and_the_next_goes_on(customer, now):
    for n in range(3):
        finished_job(customer, now - 200 * DAY - n * HOUR)
    ticks = iter(range(100))
    partial = retention_prune(now=now, budget_seconds=0, clock=lambda: next(ticks))
    assert not partial.complete and Job.objects.count() == 3
    assert retention_prune(now=now).deleted["finished jobs"] == 3

"""Beat's runs happen once: a second beat, an overlapping run or a redelivery does
nothing, decided by a database row (PostgreSQL threads for the race)."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from fleet import tasks
from fleet.choices import AnomalyKind
from fleet.models import Anomaly, FleetSnapshot
from fleet.services.beat import beat_run_claim
from tests import factories


@pytest.fixture
def failing_fleet(customer):
    """A fleet far below its online target: every snapshot finds it."""
    factories.license(customer)
    for i in range(4):
        factories.agent(
            customer, last_heartbeat_at=timezone.now() - timedelta(hours=i and 1), status="online"
        )
    return customer


@pytest.mark.django_db
def test_a_second_beat_in_the_same_period_does_nothing(failing_fleet, settings):
    settings.SNAPSHOT_SECONDS = 60
    assert tasks.take_snapshots() == 1
    finding = Anomaly.objects.get(kind=AnomalyKind.LOW_ONLINE_RATIO)
    assert finding.occurrences == 1
    assert tasks.take_snapshots() == 0  # the second beat's tick, a second later
    finding.refresh_from_db()
    assert finding.occurrences == 1  # not inflated
    assert FleetSnapshot.objects.count() == 1
    with time_machine.travel(timezone.now() + timedelta(seconds=58), tick=False):
        assert tasks.take_snapshots() == 1  # the next period (jitter costs nothing)
    finding.refresh_from_db()
    assert finding.occurrences == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_runs_racing_on_eight_connections_are_claimed_once():
    now = timezone.now()
    barrier = threading.Barrier(8)
    claims: list[bool] = []

    def run() -> None:
        try:
            barrier.wait()
            claims.append(beat_run_claim(task="race", every=timedelta(seconds=60), now=now))
        finally:
            connection.close()

    for _round in range(2):  # the first run creates the row; the second only updates it
        claims.clear()
        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert claims.count(True) == 1, claims
        now += timedelta(seconds=60)

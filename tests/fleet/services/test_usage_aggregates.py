"""Cost and acceptance as the minute snapshot and the hourly and daily rollups keep them:
exact (Decimal) against a hand computation, per role and per version."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from fleet.choices import JobStatus, RollupResolution
from fleet.models import FleetRollup, Job
from fleet.selectors.outcomes import jobs_finished, work_by
from fleet.services.rollups import rollups_daily, rollups_hourly
from fleet.services.snapshots import fleet_snapshots_take
from tests import factories

pytestmark = pytest.mark.django_db
NOW = datetime.fromisoformat("2026-03-03T10:30:00+00:00")


def finished(customer, role, version, cost, tokens, *, verdict="", ago=timedelta(minutes=5)):
    return factories.job(
        customer,
        role=role,
        status=JobStatus.SUCCEEDED,
        agent_version=version,
        finished_at=NOW - ago,
        cost_usd=Decimal(cost),
        input_tokens=tokens,
        output_tokens=1,
        verdict=verdict,
        verdict_at=NOW - ago if verdict else None,
    )


@pytest.fixture
def work(customer, other_customer):
    finished(customer, "coder", "1.0.0", "0.100001", 10, verdict="accepted")
    finished(customer, "coder", "1.1.0", "0.200002", 20, verdict="rejected")
    finished(customer, "coder", "1.1.0", "1.000000", 30, verdict="accepted")
    finished(customer, "reviewer", "1.1.0", "0.000003", 40)
    finished(customer, "coder", "1.0.0", "5", 50, ago=timedelta(hours=2))  # not this hour
    finished(other_customer, "coder", "1.0.0", "99", 60, verdict="accepted")
    return customer


def test_the_snapshot_sums_cost_exactly_per_role_and_version(work):
    with time_machine.travel(NOW, tick=False):
        snaps = {s.customer_id: s for s in fleet_snapshots_take()}
    snap = snaps[work.pk]
    # By hand: 0.100001 + 0.200002 + 1.000000 + 0.000003 = 1.300006; tokens 10+20+30+40 + 4.
    assert snap.cost_usd_last_hour == Decimal("1.300006")
    assert snap.tokens_last_hour == 104
    assert (snap.jobs_judged_last_hour, snap.jobs_accepted_last_hour) == (3, 2)
    assert snap.usage_by_role == {
        "coder": {"jobs": 3, "tokens": 63, "cost_usd": "1.300003", "judged": 3, "accepted": 2},
        "reviewer": {"jobs": 1, "tokens": 41, "cost_usd": "0.000003", "judged": 0, "accepted": 0},
    }
    assert snap.usage_by_version["1.1.0"]["cost_usd"] == "1.200005"
    # The same from the jobs directly: cost per accepted job 1.300003 / 2 (coder).
    coder = work_by(jobs_finished(work, NOW - timedelta(hours=1), NOW), "role")["coder"]
    assert coder.cost_per_accepted == Decimal("0.650002")  # 0.6500015 rounded half even
    assert coder.acceptance == pytest.approx(2 / 3)


def test_the_rollups_keep_cost_and_verdicts(work):
    rollups_hourly(now=NOW + timedelta(hours=1))
    hour = FleetRollup.objects.get(
        customer=work, resolution=RollupResolution.HOUR, period_start=NOW.replace(minute=0)
    )
    assert (hour.cost_usd, hour.tokens) == (Decimal("1.300006"), 104)
    assert (hour.jobs_judged, hour.jobs_accepted) == (3, 2)
    rollups_daily(now=NOW + timedelta(days=1))
    day = FleetRollup.objects.get(customer=work, resolution=RollupResolution.DAY)
    assert day.cost_usd == Decimal("6.300006")  # with the $5 job two hours earlier
    assert Job.objects.count() == 6

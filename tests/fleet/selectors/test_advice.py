"""Advice beyond tests/fleet/test_advice.py's verdicts: its window, its thresholds,
its tenancy and its query count."""

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet import policy
from fleet.choices import AgentStatus
from fleet.models import FleetSnapshot, Job
from fleet.selectors import fleet_advice, fleet_sizing
from tests import factories

pytestmark = pytest.mark.django_db

AT_CAP = {"idle_ratio": 0.05, "queue_depth": 8, "agents_online": 3, "jobs_running": 6}


def history(customer, minutes=10, *, ago=timedelta(0), **fields):
    now = timezone.now().replace(second=0, microsecond=0) - ago
    for m in range(minutes):
        FleetSnapshot.objects.create(
            customer=customer, taken_at=now - timedelta(minutes=m), **fields
        )


def test_adding_an_agent_is_advised_in_three_queries(customer, django_assert_num_queries):
    factories.license(customer, max_concurrent_tasks_per_agent=2)
    history(customer, **AT_CAP)
    Job.objects.create(customer=customer, role="reviewer")
    with django_assert_num_queries(3):
        advice = fleet_advice(customer)
    assert (advice.verdict, advice.headline) == ("add_agent", "Add an agent: a reviewer.")


def test_snapshots_older_than_the_window_give_no_advice(customer):
    history(customer, ago=timedelta(minutes=20), **AT_CAP)
    assert fleet_advice(customer).verdict == "no_data"


def test_another_customers_snapshots_give_no_advice(customer, other_customer):
    history(other_customer, **AT_CAP)
    assert fleet_advice(customer).verdict == "no_data"


def test_idle_exactly_at_the_target_is_not_a_call_for_work(customer):
    history(customer, idle_ratio=policy.IDLE_TARGET, queue_depth=0, agents_online=3)
    assert fleet_advice(customer).verdict == "sized_right"


def test_a_queue_seen_for_under_five_minutes_is_not_yet_steady(customer):
    factories.license(customer, max_concurrent_tasks_per_agent=2)
    history(customer, minutes=4, **AT_CAP)
    assert fleet_advice(customer).verdict == "sized_right"


def test_a_queue_draining_fast_is_not_steady(customer):
    factories.license(customer, max_concurrent_tasks_per_agent=2)
    now = timezone.now().replace(second=0, microsecond=0)
    for m, depth in enumerate([4, 6, 8, 10, 12, 14]):  # newest first: from 14 down to 4
        FleetSnapshot.objects.create(
            customer=customer,
            taken_at=now - timedelta(minutes=m),
            **{**AT_CAP, "queue_depth": depth},
        )
    assert fleet_advice(customer).verdict == "sized_right"


def test_sizing_counts_only_agents_holding_a_seat_and_names_the_surplus(customer):
    for _ in range(4):
        factories.agent(customer, role="coder")
    factories.agent(customer, role="reviewer", status=AgentStatus.DECOMMISSIONED)
    rows = {r.role: r for r in fleet_sizing(customer, 10_000)}
    assert (rows["coder"].current, rows["coder"].verdict) == (4, "2 more than needed")
    assert (rows["reviewer"].current, rows["reviewer"].verdict) == (0, "add 1")

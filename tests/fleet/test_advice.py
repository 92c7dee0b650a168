from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.selectors import fleet_advice, fleet_sizing
from tests import factories

pytestmark = pytest.mark.django_db


def history(customer, minutes=10, **fields):
    now = timezone.now().replace(second=0, microsecond=0)
    for m in range(minutes):
        factories.snapshot(customer, taken_at=now - timedelta(minutes=m), **fields)


def test_no_snapshots_no_advice(customer):
    assert fleet_advice(customer).verdict == "no_data"


def test_idle_over_a_quarter_says_add_work(customer):
    history(customer, idle_ratio=0.4, queue_depth=0, agents_online=5)
    advice = fleet_advice(customer)
    assert (advice.verdict, advice.headline) == ("add_work", "Add work, not agents.")
    assert "40% of online agent time was idle" in advice.reasons[0]


def test_a_steady_queue_with_every_agent_at_its_cap_says_add_an_agent(customer):
    factories.license(customer, max_concurrent_tasks_per_agent=2)
    history(
        customer,
        idle_ratio=0.05,
        queue_depth=8,
        agents_online=3,
        jobs_running=6,
        wait_p95_seconds=420,
    )
    for _ in range(5):
        factories.job(customer, role="tester")
    factories.job(customer, role="coder")
    advice = fleet_advice(customer)
    assert advice.verdict == "add_agent"
    assert advice.headline == "Add an agent: a tester."
    assert "p95 wait 420 s" in advice.reasons[0]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"queue_depth": 8, "agents_online": 3, "jobs_running": 5}, "a free slot remains"),
        ({"queue_depth": 0, "agents_online": 3, "jobs_running": 6}, "nothing waits"),
    ],
)
def test_no_agent_is_advised_while_there_is_room_or_no_queue(customer, fields, why):
    factories.license(customer, max_concurrent_tasks_per_agent=2)
    history(customer, idle_ratio=0.1, **fields)
    assert fleet_advice(customer).verdict == "sized_right", why


@pytest.mark.parametrize(
    ("loc", "coders"),
    [(10_000, (1, 2)), (49_999, (1, 2)), (50_000, (3, 5)), (499_999, (3, 5)), (2_000_000, (5, 15))],
)
def test_sizing_table(customer, loc, coders):
    for _ in range(3):
        factories.agent(customer, role="coder")
    rows = {r.role: r for r in fleet_sizing(customer, loc)}
    assert (rows["coder"].recommended_min, rows["coder"].recommended_max) == coders
    assert rows["coder"].current == 3
    assert rows["indexer"].verdict == "add 1"

"""Advice and Plan over a table of fleets (idle, queued, offline and upgrading mixes), the
demo's own bad day among them: they read the same role numbers the dashboard shows, so
they never contradict the facts or each other."""

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AgentStatus, JobStatus
from fleet.models import Job
from fleet.selectors import fleet_advice, fleet_sizing, role_numbers
from tests import factories

pytestmark = pytest.mark.django_db


@dataclass
class Fleet:
    """Agents by role: working (online), offline, upgrading; jobs by role: waiting (with
    the oldest one's wait in seconds) and running (on the working agents, up to `busy`
    jobs each); the last hour's idle share from the newest snapshot."""

    online: dict[str, int] = field(default_factory=dict)
    offline: dict[str, int] = field(default_factory=dict)
    upgrading: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, tuple[int, int]] = field(default_factory=dict)
    busy: int = 0
    idle_hour: float | None = None
    seats: int = 10
    cap: int = 2


def build(customer, fleet: Fleet) -> None:
    now = timezone.now()
    factories.license(customer, max_agents=fleet.seats, max_concurrent_tasks_per_agent=fleet.cap)
    for role, n in fleet.online.items():
        for _ in range(n):
            agent = factories.agent(customer, role=role)
            for _ in range(fleet.busy):
                factories.job(customer, role=role, status=JobStatus.RUNNING, agent=agent)
    for role, n in fleet.offline.items():
        for _ in range(n):
            factories.agent(
                customer,
                role=role,
                status=AgentStatus.OFFLINE,
                last_heartbeat_at=now - timedelta(hours=1),
            )
    for role, n in fleet.upgrading.items():
        for _ in range(n):
            factories.agent(customer, role=role, status=AgentStatus.UPGRADING)
    for role, (n, oldest) in fleet.waiting.items():
        Job.objects.bulk_create(Job(customer=customer, role=role, payload={}) for _ in range(n))
        Job.objects.filter(customer=customer, role=role, status=JobStatus.QUEUED).update(
            queued_at=now - timedelta(seconds=oldest)
        )
    if fleet.idle_hour is not None:
        factories.snapshot(customer, idle_ratio=fleet.idle_hour)


FLEETS = {
    "idle, nothing waits": (
        Fleet(online={"coder": 4}, idle_hour=0.6),
        "add_work",
        "Add work, not agents.",
    ),
    "the demo's bad day: idle last hour, 154 coder jobs waiting 8 minutes at cap": (
        Fleet(online={"coder": 3}, busy=2, waiting={"coder": (154, 480)}, idle_hour=0.6),
        "add_agents",
        "Add 77 coders.",
    ),
    "jobs wait briefly with free slots": (
        Fleet(online={"coder": 3}, busy=1, waiting={"coder": (2, 20)}, idle_hour=0.1),
        "sized_right",
        "The fleet is sized for its work.",
    ),
    "a moment's queue behind busy agents is no shortage": (
        Fleet(online={"tester": 1}, busy=2, waiting={"tester": (1, 31)}, idle_hour=0.1),
        "sized_right",
        "The fleet is sized for its work.",
    ),
    "jobs wait long though agents have room (they do not claim)": (
        Fleet(online={"coder": 3}, busy=1, waiting={"coder": (2, 300)}, idle_hour=0.1),
        "check_agents",
        "Check your agents: jobs wait though agents have room.",
    ),
    "jobs for a role nobody serves": (
        Fleet(online={"coder": 2}, waiting={"indexer": (3, 10)}, idle_hour=0.9),
        "add_agents",
        "Add 2 indexers.",
    ),
    "coders offline while their jobs wait": (
        Fleet(online={"coder": 1}, offline={"coder": 5}, busy=2, waiting={"coder": (4, 300)}),
        "add_agents",
        "Add 2 coders.",
    ),
    "upgrading agents claim nothing": (
        Fleet(upgrading={"tester": 2}, waiting={"tester": (1, 5)}),
        "add_agents",
        "Add 1 tester.",
    ),
    "busy, nothing waits": (
        Fleet(online={"coder": 2, "reviewer": 1}, busy=2, idle_hour=0.05),
        "sized_right",
        "The fleet is sized for its work.",
    ),
    "no agents yet": (Fleet(), "no_agents", "Activate your first agent: mint a token on Tokens."),
}


@pytest.mark.parametrize(("fleet", "verdict", "headline"), FLEETS.values(), ids=FLEETS.keys())
def test_advice_over_a_table_of_fleets(customer, fleet, verdict, headline):
    build(customer, fleet)
    advice = fleet_advice(customer)
    assert (advice.verdict, advice.headline) == (verdict, headline), advice.reasons
    if verdict == "add_work":
        assert not any(r.queued for r in role_numbers(customer))  # never both


def test_the_demos_bad_day_explains_itself_and_the_seats(customer):
    build(
        customer,
        FLEETS["the demo's bad day: idle last hour, 154 coder jobs waiting 8 minutes at cap"][0],
    )
    reasons = fleet_advice(customer).reasons
    assert reasons[0] == (
        "154 coder jobs wait, the oldest for 8 min; all 3 coders that can work run their 2 tasks."
    )
    assert reasons[1] == "The license has 7 free seats: raise max_agents to 80 first."


def test_offline_agents_of_a_short_role_are_named_and_plan_does_not_count_them(customer):
    build(customer, FLEETS["coders offline while their jobs wait"][0])
    reasons = fleet_advice(customer).reasons
    assert "5 coders are offline: bringing them back is the cheapest help." in reasons[0]
    assert reasons[1] == "The license has 4 free seats."
    coder = next(r for r in fleet_sizing(customer, 100_000) if r.role == "coder")
    assert (coder.current, coder.offline, coder.verdict) == (1, 5, "add 2")


def test_advice_reads_only_this_customer(customer, other_customer):
    build(
        other_customer,
        FLEETS["the demo's bad day: idle last hour, 154 coder jobs waiting 8 minutes at cap"][0],
    )
    factories.license(customer)
    agent = factories.agent(customer)
    factories.job(customer, status=JobStatus.RUNNING, agent=agent)
    assert fleet_advice(customer).verdict == "sized_right"


def test_advice_is_four_queries_whatever_the_fleet(customer, django_assert_num_queries):
    build(customer, Fleet(online={"coder": 30, "tester": 10}, busy=1, idle_hour=0.4))
    with django_assert_num_queries(4):
        assert fleet_advice(customer).verdict == "add_work"


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


def test_sizing_counts_agents_that_can_work_and_names_the_surplus(customer):
    for _ in range(4):
        factories.agent(customer, role="coder")
    factories.agent(customer, role="coder", status=AgentStatus.UPGRADING)
    factories.agent(customer, role="reviewer", status=AgentStatus.DECOMMISSIONED)
    rows = {r.role: r for r in fleet_sizing(customer, 10_000)}
    assert (rows["coder"].current, rows["coder"].verdict) == (4, "2 more than needed")
    assert (rows["reviewer"].current, rows["reviewer"].verdict) == (0, "add 1")

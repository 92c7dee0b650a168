"""Upgrade waves, simulated under time travel: agents heartbeat through the real API, get
their orders, report results; beat's rollout_advance runs every ten minutes."""

import re
import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from fleet.choices import AnomalyKind, JobStatus, RolloutState, RolloutTargetState
from fleet.errors import NotAllowed, RolloutRefused
from fleet.models import Agent, Anomaly, AuditEvent, Job, Release, Rollout, RolloutTarget
from fleet.selectors import rollout_list
from fleet.services.agents import agent_decommission
from fleet.services.audit import SYSTEM, Actor
from fleet.services.rollouts import (
    rollout_abort,
    rollout_advance,
    rollout_resume,
    rollout_resume_anyway,
    rollout_retry_failed,
    rollout_set_floor,
    rollout_skip_soak,
    rollout_start,
)
from tests import factories
from tests.fleet.api.conftest import activate

pytestmark = pytest.mark.django_db
TICK = timedelta(minutes=10)
LAYOUT = [  # (host, zone, roles)
    ("build-a", "zone-a", ["coder"] * 4 + ["reviewer"] * 2 + ["tester"]),
    ("build-b", "zone-a", ["coder"] * 3 + ["reviewer"] + ["tester"] * 2 + ["indexer"]),
    ("build-c", "zone-b", ["coder"] * 3 + ["reviewer"] + ["tester"] + ["indexer"]),
]


class Fleet:
    """Twenty agents on three hosts in two zones, doing six jobs an hour each."""

    def __init__(self, customer, start):
        self.customer = customer
        self.now = start
        self.agents = {}
        self.slow: set[int] = set()  # agents whose work stalls after they upgrade
        self.smoke_fails: set[int] = set()
        with time_machine.travel(start, tick=False):
            for host, zone, roles in LAYOUT:
                for i, role in enumerate(roles):
                    a = activate(
                        customer,
                        machine_id=host,
                        hostname=host,
                        zone=zone,
                        role=role,
                        unit_name=f"agentina@{role}-{i}",
                        state_dir=f"/srv/{role}-{i}",
                    )
                    self.agents[a.agent.pk] = a
        Job.objects.bulk_create(  # a day of work before the wave: the baseline
            factories.job_row(
                customer,
                role="coder",
                status=JobStatus.SUCCEEDED,
                agent_id=pk,
                finished_at=start - k * TICK,
            )
            for pk in self.agents
            for k in range(1, 145)
        )

    def tick(self, *, advance=True):
        """Ten minutes pass: everyone is heard from and works; orders are carried out."""
        self.now += TICK
        with time_machine.travel(self.now, tick=False):
            upgraded = set(Agent.objects.filter(version="1.10.0").values_list("pk", flat=True))
            Agent.objects.filter(pk__in=self.agents).update(last_heartbeat_at=self.now)
            Job.objects.bulk_create(
                factories.job_row(
                    self.customer,
                    role="coder",
                    status=JobStatus.SUCCEEDED,
                    agent_id=pk,
                    finished_at=self.now,
                )
                for pk in self.agents
                if not (pk in upgraded and pk in self.slow)
            )
            told = set(
                RolloutTarget.objects.filter(state=RolloutTargetState.OFFERED).values_list(
                    "agent_id", flat=True
                )
            )
            # The agents told to upgrade, and a few others, go through the real API.
            for pk, a in self.agents.items():
                if pk not in told and pk not in self.sample:
                    continue
                agent = Agent.objects.get(pk=pk)
                reply = a.api.post("/agents/heartbeat", {"version": str(agent.version)}).json()
                self.orders_seen[pk] = self.orders_seen.get(pk, 0) + bool(reply["upgrade"])
                if reply["upgrade"]:
                    outcome = "smoke_check_failed" if pk in self.smoke_fails else "succeeded"
                    a.api.post(
                        "/agents/upgrade-result",
                        {
                            "outcome": outcome,
                            "from_version": str(agent.version),
                            "to_version": reply["upgrade"]["version"],
                        },
                    )
                else:
                    assert reply["update_available"] == (
                        None
                        if agent.version == "1.10.0"
                        else {"version": "1.10.0", "channel": "stable"}
                    )
            if advance:
                return rollout_advance(self.rollout.pk)
            return None

    orders_seen: dict[int, int]
    sample: set[int]

    def run(self, hours):
        steps = []
        for _ in range(int(hours * 6)):
            steps.append(self.tick())
        return steps


def start_fleet(customer, *, silent: int = 0) -> Fleet:
    """The twenty agents, `silent` of them gone quiet for good before the wave starts
    (so it excludes them), and a wave to 1.10.0 under way."""
    factories.license(customer, max_agents=30)
    factories.release("1.9.3")
    release = factories.release("1.10.0")
    f = Fleet(customer, timezone.now().replace(microsecond=0))
    f.orders_seen = {}
    for pk in list(f.agents)[-silent:] if silent else []:
        del f.agents[pk]
        Agent.objects.filter(pk=pk).update(last_heartbeat_at=f.now - timedelta(hours=2))
    f.sample = set(list(f.agents)[::7])
    with time_machine.travel(f.now, tick=False):
        f.rollout = rollout_start(
            customer=customer, release=release, reason="monthly upgrade", actor=SYSTEM
        )
    return f


@pytest.fixture
def fleet(customer):
    return start_fleet(customer)


def spread_ok(rollout):
    fleet = list(Agent.objects.filter(customer=rollout.customer).select_related("host"))
    totals = Counter(
        k for a in fleet for k in (("role", a.role), ("zone", a.host.zone), ("host", a.host_id))
    )
    for batch in range(1, rollout.batches_total + 1):
        members = Agent.objects.filter(
            rollout_targets__rollout=rollout, rollout_targets__batch=batch
        ).select_related("host")
        counts = Counter(
            k
            for a in members
            for k in (("role", a.role), ("zone", a.host.zone), ("host", a.host_id))
        )
        for key, n in counts.items():
            assert totals[key] < 2 or n < totals[key], (batch, key, n)
    return True


def test_a_full_wave_canary_a_day_then_four_watched_batches(fleet):
    rollout = fleet.rollout
    assert (rollout.state, rollout.batches_total) == (RolloutState.CANARY, 4)
    sizes = Counter(RolloutTarget.objects.filter(rollout=rollout).values_list("batch", flat=True))
    assert sizes == {0: 1, 1: 5, 2: 5, 3: 5, 4: 4}
    assert spread_ok(rollout)
    fleet.run(hours=23.5)  # the canary soaks a day
    rollout.refresh_from_db()
    assert (rollout.state, rollout.current_batch) == (RolloutState.CANARY, 0)
    assert Agent.objects.filter(version="1.10.0").count() == 1
    fleet.run(hours=1)
    rollout.refresh_from_db()
    assert (rollout.state, rollout.current_batch) == (RolloutState.ROLLING, 1)
    for batch in (1, 2, 3):  # each batch is watched an hour before the next
        fleet.run(hours=1.5)
        rollout.refresh_from_db()
        assert rollout.current_batch == batch + 1, rollout.last_gate
    fleet.run(hours=1.5)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.COMPLETED
    assert set(Agent.objects.values_list("version", flat=True)) == {"1.10.0"}
    assert set(RolloutTarget.objects.values_list("state", flat=True)) == {"succeeded"}
    assert max(fleet.orders_seen.values()) == 1  # each agent told once
    story = list(
        AuditEvent.objects.filter(target_type="fleet.rollout")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert story == ["rollout.start", *["rollout.batch"] * 4, "rollout.complete"]
    assert AuditEvent.objects.filter(action="agent.upgrade_succeeded").count() == 20
    assert checks(rollout) == {
        "upgraded agents healthy": True,
        "throughput": True,
        "success rate": True,
        "acceptance": True,  # no job judged: not enough to compare, passes
        "cost per accepted job": True,
        "online ratio": True,
    }
    # The wave that ended keeps its counts, and every list of waves reads those (its
    # targets are not counted again).
    assert (rollout.final_targets, rollout.final_done) == (20, 20)
    Rollout.objects.filter(pk=rollout.pk).update(final_done=19)
    listed = rollout_list(fleet.customer).get(pk=rollout.pk)
    assert (listed.n_targets, listed.n_done) == (20, 19)


def checks(rollout: Rollout) -> dict[str, bool]:
    return {c["name"]: c["passed"] for c in rollout.last_gate["checks"]}


def test_agents_outside_the_wave_never_count_against_it(customer):
    """Four agents are offline when the wave starts (the fleet is at 80%, below the 95%
    floor): the wave excludes them, and one more is retired mid-wave. The wave's own
    agents are all online, so it completes, and its gates say so in words."""
    fleet = start_fleet(customer, silent=4)
    rollout = fleet.rollout
    excluded = RolloutTarget.objects.filter(rollout=rollout, state=RolloutTargetState.EXCLUDED)
    assert excluded.count() == 4
    fleet.run(hours=24.5)
    retired = RolloutTarget.objects.filter(rollout=rollout, batch=3).first().agent
    agent_decommission(agent=retired, actor=SYSTEM)
    fleet.agents.pop(retired.pk)
    fleet.run(hours=8)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.COMPLETED, rollout.paused_reason
    assert checks(rollout)["online ratio"] is True
    words = {c["name"]: c["text"] for c in rollout.last_gate["checks"]}
    assert words["online ratio"] == (
        "100% of the wave's 15 agents are online (at or above the floor of 95%)."
    )
    assert Agent.objects.filter(version="1.10.0").count() == 15


def test_the_online_gate_names_the_offline_agents_and_an_owner_can_resume_anyway(fleet):
    rollout = fleet.rollout
    fleet.run(hours=24.5)  # the canary passed; batch 1 is offered
    quiet = sorted(
        RolloutTarget.objects.filter(rollout=rollout, batch=2).values_list("agent_id", flat=True)
    )[:2]
    names = sorted(Agent.objects.filter(pk__in=quiet).values_list("name", flat=True))
    for pk in quiet:
        fleet.agents.pop(pk)  # two agents of a later batch stop heartbeating
    fleet.run(hours=1.5)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.PAUSED
    assert rollout.paused_reason == (
        "90% of the wave's 20 agents are online (below the floor of 95%): "
        f"2 offline — {', '.join(names)}."
    )
    owner = Actor(label="olga")
    rollout_resume(rollout=rollout, actor=owner, reason="known maintenance")
    fleet.run(hours=0.5)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.PAUSED  # resumed, and the gate held it again

    rollout_resume_anyway(rollout=rollout, actor=owner, reason="hosts in maintenance until 18:00")
    fleet.run(hours=0.5)
    rollout.refresh_from_db()
    assert rollout.current_batch == 2  # the waiver let this one step through
    waived = next(c for c in rollout.last_gate["checks"] if c["name"] == "online ratio")
    assert waived["passed"] and waived["text"].startswith("Waived by an owner: 90%")
    resumed = AuditEvent.objects.filter(action="rollout.resume").order_by("id").last()
    assert resumed.changes["reason"][1] == "hosts in maintenance until 18:00"
    assert resumed.changes["gates_waived_for_batch"][1] == 1
    fleet.run(hours=1.5)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.PAUSED  # the next step is gated again

    rollout_set_floor(
        rollout=rollout, actor=owner, reason="two hosts retire", floor=Decimal("0.85")
    )
    rollout_resume(rollout=rollout, actor=owner, reason="floor lowered")
    fleet.run(hours=4)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.COMPLETED, rollout.paused_reason
    floor = AuditEvent.objects.get(action="rollout.floor")
    assert floor.changes["online_ratio_floor"] == ["0.95", "0.85"]
    with pytest.raises(RolloutRefused):
        rollout_set_floor(rollout=rollout, actor=owner, reason="x", floor=Decimal("1.5"))


def test_a_canary_smoke_check_failure_pauses_and_nobody_else_is_offered(fleet):
    fleet.smoke_fails = {fleet.rollout.canary_agent_id}
    fleet.run(hours=3)
    rollout = Rollout.objects.get()
    assert rollout.state == RolloutState.PAUSED
    assert "smoke_check_failed" in rollout.paused_reason
    gate = Anomaly.objects.get(kind=AnomalyKind.ROLLOUT_GATE)
    assert "No other agent is offered 1.10.0" in gate.message
    assert Anomaly.objects.filter(kind=AnomalyKind.ROLLBACK).count() == 1
    assert sum(fleet.orders_seen.values()) == 1  # only the canary was ever told
    assert Agent.objects.filter(version="1.10.0").count() == 0
    fleet.run(hours=30)  # paused waves stay paused
    assert sum(fleet.orders_seen.values()) == 1


def test_a_throughput_drop_in_batch_two_pauses_with_the_numbers(fleet):
    batch_two = set(
        RolloutTarget.objects.filter(rollout=fleet.rollout, batch=2).values_list(
            "agent_id", flat=True
        )
    )
    fleet.slow = batch_two
    fleet.run(hours=24.5 + 1.5)
    assert Rollout.objects.get().current_batch == 2
    fleet.run(hours=1.5)
    rollout = Rollout.objects.get()
    assert rollout.state == RolloutState.PAUSED
    # In words, with the measure, the baseline and the threshold; the raw numbers are
    # in the audit log.
    assert re.fullmatch(
        r"Jobs per hour of this step's agents: [\d.]+ after, [\d.]+ before "
        r"\(-\d+%; at most -20% allowed\)\.",
        rollout.paused_reason,
    ), rollout.paused_reason
    assert checks(rollout)["throughput"] is False
    paused = AuditEvent.objects.get(action="rollout.pause")
    assert paused.changes["throughput_drop"][1] > 0.2
    assert paused.changes["before_rate"][1] > paused.changes["after_rate"][1]
    gate = Anomaly.objects.get(kind=AnomalyKind.ROLLOUT_GATE)
    assert "Jobs per hour" in gate.message
    batch_three = RolloutTarget.objects.filter(rollout=rollout, batch=3)
    assert set(batch_three.values_list("state", flat=True)) == {RolloutTargetState.PENDING}
    # While it goes on, lists count its targets; aborted, it keeps the counts it ended with.
    live = rollout_list(fleet.customer).get(pk=rollout.pk)
    assert (live.final_targets, live.n_targets, live.n_done) == (None, 20, 11)
    rollout_abort(rollout=rollout, actor=SYSTEM, reason="enough")
    rollout.refresh_from_db()
    targets = RolloutTarget.objects.filter(rollout=rollout)
    assert rollout.final_done == targets.filter(state="succeeded").count() == 11
    assert rollout.final_targets == targets.exclude(state="excluded").count() < 20
    listed = rollout_list(fleet.customer).get(pk=rollout.pk)
    assert (listed.n_targets, listed.n_done) == (rollout.final_targets, 11)


def test_a_silent_agent_past_its_deadline_fails_and_pauses(fleet):
    canary = fleet.agents.pop(fleet.rollout.canary_agent_id)  # it never heartbeats again
    fleet.run(hours=1)
    rollout = Rollout.objects.get()
    assert rollout.state == RolloutState.PAUSED
    assert canary.agent.name in rollout.paused_reason
    assert RolloutTarget.objects.get(agent=canary.agent).state == RolloutTargetState.FAILED


def test_operators_skip_the_soak_and_retry_failed_agents(fleet, admin_user):
    staff = Actor(user=admin_user, label="staff")
    fleet.smoke_fails = {fleet.rollout.canary_agent_id}
    fleet.run(hours=0.5)
    rollout_retry_failed(rollout=fleet.rollout, actor=staff, reason="fixed the health check")
    fleet.smoke_fails = set()
    rollout_resume(rollout=fleet.rollout, actor=staff, reason="retry")
    fleet.run(hours=0.5)
    assert Agent.objects.get(pk=fleet.rollout.canary_agent_id).version == "1.10.0"
    rollout_skip_soak(rollout=fleet.rollout, actor=staff, reason="canary looks good")
    fleet.run(hours=0.5)
    rollout = Rollout.objects.get()
    assert (rollout.state, rollout.current_batch) == (RolloutState.ROLLING, 1)
    reasons = AuditEvent.objects.filter(actor_user=admin_user).values_list("action", flat=True)
    assert set(reasons) == {"rollout.retry_failed", "rollout.resume", "rollout.skip_soak"}


def test_whole_fleet_downgrades_and_non_owners_are_refused(customer):
    factories.license(customer)
    release = factories.release("1.10.0")
    activate(customer, version="1.9.3")
    with pytest.raises(RolloutRefused, match="whole fleet at once is refused"):
        rollout_start(customer=customer, release=release, all_at_once=True, actor=SYSTEM)
    with pytest.raises(RolloutRefused, match="whole fleet at once"):
        rollout_start(customer=customer, release=release, batch_fraction=1, actor=SYSTEM)
    older = factories.release("1.9.0")
    with pytest.raises(RolloutRefused, match="never downgrades"):
        rollout_start(customer=customer, release=older, actor=SYSTEM)
    viewer = factories.membership(customer, role="admin").user
    with pytest.raises(NotAllowed):
        rollout_start(customer=customer, release=release, actor=Actor(user=viewer, label="v"))
    rollout_start(customer=customer, release=release, actor=SYSTEM)
    with pytest.raises(RolloutRefused, match="already has a rollout"):
        rollout_start(customer=customer, release=release, actor=SYSTEM)
    assert not Release.objects.filter(yanked=True).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_advances_move_one_step(customer):
    factories.license(customer)
    release = factories.release("1.10.0")
    agents = [activate(customer, version="1.9.3") for _ in range(5)]
    rollout = rollout_start(
        customer=customer, release=release, canary_soak=timedelta(0), actor=SYSTEM
    )
    RolloutTarget.objects.filter(batch=0).update(state="succeeded", reported_at=timezone.now())
    Agent.objects.filter(pk=rollout.canary_agent_id).update(version="1.10.0")
    Rollout.objects.filter(pk=rollout.pk).update(
        watch_started_at=timezone.now() - timedelta(hours=1)
    )
    barrier = threading.Barrier(2)
    results = []

    def advance():
        try:
            barrier.wait()
            results.append(rollout_advance(rollout.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=advance) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rollout.refresh_from_db()
    assert rollout.current_batch == 1
    assert AuditEvent.objects.filter(action="rollout.batch").count() == 1
    assert sorted(results)[0].startswith("batch 1")
    assert len(agents) == 5

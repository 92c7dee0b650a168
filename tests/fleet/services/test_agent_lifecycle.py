"""The agent lifecycle: one table of transitions, and decommission is final — also when
heartbeats, upgrade reports, secret rotations, claims and activations race it."""

import copy
import threading
from collections.abc import Callable
from itertools import product
from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from fleet.choices import AgentStatus, JobStatus, RolloutTargetState, UpgradeOutcome
from fleet.errors import AgentGone, FleetError
from fleet.models import Agent, Job, Rollout, RolloutTarget
from fleet.models.agents import (
    AGENT_TRANSITIONS,
    MAY_CLAIM,
    SEAT_HOLDING,
)
from fleet.selectors import agent_for_secret
from fleet.services.activation import MachineIdentity, agent_activate
from fleet.services.agents import (
    agent_decommission,
    agent_record_heartbeat,
    agent_record_upgrade_result,
    agent_rotate_secret,
)
from fleet.services.audit import SYSTEM
from fleet.services.jobs import job_claim_next
from fleet.services.tokens import token_mint
from fleet.versions import SemVer
from tests import factories

ALLOWED = {(source, t.target) for t in AGENT_TRANSITIONS for source in t.sources}


def test_the_table_reads_as_the_lifecycle():
    assert {
        ("offline", "online"),  # a heartbeat brings it back
        ("online", "upgrading"),  # a heartbeat carries a rollout's order
        ("offline", "upgrading"),
        ("upgrading", "online"),  # its upgrade report
        ("online", "online"),
        ("online", "offline"),  # the stale sweep
        ("upgrading", "offline"),
        ("online", "paused"),  # an operator pauses
        ("offline", "paused"),
        ("draining", "paused"),  # ...or its last running job finishes
        ("online", "draining"),  # an operator drains
        ("offline", "draining"),
        ("paused", "online"),  # an operator resumes, or the pause times out
        ("draining", "online"),
        ("online", "decommissioned"),  # an operator
        ("offline", "decommissioned"),
        ("upgrading", "decommissioned"),
        ("paused", "decommissioned"),
        ("draining", "decommissioned"),
        ("offline", "cleaned_up"),  # beat's stale cleanup (opted in)
        ("paused", "cleaned_up"),
        ("draining", "cleaned_up"),
        ("cleaned_up", "offline"),  # undone within 7 days
        ("cleaned_up", "decommissioned"),  # 7 days later, or an operator
    } == ALLOWED
    # Decommissioned is the one state nothing leaves; it and cleaned up (undone within 7
    # days, then decommissioned) are the ones that hold no seat.
    assert {s for s in AgentStatus.values if not any(s == src for src, _ in ALLOWED)} == {
        "decommissioned"
    }
    assert set(SEAT_HOLDING) == set(AgentStatus.values) - {"decommissioned", "cleaned_up"}
    assert MAY_CLAIM in SEAT_HOLDING


def _fields(target: str) -> dict:
    return {"decommissioned_at": timezone.now()} if target == "decommissioned" else {}


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), list(product(AgentStatus.values, repeat=2)))
def test_every_transition_against_the_database(customer, source, target):
    """Each (from, to) pair: an allowed one moves the row; for a forbidden one, every
    transition that leads to `target` (the only way code writes a status) changes nothing."""
    agent = factories.agent(customer, status=source)
    moves = [t for t in AGENT_TRANSITIONS if t.target == target]
    if (source, target) in ALLOWED:
        move = next(t for t in moves if source in t.sources)
        assert Agent.objects.filter(pk=agent.pk).transition(move, **_fields(target)) == 1
    else:
        for move in moves:
            assert Agent.objects.filter(pk=agent.pk).transition(move, **_fields(target)) == 0
    agent.refresh_from_db()
    assert agent.status == (target if (source, target) in ALLOWED else source)


@pytest.mark.django_db
@pytest.mark.parametrize("target", sorted(SEAT_HOLDING))
def test_the_database_itself_refuses_to_bring_a_decommissioned_agent_back(customer, target):
    agent = factories.agent(customer)
    assert agent_decommission(agent=agent, actor=SYSTEM)
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.filter(pk=agent.pk).update(status=target)  # no transition: a bug
    agent.refresh_from_db()
    assert agent.status == AgentStatus.DECOMMISSIONED


# --- decommission is final, whoever writes next ------------------------------------------


def _stale_writes(agent: Agent) -> dict[str, Callable[[], object]]:
    """Every write an agent can cause, each from a copy of the agent taken before its
    decommission (what a web process that has not polled yet still holds)."""
    v = SemVer("1.0.0")
    return {
        "heartbeat": lambda: agent_record_heartbeat(agent=agent, version=v, running_job_ids=[]),
        "heartbeat, told to upgrade": lambda: agent_record_heartbeat(
            agent=agent, version=v, running_job_ids=[], upgrading=True
        ),
        "heartbeat, a new version": lambda: agent_record_heartbeat(
            agent=agent, version=SemVer("1.1.0"), running_job_ids=[]
        ),
        "upgrade result": lambda: agent_record_upgrade_result(
            agent=agent,
            outcome=UpgradeOutcome.SUCCEEDED,
            from_version=v,
            to_version=SemVer("1.1.0"),
        ),
        "rotate secret": lambda: agent_rotate_secret(agent=agent),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("write", list(_stale_writes(Agent())))
@pytest.mark.parametrize("status_before", sorted(SEAT_HOLDING))
def test_no_write_brings_a_decommissioned_agent_back(customer, write, status_before):
    factories.license(customer, max_agents=1)
    agent = factories.agent(customer, status=status_before)
    stale = Agent.objects.get(pk=agent.pk)
    assert agent_decommission(agent=agent, actor=SYSTEM)
    with pytest.raises(AgentGone):
        _stale_writes(stale)[write]()
    stored = Agent.objects.get(pk=agent.pk)
    assert (stored.status, stored.secret_digest) == ("decommissioned", agent.secret_digest)
    assert stored.version == agent.version


@pytest.mark.django_db
def test_a_claim_by_a_decommissioned_agent_gets_nothing(customer):
    factories.license(customer)
    agent = factories.agent(customer)
    factories.job(customer, role=agent.role)
    stale = Agent.objects.get(pk=agent.pk)
    agent_decommission(agent=agent, actor=SYSTEM)
    assert job_claim_next(agent=stale, max_concurrent=5) is None
    assert Job.objects.get().status == JobStatus.QUEUED


@pytest.mark.django_db
def test_decommission_drops_the_agents_open_rollout_targets(customer):
    rollout = factories.started_wave(customer)
    canary = RolloutTarget.objects.get(rollout=rollout, batch=0)
    assert canary.state == RolloutTargetState.OFFERED
    waiting = RolloutTarget.objects.filter(rollout=rollout, batch__gt=0).first()
    for target in (canary, waiting):
        agent_decommission(agent=target.agent, actor=SYSTEM)
        target.refresh_from_db()
        assert target.state == RolloutTargetState.EXCLUDED
        assert "decommissioned" in target.detail
    others = RolloutTarget.objects.filter(rollout=rollout).exclude(pk__in=[canary.pk, waiting.pk])
    assert others.exists()
    assert not others.filter(state=RolloutTargetState.EXCLUDED).exists()


# --- the race, hundreds of times ---------------------------------------------------------

ROUNDS = 300
MAX_AGENTS = 2


class Round:
    """One customer at its seat limit: agent A (about to be decommissioned, in a status
    that varies by round) and B, two queued jobs, two fresh tokens for newcomers."""

    def __init__(self, n: int) -> None:
        customer = factories.customer()
        factories.license(customer, max_agents=MAX_AGENTS, max_concurrent_tasks_per_agent=2)
        status = sorted(SEAT_HOLDING)[n % len(SEAT_HOLDING)]
        self.a = factories.agent(customer, status=status, version="1.0.0")
        factories.agent(customer)
        for _ in range(2):
            factories.job(customer, role=self.a.role)
        self.tokens = [token_mint(customer=customer, actor=SYSTEM)[1] for _ in range(2)]
        self.customer = customer
        self.secrets: list[str] = []  # what rotations handed out

    def stale(self) -> Agent:
        """The agent as a web process that authenticated it before the decommission has it."""
        return copy.copy(self.a)


def _racers(r: Round) -> list[Callable[[], object]]:
    v = SemVer("1.0.0")

    def newcomer(i: int) -> object:
        machine = MachineIdentity(f"new-{r.customer.pk}-{i}", "new", "a", "agentina@x", "/x")
        return agent_activate(token=r.tokens[i], machine=machine, role="coder", version=v)

    return [
        lambda: agent_decommission(agent=r.stale(), actor=SYSTEM),
        lambda: agent_record_heartbeat(agent=r.stale(), version=v, running_job_ids=[]),
        lambda: agent_record_heartbeat(
            agent=r.stale(), version=v, running_job_ids=[], upgrading=True
        ),
        lambda: agent_record_upgrade_result(
            agent=r.stale(), outcome=UpgradeOutcome.SUCCEEDED, from_version=v, to_version=v
        ),
        lambda: r.secrets.append(agent_rotate_secret(agent=r.stale())),
        lambda: job_claim_next(agent=r.stale(), max_concurrent=2),
        lambda: newcomer(0),
        lambda: newcomer(1),
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_decommission_racing_every_agent_write_never_resurrects_nor_overfills():
    """Eight connections at once, ROUNDS times: decommission against heartbeats (steady
    and told to upgrade), an upgrade report, a secret rotation, a claim and two newcomers
    activating. After each round: A is decommissioned (with its time), none of its
    secrets works, it holds no job, and the customer never has more than MAX_AGENTS
    agents holding a seat."""
    racers = 8  # len(_racers(...))
    start, done = threading.Barrier(racers + 1), threading.Barrier(racers + 1)
    current: list[Round] = []
    unexpected: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(ROUNDS):
                start.wait()
                try:
                    _racers(current[-1])[i]()
                except FleetError:
                    pass  # refused (agent gone, license full): what a loser may get
                except BaseException as exc:
                    unexpected.append(exc)
                done.wait()
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(racers)]
    for t in threads:
        t.start()
    for n in range(ROUNDS):
        r = Round(n)
        assert len(_racers(r)) == racers
        current.append(r)
        start.wait()
        done.wait(timeout=60)
        a = Agent.objects.get(pk=r.a.pk)
        assert (a.status, a.decommissioned_at is not None) == ("decommissioned", True), n
        assert Agent.objects.for_customer(r.customer).holding_seat().count() <= MAX_AGENTS, n
        assert not Job.objects.filter(agent_id=a.pk, status=JobStatus.RUNNING).exists(), n
        assert all(agent_for_secret(secret) is None for secret in r.secrets), n
        assert not unexpected, unexpected
    for t in threads:
        t.join(timeout=10)


def test_the_readme_shows_the_table_the_code_uses():
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    rows = {
        line
        for line in readme.splitlines()
        if line.startswith("| `") and "` |" in line and line.count("|") == 5
    }
    for t in AGENT_TRANSITIONS:
        sources = ", ".join(s for s in AgentStatus.values if s in t.sources)
        assert f"| `{t.name}` | {sources} | {t.target} | {t.by} |" in rows, t.name


@pytest.mark.django_db
def test_a_wave_goes_on_past_an_upgraded_agent_that_was_decommissioned(customer):
    """Its target stays succeeded; the gate judges the agents still in the fleet."""
    from datetime import timedelta

    from fleet.services.rollouts import rollout_advance

    rollout = factories.started_wave(customer)
    canary = RolloutTarget.objects.get(rollout=rollout, batch=0)
    canary.state = RolloutTargetState.SUCCEEDED
    canary.save(update_fields=["state"])
    Agent.objects.filter(pk=canary.agent_id).update(
        version="1.1.0", last_heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    assert agent_decommission(agent=canary.agent, actor=SYSTEM)  # then it went silent
    assert rollout_advance(rollout.pk) == "watching"
    Rollout.objects.filter(pk=rollout.pk).update(skip_soak=True)
    assert rollout_advance(rollout.pk).startswith("batch 1 of")

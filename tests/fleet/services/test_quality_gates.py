"""Wave gates on quality and cost: a release whose acceptance halves (and whose cost per
accepted job doubles) pauses the wave with the numbers in words; too few judged jobs is
no verdict either way."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import JobStatus, RolloutState, RolloutTargetState
from fleet.models import Agent, Job, Rollout, RolloutTarget
from fleet.services.rollouts import rollout_advance
from fleet.services.rollouts.engine import _gate
from tests import factories

pytestmark = pytest.mark.django_db


def judged_jobs(customer, agent_id, version, *, accepted, rejected, at):
    Job.objects.bulk_create(
        factories.job_row(
            customer,
            status=JobStatus.SUCCEEDED,
            agent_id=agent_id,
            agent_version=version,
            finished_at=at - timedelta(minutes=i),
            cost_usd=Decimal("1.25"),
            verdict="accepted" if i < accepted else "rejected",
            verdict_at=at,
        )
        for i in range(accepted + rejected)
    )


def canary_upgraded(customer, start):
    """A wave to 1.1.0 whose canary upgraded 5 minutes in, with a day of judged work on
    1.0.0 before it: 8 of 10 accepted, $1.25 a job."""
    with time_machine.travel(start, tick=False):
        rollout = factories.started_wave(customer)
    canary = RolloutTarget.objects.get(rollout=rollout, batch=0)
    RolloutTarget.objects.filter(pk=canary.pk).update(
        state=RolloutTargetState.SUCCEEDED, reported_at=start + timedelta(minutes=5)
    )
    Agent.objects.filter(pk=canary.agent_id).update(version="1.1.0")
    judged_jobs(customer, canary.agent_id, "1.0.0", accepted=8, rejected=2, at=start)
    return rollout, canary.agent_id


def test_a_release_whose_acceptance_halves_pauses_the_wave_in_words(customer):
    start = timezone.now().replace(microsecond=0)
    rollout, canary = canary_upgraded(customer, start)
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        Agent.objects.update(last_heartbeat_at=timezone.now())
        assert rollout_advance(rollout.pk) == "watching"
    # A day on 1.1.0: 4 of 10 accepted at the same cost a job.
    later = start + timedelta(hours=24, minutes=15)
    judged_jobs(customer, canary, "1.1.0", accepted=4, rejected=6, at=later - timedelta(hours=1))
    with time_machine.travel(later, tick=False):
        Agent.objects.update(last_heartbeat_at=timezone.now())
        assert rollout_advance(rollout.pk) == "paused: acceptance"
    rollout = Rollout.objects.get()
    assert rollout.state == RolloutState.PAUSED
    assert rollout.paused_reason == (
        "Acceptance of the upgraded agents' work: 40% on 1.1.0 (4 of 10 judged), 80% before "
        "(8 of 10): -50%; at most -20% allowed."
    )
    cost = next(c for c in rollout.last_gate["checks"] if c["name"] == "cost per accepted job")
    assert not cost["passed"]
    assert cost["text"] == (
        "Cost per accepted job: $3.12 on 1.1.0, $1.56 before (2.0 times as much; at most "
        "1.5 times allowed)."
    )  # $12.50 / 4 and $12.50 / 8, as a person would write them


def test_too_few_judged_jobs_is_no_verdict(customer):
    start = timezone.now().replace(microsecond=0)
    rollout, canary = canary_upgraded(customer, start)
    judged_jobs(customer, canary, "1.1.0", accepted=0, rejected=4, at=start + timedelta(hours=1))
    gate = _gate(rollout, start + timedelta(hours=2))
    acceptance = next(c for c in gate.checks if c.name == "acceptance")
    assert acceptance.passed
    assert acceptance.text == (
        "Not enough judged jobs to compare: 4 on 1.1.0, 10 before (5 needed on each side)."
    )

"""The gate before a wave's next step, over a table of fleets: it judges the wave's own
agents only (never one the wave excluded or one retired since), says each check in
words with its measure, threshold and the agents behind a failure, and an owner's
waiver passes one step only. The demo's bad day is the first row."""

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AgentStatus, RolloutTargetState
from fleet.models import Agent, RolloutTarget
from fleet.services.rollouts.engine import _gate
from tests import factories

pytestmark = pytest.mark.django_db
SILENT = timedelta(hours=1)


def wave_with(customer, *, offline_outside=0, offline_inside=0, retired_inside=0, waived=False):
    """A started wave of 8 agents, its canary upgraded; then agents outside it (added
    after it started: not its members) go silent, and some of its members go silent or
    are retired."""
    rollout = factories.started_wave(customer)
    canary = RolloutTarget.objects.get(rollout=rollout, batch=0)
    RolloutTarget.objects.filter(pk=canary.pk).update(state=RolloutTargetState.SUCCEEDED)
    Agent.objects.filter(pk=canary.agent_id).update(version="1.1.0")
    now = timezone.now()
    for _ in range(offline_outside):
        factories.agent(customer, last_heartbeat_at=now - SILENT, status=AgentStatus.OFFLINE)
    members = list(
        RolloutTarget.objects.filter(rollout=rollout, batch__gt=0).values_list(
            "agent_id", flat=True
        )
    )
    Agent.objects.filter(pk__in=members[:offline_inside]).update(last_heartbeat_at=now - SILENT)
    retire = members[offline_inside : offline_inside + retired_inside]
    Agent.objects.filter(pk__in=retire).update(
        status=AgentStatus.DECOMMISSIONED, decommissioned_at=now, last_heartbeat_at=now - SILENT
    )
    if waived:
        rollout.gates_waived_batch = rollout.current_batch
    return rollout


CASES = {
    "the demo's bad day: 11 offline outside the wave": (
        {"offline_outside": 11},
        True,
        "100% of the wave's 8 agents are online (at or above the floor of 95%).",
    ),
    "one of the wave's 8 offline": (
        {"offline_inside": 1},
        False,
        "88% of the wave's 8 agents are online (below the floor of 95%): 1 offline — ",
    ),
    "two of the wave's agents retired since it started": (
        {"retired_inside": 2},
        True,
        "100% of the wave's 6 agents are online (at or above the floor of 95%).",
    ),
    "offline inside, waived by an owner for this step": (
        {"offline_inside": 1, "waived": True},
        True,
        "Waived by an owner: 88% of the wave's 8 agents are online (below the floor",
    ),
}


@pytest.mark.parametrize(("fleet", "passed", "words"), CASES.values(), ids=CASES.keys())
def test_the_online_gate_over_a_table_of_fleets(customer, fleet, passed, words):
    rollout = wave_with(customer, **fleet)
    gate = _gate(rollout, timezone.now())
    online = next(c for c in gate.checks if c.name == "online ratio")
    assert online.passed is passed
    assert online.text.startswith(words), online.text
    assert gate.passed is passed
    if not passed:
        silent = Agent.objects.filter(last_heartbeat_at__lt=timezone.now() - SILENT / 2)
        assert all(a.name in online.text for a in silent.filter(rollout_targets__isnull=False))
    assert gate.as_json(timezone.now())["checks"][0]["name"] == "upgraded agents healthy"

"""Pinning an agent to an update channel or an exact release: update_available follows the
pin from the next heartbeat (still read from the kept agent), waves respect it."""

import pytest

from fleet.choices import Channel
from fleet.models import AuditEvent, Release, RolloutTarget
from fleet.services.audit import SYSTEM
from fleet.services.releases import release_yank
from fleet.services.rollouts import rollout_start
from tests import factories
from tests.fleet.api.conftest import activate, beat

pytestmark = pytest.mark.django_db


def pin(key_api, agent, **body):
    return key_api.put(f"/agents/{agent.agent.pk}/update-pin", body)


def hint(agent):
    return beat(agent).json()["update_available"]


def test_update_available_follows_the_channel_then_the_version_pin(
    agent, key_api, django_assert_num_queries
):
    factories.release("2.0.0-beta.1", channel=Channel.BETA)
    assert hint(agent) == {"version": "1.10.0", "channel": "stable"}
    answer = pin(key_api, agent, channel="beta")
    assert answer.status_code == 200, answer.content
    assert (answer.json()["update_channel"], answer.json()["pinned_version"]) == ("beta", None)
    assert hint(agent) == {"version": "2.0.0-beta.1", "channel": "beta"}
    with django_assert_num_queries(1):  # the pin is in the kept agent: a steady beat
        assert hint(agent) == {"version": "2.0.0-beta.1", "channel": "beta"}
    pin(key_api, agent, channel="beta", version="1.10.0")  # a version beats the channel
    assert hint(agent) == {"version": "1.10.0", "channel": "beta"}
    pin(key_api, agent, version="1.9.3")  # held where it is: nothing newer is offered
    assert hint(agent) is None
    assert agent.api.get("/agents/me").json()["update_available"] is None
    pin(key_api, agent)  # lifted
    assert hint(agent) == {"version": "1.10.0", "channel": "stable"}
    changes = [
        e.changes for e in AuditEvent.objects.filter(action="agent.update_pin").order_by("id")
    ]
    assert changes[0] == {"update_channel": [None, "beta"], "pinned_version": [None, None]}
    assert len(changes) == 4


def test_pinning_the_same_twice_is_one_change(agent, key_api):
    pin(key_api, agent, version="1.10.0")
    pin(key_api, agent, version="1.10.0")
    assert AuditEvent.objects.filter(action="agent.update_pin").count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"version": "3.0.0"},  # never published
        {"version": "../x"},
        {"version": "1.10.0\x00"},
        {"version": "1" * 100},
        {"channel": "nightly"},
        {"channel": 7},
        {"version": "1.10.0", "extra": 1},
    ],
)
def test_a_pin_to_what_does_not_exist_is_refused(agent, key_api, body):
    refused = pin(key_api, agent, **body)
    assert refused.status_code == 422, body
    assert refused.json()["code"] in {"invalid_input", "invalid_version"}
    assert not AuditEvent.objects.filter(action="agent.update_pin").exists()


def test_a_yanked_release_cannot_be_pinned(agent, key_api):
    release_yank(release=Release.objects.get(version="1.10.0"), reason="bad", actor=SYSTEM)
    assert pin(key_api, agent, version="1.10.0").status_code == 422


def test_another_customers_agent_is_404(key_api, other_customer):
    factories.license(other_customer, max_agents=2)
    stranger = activate(other_customer)
    refused = pin(key_api, stranger, channel="beta")
    assert refused.status_code == 404
    assert stranger.refresh().update_channel == ""


def test_a_wave_leaves_agents_pinned_elsewhere_out(licensed, key_api):
    agents = [activate(licensed) for _ in range(4)]
    pin(key_api, agents[0], version="1.9.3")
    beta = factories.release("2.0.0-beta.1", channel=Channel.BETA)
    pin(key_api, agents[1], channel="stable")
    rollout = rollout_start(
        customer=licensed, release=Release.objects.get(version="1.10.0"), actor=SYSTEM
    )
    members = set(RolloutTarget.objects.filter(rollout=rollout).values_list("agent_id", flat=True))
    assert members == {a.agent.pk for a in agents[1:]}
    rollout.delete()
    beta_wave = rollout_start(customer=licensed, release=beta, actor=SYSTEM)
    members = set(
        RolloutTarget.objects.filter(rollout=beta_wave).values_list("agent_id", flat=True)
    )
    assert members == {agents[2].agent.pk, agents[3].agent.pk}


def test_a_decommissioned_agent_cannot_be_pinned(key_api, licensed):
    from fleet.services.agents import agent_decommission

    retired = factories.agent(licensed)
    agent_decommission(agent=retired, actor=SYSTEM)
    answer = key_api.put(f"/agents/{retired.pk}/update-pin", {"channel": "beta"})
    assert (answer.status_code, answer.json()["code"]) == (409, "agent_state_conflict")


def test_an_agent_pinned_elsewhere_during_a_wave_is_not_offered_its_next_step(licensed, key_api):
    from datetime import timedelta

    from fleet.choices import RolloutTargetState
    from fleet.services.rollouts import rollout_advance

    agents = [activate(licensed) for _ in range(3)]
    rollout = rollout_start(
        customer=licensed,
        release=Release.objects.get(version="1.10.0"),
        actor=SYSTEM,
        canary_soak=timedelta(0),
    )
    later = RolloutTarget.objects.filter(rollout=rollout, batch__gt=0).order_by("batch", "pk")
    pinned = next(a for a in agents if a.agent.pk == later[0].agent_id)
    assert pin(key_api, pinned, version="1.9.3").status_code == 200  # after the wave began
    canary = next(a for a in agents if a.agent.pk == rollout.canary_agent_id)
    beat(canary)
    canary.api.post(
        "/agents/upgrade-result",
        {"outcome": "succeeded", "from_version": "1.9.3", "to_version": "1.10.0"},
    )
    assert rollout_advance(rollout.pk).startswith("batch 1 of")
    target = RolloutTarget.objects.get(rollout=rollout, agent_id=pinned.agent.pk)
    assert target.state == RolloutTargetState.EXCLUDED
    assert beat(pinned).json()["upgrade"] is None  # its pin is never passed

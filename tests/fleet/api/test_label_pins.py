"""Pins by label: a customer's rules pin every agent with a label to a channel or a
version (the first rule that matches); an agent's own pin comes first. Heartbeats follow
them without another query; waves respect them."""

import pytest

from fleet.choices import Channel
from fleet.models import AuditEvent, Release, RolloutTarget
from fleet.services.audit import SYSTEM
from fleet.services.rollouts import rollout_start
from tests import factories
from tests.fleet.api.conftest import activate, beat

pytestmark = pytest.mark.django_db


def patch_settings(key_api, body):
    return key_api.client.patch(
        "/api/v1/settings",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key_api.secret}",
    )


def hint(agent):
    return beat(agent).json()["update_available"]


def test_agents_with_a_label_follow_its_rule(licensed, key_api, django_assert_num_queries):
    factories.release("2.0.0-beta.1", channel=Channel.BETA)
    early = activate(licensed, labels={"pool": "early"})
    held = activate(licensed, labels={"tier": "prod"})
    plain = activate(licensed)
    rules = [
        {"labels": {"pool": "early"}, "channel": "beta"},
        {"labels": {"tier": "prod"}, "version": "1.9.3"},
    ]
    answer = patch_settings(key_api, {"update_pins": rules})
    assert answer.status_code == 200, answer.content
    assert answer.json()["update_pins"] == [
        {"labels": {"pool": "early"}, "channel": "beta", "version": None},
        {"labels": {"tier": "prod"}, "channel": None, "version": "1.9.3"},
    ]
    assert hint(early) == {"version": "2.0.0-beta.1", "channel": "beta"}
    assert hint(held) is None  # held at 1.9.3
    assert hint(plain) == {"version": "1.10.0", "channel": "stable"}
    with django_assert_num_queries(1):  # the rules are in the kept agent's facts
        assert hint(early) == {"version": "2.0.0-beta.1", "channel": "beta"}
    # An agent's own pin replaces its labels' (its channel is its license's again).
    key_api.put(f"/agents/{early.agent.pk}/update-pin", {"version": "1.10.0"})
    assert hint(early) == {"version": "1.10.0", "channel": "stable"}
    assert AuditEvent.objects.filter(action="customer.update").exists()
    # Waves leave the agents the rules hold elsewhere out.
    rollout = rollout_start(
        customer=licensed, release=Release.objects.get(version="1.10.0"), actor=SYSTEM
    )
    members = set(RolloutTarget.objects.filter(rollout=rollout).values_list("agent_id", flat=True))
    assert members == {early.agent.pk, plain.agent.pk}


@pytest.mark.parametrize(
    "rules",
    [
        [{"labels": {}, "channel": "beta"}],  # a rule must name a label
        [{"labels": {"bad key": "x"}, "channel": "beta"}],
        [{"labels": {"pool": "a"}}],  # pins nothing
        [{"labels": {"pool": "a"}, "version": "9.9.9"}],  # never published
        [{"labels": {"pool": "a"}, "channel": "nightly"}],
        [{"labels": {"pool": "a"}, "channel": "beta"}] * 21,
        "beta",
    ],
)
def test_a_malformed_rule_is_422_and_changes_nothing(licensed, key_api, rules):
    answer = patch_settings(key_api, {"update_pins": rules})
    assert answer.status_code == 422, answer.content
    licensed.refresh_from_db()
    assert licensed.update_pins == []

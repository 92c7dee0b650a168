"""Invariants the database itself enforces, whatever code writes the rows."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from fleet.choices import AgentStatus, RolloutState
from fleet.models import Anomaly
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_second_agent_for_one_token_is_refused_by_the_database(customer):
    token = factories.token(customer)
    factories.agent(customer, activation_token=token)
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.agent(customer, activation_token=token)


def test_unit_name_and_state_dir_are_unique_per_host(customer):
    host = factories.host(customer)
    factories.agent(customer, host, unit_name="agentina@a", state_dir="/srv/a")
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.agent(customer, host, unit_name="agentina@a", state_dir="/srv/b")
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.agent(customer, host, unit_name="agentina@b", state_dir="/srv/a")
    # Another host may reuse both.
    factories.agent(customer, factories.host(customer), unit_name="agentina@a", state_dir="/srv/a")


def test_a_decommissioned_agent_frees_its_unit_for_a_successor(customer):
    host = factories.host(customer)
    old = factories.agent(customer, host, unit_name="agentina@a", state_dir="/srv/a")
    old.status, old.decommissioned_at = AgentStatus.DECOMMISSIONED, timezone.now()
    old.save()
    factories.agent(customer, host, unit_name="agentina@a", state_dir="/srv/a")


def test_one_active_rollout_per_customer(customer, other_customer):
    release = factories.release("2.0.0")
    factories.rollout(customer, release, state=RolloutState.CANARY)
    factories.rollout(customer, release, state=RolloutState.ABORTED)
    factories.rollout(customer, release, state=RolloutState.COMPLETED)
    for state in (RolloutState.ROLLING, RolloutState.PAUSED, RolloutState.CANARY):
        with pytest.raises(IntegrityError), transaction.atomic():
            factories.rollout(customer, release, state=state)
    factories.rollout(other_customer, release, state=RolloutState.ROLLING)


def test_rollout_refuses_whole_fleet_batches(customer):
    release = factories.release("2.0.0")
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.rollout(customer, release, batch_fraction=1)


def test_one_current_license_per_customer(customer):
    factories.license(customer)
    factories.license(customer, max_agents=3, is_current=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.license(customer, max_agents=3, is_current=True)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_agents": 0},
        {"max_agents": 1, "max_concurrent_tasks_per_agent": 0},
        {"max_agents": 1, "valid_until": timezone.now() - timedelta(days=400)},
    ],
)
def test_license_values_are_checked_by_the_database(customer, fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.license(customer, **fields)


def test_one_open_anomaly_per_fingerprint(customer):
    factories.anomaly(customer, kind="agent_offline", fingerprint="f", message="m")
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.anomaly(customer, kind="agent_offline", fingerprint="f", message="m")
    Anomaly.objects.filter(fingerprint="f").update(resolved_at=timezone.now())
    factories.anomaly(customer, kind="agent_offline", fingerprint="f", message="m")

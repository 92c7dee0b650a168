from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import RolloutState, RolloutTargetState
from fleet.errors import NotFound
from fleet.models import Rollout, RolloutTarget
from fleet.selectors import rollout_batches, rollout_get, rollout_list, upgrade_history
from tests import factories

pytestmark = pytest.mark.django_db
PENDING, OFFERED = RolloutTargetState.PENDING, RolloutTargetState.OFFERED
SUCCEEDED, FAILED = RolloutTargetState.SUCCEEDED, RolloutTargetState.FAILED
EXCLUDED = RolloutTargetState.EXCLUDED


def rollout(customer, version, *, state=RolloutState.COMPLETED, days_ago=0):
    created = Rollout.objects.create(
        customer=customer, release=factories.release(version), state=state
    )
    Rollout.objects.filter(pk=created.pk).update(
        created_at=timezone.now() - timedelta(days=days_ago)
    )
    return created


def targets(rollout, *batches_and_states):
    """A new agent of the rollout's customer in each (batch, state)."""
    for batch, state in batches_and_states:
        RolloutTarget.objects.create(
            rollout=rollout,
            agent=factories.agent(rollout.customer),
            batch=batch,
            state=state,
            from_version="1.0.0",
        )


def test_batches_show_their_progress_canary_first_excluded_last_in_one_query(
    customer, django_assert_num_queries
):
    wave = rollout(customer, "2.0.0", state=RolloutState.ROLLING)
    targets(
        wave,
        (None, EXCLUDED),
        (2, PENDING),
        (2, PENDING),
        (1, SUCCEEDED),
        (1, SUCCEEDED),
        (1, OFFERED),
        (1, FAILED),
        (0, SUCCEEDED),
    )
    other = rollout(customer, "1.5.0")
    targets(other, (1, PENDING))

    with django_assert_num_queries(1):
        batches = rollout_batches(wave)

    progress = [(b.label, b.total, b.succeeded, b.counts) for b in batches]
    assert progress == [
        ("Canary", 1, 1, {SUCCEEDED: 1}),
        ("Batch 1", 4, 2, {SUCCEEDED: 2, OFFERED: 1, FAILED: 1}),
        ("Batch 2", 2, 0, {PENDING: 2}),
        ("Excluded", 1, 0, {EXCLUDED: 1}),
    ]


def test_a_rollout_without_targets_has_no_batches(customer):
    assert rollout_batches(rollout(customer, "2.0.0", state=RolloutState.ABORTED)) == []


def test_the_list_is_the_customers_rollouts_newest_first_with_their_progress(
    customer, other_customer
):
    old = rollout(customer, "1.0.0", days_ago=10)
    new = rollout(customer, "1.1.0", days_ago=1)
    targets(new, (0, SUCCEEDED), (1, SUCCEEDED), (1, PENDING), (None, EXCLUDED))
    rollout(other_customer, "1.2.0")

    rows = [(r.pk, r.n_targets, r.n_done) for r in rollout_list(customer)]
    assert rows == [(new.pk, 3, 2), (old.pk, 0, 0)]
    assert rollout_get(customer, new.pk).n_done == 2


def test_another_customers_rollout_is_as_missing_as_a_deleted_one(customer, other_customer):
    theirs = rollout(other_customer, "1.2.0")
    with pytest.raises(NotFound) as foreign:
        rollout_get(customer, theirs.pk)
    with pytest.raises(NotFound) as missing:
        rollout_get(customer, theirs.pk + 1000)
    assert foreign.value.as_body() == missing.value.as_body()


def test_an_agents_upgrade_history_is_its_own_newest_rollout_first(customer):
    agent, bystander = factories.agent(customer), factories.agent(customer)
    old = rollout(customer, "1.0.0", days_ago=10)
    new = rollout(customer, "1.1.0", days_ago=1)
    for wave, state in ((old, SUCCEEDED), (new, FAILED)):
        RolloutTarget.objects.create(
            rollout=wave, agent=agent, batch=1, state=state, from_version="0.9.0"
        )
        RolloutTarget.objects.create(
            rollout=wave, agent=bystander, batch=1, state=SUCCEEDED, from_version="0.9.0"
        )

    history = [(t.rollout.release.version, t.state) for t in upgrade_history(agent)]
    assert history == [("1.1.0", FAILED), ("1.0.0", SUCCEEDED)]

"""What an operator may do to a wave, by its state: one table (Rollout.ACTIONS) that the
services enforce and the portal offers."""

from decimal import Decimal
from itertools import product

import pytest

from fleet.choices import RolloutAction, RolloutState
from fleet.errors import RolloutStateError
from fleet.models import Rollout
from fleet.services.audit import SYSTEM
from portal.views.rollouts import STEER_ACTIONS
from tests import factories

pytestmark = pytest.mark.django_db

ACTIVE = [RolloutState.CANARY, RolloutState.ROLLING, RolloutState.PAUSED]
FINISHED = [RolloutState.COMPLETED, RolloutState.ABORTED]


def test_the_table_reads_as_the_product_behaves():
    assert Rollout.ACTIONS == {
        "canary": ("pause", "skip_soak", "retry_failed", "set_floor", "abort"),
        "rolling": ("pause", "skip_soak", "retry_failed", "set_floor", "abort"),
        "paused": ("resume", "resume_anyway", "retry_failed", "set_floor", "abort"),
    }
    assert set(STEER_ACTIONS) == set(RolloutAction)  # the portal steers with every action


@pytest.mark.parametrize(("state", "action"), list(product(ACTIVE + FINISHED, RolloutAction)))
def test_each_service_does_exactly_what_the_table_allows(customer, state, action):
    rollout = factories.started_wave(customer)
    Rollout.objects.filter(pk=rollout.pk).update(state=state, paused_from=RolloutState.CANARY)
    rollout.refresh_from_db()
    steer = STEER_ACTIONS[action]
    extra = {"floor": Decimal("0.5")} if action == RolloutAction.SET_FLOOR else {}
    if action in Rollout.ACTIONS.get(state, ()):
        steer(rollout=rollout, actor=SYSTEM, reason="test", **extra)
    else:
        with pytest.raises(RolloutStateError, match="not possible on a"):
            steer(rollout=rollout, actor=SYSTEM, reason="test", **extra)
        rollout.refresh_from_db()
        assert rollout.state == state  # refused: nothing changed

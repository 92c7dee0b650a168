"""The simulated fleet enrolls as many agents as it is asked for, though the API mints at
most 100 tokens a request (`make soak` enrolls 1,000)."""

import pytest

from agentina.simulate import TOKENS_PER_CALL, Fleet
from fleet import policy
from fleet.models import ActivationToken, Agent
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def test_more_agents_than_one_mint_allows_are_enrolled_in_batches(live_server, customer, tmp_path):
    assert TOKENS_PER_CALL == policy.TOKENS_PER_MINT_MAX
    factories.license(customer, max_agents=101)
    _, key = api_key_mint(customer=customer, name="simulator", actor=SYSTEM)
    fleet = Fleet(live_server.url, key, tmp_path / "agents", log=lambda m: None)
    try:
        assert len(fleet.enroll(101)) == 101
    finally:
        fleet.halt()
    assert Agent.objects.filter(customer=customer).count() == 101
    assert ActivationToken.objects.filter(customer=customer).count() == 101

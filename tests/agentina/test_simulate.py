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


def test_simulated_jobs_cost_by_role_ask_now_and_then_and_a_worse_release_costs_double():
    import random
    import threading

    from agentina.runner import ANSWER, QUESTION, USAGE
    from agentina.simulate import demo_executor
    from agentina.state import AgentState

    def run(version: str, role: str, payload: dict, question_rate: float = 0.0):
        state = AgentState("http://cp", 1, "s", role, version, "u", "m", "h")
        executor = demo_executor(
            state,
            failure_rate=0,
            seconds=(0, 0),
            rng=random.Random(3),
            question_rate=question_rate,
            worse_version="1.10.0",
        )
        return executor(payload, threading.Event())

    [coder] = run("1.9.3", "coder", {})[1][USAGE]
    [worse] = run("1.10.0", "coder", {})[1][USAGE]
    [indexer] = run("1.9.3", "indexer", {})[1][USAGE]
    assert worse["input_tokens"] == 2 * coder["input_tokens"]
    assert worse["cost_usd"] > 1.9 * coder["cost_usd"] > 0.1 > indexer["cost_usd"]
    assert QUESTION in run("1.9.3", "coder", {}, question_rate=1)[1]
    assert QUESTION not in run("1.9.3", "coder", {ANSWER: "yes"}, question_rate=1)[1]

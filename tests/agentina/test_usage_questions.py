"""The reference agent on the in-process server: it reports its executor's usage, says
what it is doing, asks a person and goes on with the answer, and idles at a budget cap."""

import sys
from decimal import Decimal

import pytest

from agentina.client import Client
from agentina.outbox import Outbox
from agentina.runner import Runner, command_executor
from agentina.state import AgentState
from fleet.choices import AgentActivity
from fleet.models import Agent, Job, Question
from fleet.services.audit import SYSTEM
from fleet.services.budgets import CapSetting, budget_caps_set
from fleet.services.questions import question_answer
from fleet.services.tokens import token_mint
from tests import factories
from tests.agentina.test_activation_recovery import activate
from tests.agentina.test_outbox import Clock, FaultyServer

pytestmark = pytest.mark.django_db

USAGE = [
    {"model": "claude-sonnet-4", "provider": "anthropic", "input_tokens": 1200, "cost_usd": 0.05}
]


@pytest.fixture
def token(customer) -> str:
    factories.license(customer, max_agents=5)
    return token_mint(customer=customer, actor=SYSTEM)[1]


@pytest.fixture
def server(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)
    return FaultyServer()


def runner(tmp_path, server, executor) -> Runner:
    agent = AgentState.load(tmp_path / "state")
    return Runner(
        Client("http://cp.test", agent.secret, server, retries=0, sleep=lambda s: None),
        agent,
        executor,
        log=lambda m: None,
        outbox=Outbox.in_state_dir(tmp_path / "state"),
        clock=Clock(),
    )


def finish(r: Runner) -> None:
    for held in list(r.running.values()):
        held.future.result(timeout=10)
    r.step()


def test_a_commands_usage_line_is_reported_and_dropped_from_the_result(
    tmp_path,
    token,
    server,
    customer,
):
    activate(tmp_path, token, server)
    script = tmp_path / "work.py"
    script.write_text(
        "import json\n"
        f"print(json.dumps({{'agentina_usage': {USAGE!r}}}))\n"
        "print(json.dumps({'pr': 12}))\n"
    )
    r = runner(tmp_path, server, command_executor(f"{sys.executable} {script}"))
    factories.job(customer, role="coder")
    r.start()
    r.step()
    assert Agent.objects.get().activity == AgentActivity.IDLE  # said before it claimed
    finish(r)
    job = Job.objects.get()
    assert (job.status, job.result, job.cost_usd, job.input_tokens) == (
        "succeeded",
        {"pr": 12},
        Decimal("0.05"),
        1200,
    )
    assert job.wall_seconds is not None
    assert Agent.objects.get().activity == AgentActivity.IDLE


def test_the_agent_asks_waits_and_goes_on_with_the_answer(tmp_path, token, server, customer):
    activate(tmp_path, token, server)
    runs = []

    def execute(payload):
        runs.append(payload)
        if "agentina_answer" not in payload:
            return True, {"agentina_question": {"text": "Which branch?", "options": ["main"]}}
        return True, {"branch": payload["agentina_answer"]}

    r = runner(tmp_path, server, execute)
    factories.job(customer, role="coder")
    r.start()
    r.step()
    finish(r)  # the executor asked: the runner asks the server, and holds the job
    question = Question.objects.get()
    assert question.text == "Which branch?" and r.held_job_ids() == [question.job_id]
    r.step()
    assert Agent.objects.get().activity == AgentActivity.WAITING_FOR_INPUT
    question_answer(customer=customer, question_id=question.pk, answer="dev", actor=SYSTEM)
    r.step()  # the heartbeat carries the answer: acknowledged, the job runs again
    finish(r)
    job = Job.objects.get()
    assert (job.status, job.result) == ("succeeded", {"branch": "dev"})
    assert Question.objects.get().acked_at is not None
    assert [p.get("agentina_answer") for p in runs] == [None, "dev"]


def test_at_a_budget_cap_the_agent_idles_and_says_so(tmp_path, token, server, customer):
    activate(tmp_path, token, server)
    budget_caps_set(
        customer=customer,
        caps=[CapSetting("customer", "", "day", Decimal("0"), None)],
        actor=SYSTEM,
    )
    factories.job(customer, role="coder")
    r = runner(tmp_path, server, lambda payload: (True, {}))
    r.start()
    r.step()  # the claim answers 204 budget_exhausted
    assert r.budget_exhausted and not r.running
    r.step()
    assert Agent.objects.get().activity == AgentActivity.BUDGET_EXHAUSTED


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

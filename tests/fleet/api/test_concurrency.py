"""Concurrency promises, with real threads released together by a barrier, against
PostgreSQL (row locks and SKIP LOCKED are what is being tested)."""

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from fleet.choices import JobStatus, TokenStatus
from fleet.models import ActivationToken, Agent, Job
from fleet.services.agents import agent_decommission
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.fleet.api.conftest import activate, activation_body, bearer

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, all released at once; return their results."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(isinstance(r, BaseException) for r in results), results
    return results


def post(path: str, body: dict | None = None, secret: str = "") -> tuple[int, dict]:
    response = Client().post(
        f"/api/v1{path}",
        body or {},
        content_type="application/json",
        **(bearer(secret) if secret else {}),
    )
    return response.status_code, (response.json() if response.content else {})


def test_fifty_machines_racing_for_one_token_make_exactly_one_agent(customer):
    factories.license(customer, max_agents=100)
    _, token = token_mint(customer=customer, actor=SYSTEM)
    results = run_together(
        [
            lambda n=n: post("/agents/activate", activation_body(token, machine_id=f"racer-{n}"))
            for n in range(50)
        ]
    )
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 409: 49}
    assert {body["code"] for status, body in results if status == 409} == {"token_already_redeemed"}
    assert Agent.objects.count() == 1
    assert ActivationToken.objects.get().refused_attempts == 49


def test_three_free_seats_and_ten_tokens_make_exactly_three_agents(customer):
    factories.license(customer, max_agents=5)
    for _ in range(2):
        activate(customer)
    tokens = [token_mint(customer=customer, actor=SYSTEM)[1] for _ in range(10)]
    results = run_together(
        [lambda t=t: post("/agents/activate", activation_body(t)) for t in tokens]
    )
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 3, 403: 7}
    assert {body["code"] for status, body in results if status == 403} == {"license_full"}
    assert Agent.objects.count() == 5
    # The seven refused tokens are untouched and work once a seat frees.
    assert ActivationToken.objects.filter(status=TokenStatus.OUTSTANDING).count() == 7
    agent_decommission(agent=Agent.objects.first(), actor=SYSTEM)
    refused = [t for t, (status, _) in zip(tokens, results, strict=True) if status == 403]
    assert post("/agents/activate", activation_body(refused[0]))[0] == 201


def test_forty_agents_claiming_ten_jobs_hold_each_job_once(customer):
    factories.license(customer, max_agents=40, max_concurrent_tasks_per_agent=1)
    agents = [activate(customer) for _ in range(40)]
    for _ in range(10):
        factories.job(customer, role="coder")
    results = run_together([lambda a=a: post("/jobs/claim", secret=a.secret) for a in agents])
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 10, 204: 30}
    claimed = [body["id"] for status, body in results if status == 200]
    assert len(set(claimed)) == 10
    holders = Counter(Job.objects.values_list("agent_id", flat=True))
    assert len(holders) == 10
    assert max(holders.values()) == 1
    assert not Job.objects.filter(status=JobStatus.QUEUED).exists()


def test_one_agent_sending_many_claims_at_once_stays_under_its_cap(customer):
    factories.license(customer, max_agents=50, max_concurrent_tasks_per_agent=4)
    agents = [activate(customer) for _ in range(50)]
    for _ in range(300):
        factories.job(customer, role="coder")
    # 16 concurrent clients, each working through the fleet, several claims per agent.
    calls = [
        (
            lambda i=i: [
                post("/jobs/claim", secret=agents[(i * 7 + k) % 50].secret)[0] for k in range(25)
            ]
        )
        for i in range(16)
    ]
    results = run_together(calls)
    assert all(status in (200, 204) for batch in results for status in batch)
    held = Counter(Job.objects.filter(status=JobStatus.RUNNING).values_list("agent_id", flat=True))
    assert max(held.values()) <= 4
    assert sum(held.values()) == sum(status == 200 for batch in results for status in batch)


def test_one_agent_sixteen_claims_at_once_gets_exactly_its_cap(customer):
    factories.license(customer, max_agents=5, max_concurrent_tasks_per_agent=4)
    agent = activate(customer)
    for _ in range(50):
        factories.job(customer, role="coder")
    results = run_together([lambda: post("/jobs/claim", secret=agent.secret) for _ in range(16)])
    assert Counter(status for status, _ in results) == {200: 4, 204: 12}
    assert Job.objects.filter(agent_id=agent.agent.pk, status=JobStatus.RUNNING).count() == 4


def test_a_paused_agent_claims_nothing_while_the_others_claim_then_resumes(customer):
    from fleet.services.agent_controls import agent_pause, agent_resume

    factories.license(customer, max_agents=20, max_concurrent_tasks_per_agent=2)
    agents = [activate(customer) for _ in range(9)]
    paused = agents[0]
    for _ in range(30):
        factories.job(customer, role="coder")
    agent_pause(agent=paused.agent, reason="maintenance", actor=SYSTEM)
    # Each agent asks four times at once (the paused one too): 8 agents get 2 jobs each, none to it.
    calls = [lambda a=a: post("/jobs/claim", secret=a.secret)[0] for a in agents for _ in range(4)]
    results = run_together(calls)
    assert results.count(200) == 16
    assert not Job.objects.filter(agent_id=paused.agent.pk).exists()
    held = Counter(Job.objects.filter(status=JobStatus.RUNNING).values_list("agent_id", flat=True))
    assert max(held.values()) == 2 and len(held) == 8
    agent_resume(agent=paused.agent, actor=SYSTEM)
    assert post("/jobs/claim", secret=paused.secret)[0] == 200


def test_label_routing_stays_exact_under_concurrent_claims_with_the_cap_held(customer):
    factories.license(customer, max_agents=30, max_concurrent_tasks_per_agent=3)
    gpu = [activate(customer, labels={"gpu": "a100"}) for _ in range(6)]
    plain = [activate(customer) for _ in range(6)]
    for n in range(40):  # 10 need the GPU, 30 do not, interleaved by age
        factories.job(customer, role="coder", required_labels={"gpu": "a100"} if n % 4 == 0 else {})
    agents = gpu + plain
    calls = [lambda a=a: post("/jobs/claim", secret=a.secret)[0] for a in agents for _ in range(5)]
    results = run_together(calls)
    assert results.count(200) == 36  # 12 agents at their cap of 3
    gpu_ids = {a.agent.pk for a in gpu}
    for job in Job.objects.filter(status=JobStatus.RUNNING):
        if job.required_labels:
            assert job.agent_id in gpu_ids, job
    held = Counter(Job.objects.filter(status=JobStatus.RUNNING).values_list("agent_id", flat=True))
    assert max(held.values()) == 3

"""Budgets: caps per customer, role and agent; spend charged at completion by exact
counters; a reached cap idles claims (204, X-Agentina-Idle: budget_exhausted) until the
cap is raised; racing completions pass a cap by at most the jobs already running."""

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from fleet.choices import AnomalyKind, AuditAction
from fleet.models import Anomaly, AuditEvent, BudgetSpend, Job
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from fleet.services.budgets import CapSetting, budget_caps_set
from tests import factories
from tests.fleet.api.conftest import ApiClient, activate, bearer


def usage(cost: float, tokens: int = 100) -> list[dict]:
    return [{"model": "m", "provider": "anthropic", "input_tokens": tokens, "cost_usd": cost}]


def run_one(agent, cost: float = 0.30) -> int:
    factories.job(agent.agent.customer_id, role="coder")
    claimed = agent.api.post("/jobs/claim")
    if claimed.status_code != 200:
        return claimed.status_code
    job = claimed.json()
    body = {"lease_id": job["lease_id"], "usage": usage(cost)}
    return agent.api.post(f"/jobs/{job['id']}/complete", body).status_code


def cap(customer, scope="customer", key="", period="day", usd=None, tokens=None) -> None:
    budget_caps_set(
        customer=customer,
        caps=[CapSetting(scope, key, period, Decimal(usd) if usd else None, tokens)],
        actor=SYSTEM,
    )


@pytest.mark.django_db
def test_a_reached_cap_idles_claims_opens_a_finding_and_raising_it_resumes(agent, key_api):
    customer = agent.agent.customer
    set_caps = key_api.client.patch(
        "/api/v1/budgets",
        {"caps": [{"scope": "role", "key": "coder", "period": "day", "max_cost_usd": 0.5}]},
        content_type="application/json",
        **bearer(key_api.secret),
    )
    assert set_caps.status_code == 200, set_caps.content
    assert run_one(agent) == 200
    assert run_one(agent) == 200  # $0.60 now: over, by the job that was running
    factories.job(customer, role="coder")
    idle = agent.api.post("/jobs/claim")
    assert (idle.status_code, idle["X-Agentina-Idle"]) == (204, "budget_exhausted")
    finding = Anomaly.objects.get(kind=AnomalyKind.BUDGET_EXHAUSTED, resolved_at__isnull=True)
    assert "$0.60 of its $0.50 cap today" in finding.message
    assert [b["reached"] for b in key_api.get("/budgets").json()] == [True]
    cap(customer, "role", "coder", usd="5")
    claimed = agent.api.post("/jobs/claim")  # at once, in this process and every other
    assert claimed.status_code == 200 and "X-Agentina-Idle" not in claimed
    assert Anomaly.objects.get(pk=finding.pk).resolved_at is not None
    assert AuditEvent.objects.filter(action=AuditAction.BUDGET_UPDATE).count() == 2
    spend = BudgetSpend.objects.get(scope="customer", period="month")
    assert (spend.cost_usd, spend.tokens) == (Decimal("0.6"), 200)


@pytest.mark.django_db
def test_a_token_cap_and_an_agent_cap_bind_only_their_own(agent, licensed):
    other = activate(licensed)
    cap(licensed, "agent", str(agent.agent.pk), "month", tokens=100)
    assert run_one(agent) == 200
    assert run_one(agent) == 204  # its 100 tokens are spent this month
    assert run_one(other) == 200  # another agent is not bound by it


@pytest.mark.postgres  # the claim is one function on PostgreSQL (SQLite runs its steps)
@pytest.mark.django_db
def test_an_uncapped_claim_reads_nothing_more_and_a_capped_one_one_statement(
    agent, licensed, assert_data_statements
):
    factories.job(licensed, role="coder")
    agent.api.post("/agents/heartbeat", {"version": "1.9.3"})  # the agent is kept now
    with assert_data_statements(1):  # fleet_claim_job, as pinned in test_jobs
        assert agent.api.post("/jobs/claim").status_code == 200
    cap(licensed, usd="100")
    agent.api.post("/agents/heartbeat", {"version": "1.9.3"})  # re-read: it is capped now
    factories.job(licensed, role="coder")
    with assert_data_statements(2):  # + the caps with their spend, one indexed SELECT
        assert agent.api.post("/jobs/claim").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cap_body", "status", "field"),
    [
        ({"scope": "customer", "period": "day", "max_cost_usd": "NaN"}, 422, "max_cost_usd"),
        ({"scope": "customer", "period": "day", "max_cost_usd": -1}, 422, "max_cost_usd"),
        ({"scope": "customer", "period": "day", "max_cost_usd": 1e30}, 422, "max_cost_usd"),
        ({"scope": "customer", "period": "day", "max_cost_usd": "5"}, 422, "max_cost_usd"),
        ({"scope": "customer", "period": "day", "max_tokens": 10**30}, 422, "max_tokens"),
        ({"scope": "customer", "period": "day", "max_tokens": 1.5}, 422, "max_tokens"),
        ({"scope": "customer", "period": "week", "max_tokens": 1}, 422, "period"),
        ({"scope": "team", "period": "day", "max_tokens": 1}, 422, "scope"),
        ({"scope": "role", "key": "wizard", "period": "day", "max_tokens": 1}, 422, "key"),
        ({"scope": "agent", "key": "9" * 30, "period": "day", "max_tokens": 1}, 422, "key"),
        ({"scope": "customer", "key": "x", "period": "day", "max_tokens": 1}, 422, "key"),
        ({"scope": "agent", "key": "a\x00", "period": "day", "max_tokens": 1}, 422, "key"),
    ],
)
def test_hostile_caps_are_422_naming_the_field(licensed, cap_body, status, field):
    _, secret = api_key_mint(customer=licensed, name="s", scopes=["read", "settings"], actor=SYSTEM)
    response = Client().patch(
        "/api/v1/budgets", {"caps": [cap_body]}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == status, response.content
    assert response.json()["code"] == "invalid_input"
    assert field in str(response.json()["errors"])


@pytest.mark.django_db
def test_another_customers_agent_is_404_on_the_budgets_route(licensed, other_customer):
    factories.license(other_customer, max_agents=2)
    stranger = activate(other_customer)
    _, secret = api_key_mint(customer=licensed, name="s", scopes=["read", "settings"], actor=SYSTEM)
    body = {"caps": [{"scope": "agent", "key": str(stranger.agent.pk), "period": "day"}]}
    body["caps"][0]["max_tokens"] = 5
    response = Client().patch(
        "/api/v1/budgets", body, content_type="application/json", **bearer(secret)
    )
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert ApiClient(Client(), secret).get("/budgets").json() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_completions_pass_a_cap_by_at_most_the_jobs_running(customer):
    """Four agents run jobs ($0.25 each) as fast as they can against a $1.00 day cap of the
    fleet: every completion is counted exactly, and once the cap is reached no agent
    claims again, so spend ends within [cap, cap + one job per agent)."""
    factories.license(customer, max_agents=10, max_concurrent_tasks_per_agent=1)
    factories.release("1.9.3")
    agents = [activate(customer, machine_id=f"m-{n}") for n in range(4)]
    for _ in range(30):
        factories.job(customer, role="coder")
    cap(customer, usd="1.00")
    barrier = threading.Barrier(len(agents))
    ends: list[str] = []

    def work(agent) -> None:
        try:
            client = Client()
            barrier.wait()
            while True:
                claimed = client.post("/api/v1/jobs/claim", **bearer(agent.secret))
                if claimed.status_code == 204:
                    ends.append(claimed.get("X-Agentina-Idle", "empty"))
                    return
                job = claimed.json()
                body = {"lease_id": job["lease_id"], "usage": usage(0.25)}
                done = client.post(
                    f"/api/v1/jobs/{job['id']}/complete",
                    body,
                    content_type="application/json",
                    **bearer(agent.secret),
                )
                assert done.status_code == 200, done.content
        except BaseException as exc:
            ends.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert ends == ["budget_exhausted"] * len(agents)
    charged = sum(Job.objects.filter(status="succeeded").values_list("cost_usd", flat=True))
    spend = BudgetSpend.objects.get(scope="customer", period="day").cost_usd
    assert spend == charged  # exact: no completion lost or counted twice
    assert Decimal("1.00") <= spend < Decimal("1.00") + Decimal("0.25") * len(agents)
    assert Anomaly.objects.filter(kind=AnomalyKind.BUDGET_EXHAUSTED).count() == 1


@pytest.mark.django_db
def test_a_completion_pays_one_statement_for_its_usage_and_one_more_with_caps(agent, licensed):
    from tests.conftest import data_statements

    def complete(with_usage: bool) -> int:
        factories.job(licensed, role="coder")
        job = agent.api.post("/jobs/claim").json()
        body = {"lease_id": job["lease_id"], **({"usage": usage(0.1)} if with_usage else {})}
        with data_statements() as statements:
            assert agent.api.post(f"/jobs/{job['id']}/complete", body).status_code == 200
        return len(statements)

    agent.api.post("/agents/heartbeat", {"version": "1.9.3"})  # the agent is kept
    plain = complete(False)
    assert complete(True) == plain + 1  # the counters' upsert
    cap(licensed, usd="100")
    agent.api.post("/agents/heartbeat", {"version": "1.9.3"})  # re-read: capped now
    assert complete(True) == plain + 2  # + the caps, to see one reached

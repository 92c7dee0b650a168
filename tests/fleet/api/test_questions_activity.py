"""Agent activity in heartbeats, and questions a running job asks a person: the answer
rides the agent's heartbeats until it acknowledges it (at least once)."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import AgentActivity, AuditAction
from fleet.models import Agent, AuditEvent, Job, Question
from fleet.services.presence import presence_flush, presence_send
from tests import factories
from tests.fleet.api.conftest import activate, beat

pytestmark = pytest.mark.django_db


def running_job(agent) -> dict:
    factories.job(agent.agent.customer_id, role="coder")
    response = agent.api.post("/jobs/claim")
    assert response.status_code == 200, response.content
    return response.json()


def stored(agent) -> Agent:
    return Agent.objects.get(pk=agent.agent.pk)


# --- activity -------------------------------------------------------------------------


def test_a_changed_activity_rides_the_heartbeats_one_update(agent, django_assert_num_queries):
    beat(agent)
    with django_assert_num_queries(1):  # the UPDATE the beat makes anyway (no buffer here)
        response = beat(agent, activity="rate_limited", provider="Anthropic", detail="429s")
    assert response.status_code == 200
    row = stored(agent)
    assert (row.activity, row.activity_provider, row.activity_detail) == (
        AgentActivity.RATE_LIMITED,
        "anthropic",
        "429s",
    )
    since = row.activity_since
    beat(agent, activity="rate_limited", provider="anthropic", detail="429s")
    assert stored(agent).activity_since == since  # the same activity keeps its start
    beat(agent)  # no activity sent: unchanged
    assert stored(agent).activity == AgentActivity.RATE_LIMITED
    beat(agent, activity="working")
    assert (stored(agent).activity, stored(agent).activity_provider) == ("working", "")


@pytest.mark.redis
def test_with_the_buffer_an_activity_costs_no_statement_and_the_flush_writes_the_newest(
    agent, buffer, django_assert_num_queries
):
    beat(agent)
    later = timezone.now() + timedelta(seconds=40)
    with time_machine.travel(later, tick=False), django_assert_num_queries(0):
        beat(agent, activity="waiting_for_input", detail="which branch?")
    # Another process wrote an older report meanwhile; the flush keeps the newest.
    Agent.objects.filter(pk=agent.agent.pk).update(activity="idle", activity_since=later)
    presence_send()
    assert presence_flush().written == 1
    row = stored(agent)
    assert (row.activity, row.activity_detail) == ("waiting_for_input", "which branch?")
    assert row.activity_since == later
    with time_machine.travel(later + timedelta(seconds=40), tick=False):
        beat(agent, activity="waiting_for_input", detail="which branch?")
        beat(agent)  # no activity: the buffered report stands
    presence_send()
    presence_flush()
    assert stored(agent).activity_since == later  # the same activity keeps its start


@pytest.mark.parametrize(
    "extra",
    [
        {"activity": "sleeping"},
        {"activity": 3},
        {"activity": "idle", "detail": "x" * 501},
        {"activity": "idle", "detail": "a\x00b"},
        {"activity": "rate_limited", "provider": "anthropic inc"},
        {"activity": "rate_limited", "provider": "p" * 51},
        {"usage": {"1": [{"model": "m", "input_tokens": -1}]}},
        {"usage": {"1": [{"model": "m", "cost_usd": "NaN"}]}},
        {"usage": {"1": [{"model": "m", "cost_usd": 1e30}]}},
        {"usage": {"0": [{"model": "m"}]}},
        {"usage": {"1": [{"model": "m"}] * 21}},
    ],
)
def test_hostile_activity_and_usage_are_422_naming_the_field(agent, extra):
    response = beat(agent, **extra)
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "invalid_input"
    assert list(extra)[-1] in str(response.json()["errors"])


def test_usage_so_far_is_written_with_the_lease_renewal(agent):
    job = running_job(agent)
    usage = {str(job["id"]): [{"model": "m", "provider": "p", "input_tokens": 10, "cost_usd": 0.5}]}
    beat(agent, running_job_ids=[job["id"]], usage=usage)  # its first renewal writes it
    assert Job.objects.get().cost_usd == Decimal("0.5")
    usage[str(job["id"])][0]["cost_usd"] = 0.75  # so far: replaces, never adds
    beat(agent, running_job_ids=[job["id"]], usage=usage)  # leases fresh: not written
    assert Job.objects.get().cost_usd == Decimal("0.5")
    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=False):
        beat(agent, running_job_ids=[job["id"]], usage=usage)
    row = Job.objects.get()
    assert (row.cost_usd, row.input_tokens, row.usage[0]["cost_usd"]) == (
        Decimal("0.75"),
        10,
        "0.750000",
    )


# --- questions ------------------------------------------------------------------------


def test_a_question_is_answered_delivered_until_acknowledged(agent, key_api):
    job = running_job(agent)
    asked = agent.api.post(
        f"/jobs/{job['id']}/questions", {"text": "Which branch?", "options": ["main", "dev"]}
    )
    assert asked.status_code == 201, asked.content
    question = asked.json()
    assert stored(agent).activity == AgentActivity.WAITING_FOR_INPUT
    again = agent.api.post(f"/jobs/{job['id']}/questions", {"text": "Which branch?"})
    assert (again.status_code, again.json()["id"]) == (200, question["id"])  # a retry
    assert beat(agent).json()["answers"] == []
    assert [q["id"] for q in key_api.get("/questions").json()["results"]] == [question["id"]]

    answered = key_api.post(f"/questions/{question['id']}/answer", {"answer": "dev"})
    assert answered.status_code == 200, answered.content
    assert answered.json()["waited_seconds"] >= 0
    expected = [{"question_id": question["id"], "job_id": job["id"], "answer": "dev"}]
    assert beat(agent).json()["answers"] == expected
    assert beat(agent).json()["answers"] == expected  # at least once: until acknowledged
    assert key_api.post(f"/questions/{question['id']}/answer", {"answer": "dev"}).status_code == 200
    other = key_api.post(f"/questions/{question['id']}/answer", {"answer": "main"})
    assert (other.status_code, other.json()["code"]) == (409, "question_not_open")

    first = agent.api.post(f"/questions/{question['id']}/ack")
    assert first.status_code == 200 and first.json()["acked_at"]
    second = agent.api.post(f"/questions/{question['id']}/ack")
    assert (second.status_code, second.json()["acked_at"]) == (200, first.json()["acked_at"])
    assert beat(agent).json()["answers"] == []
    assert key_api.get("/questions").json()["results"] == []
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {AuditAction.QUESTION_ASK, AuditAction.QUESTION_ANSWER, AuditAction.QUESTION_ACK} <= (
        actions
    )
    done = agent.api.post(f"/jobs/{job['id']}/complete", {"lease_id": job["lease_id"]})
    assert done.json()["status"] == "succeeded"


def test_only_the_jobs_running_agent_asks_and_acks(agent, licensed, key_api):
    job = running_job(agent)
    other = activate(licensed)
    refused = other.api.post(f"/jobs/{job['id']}/questions", {"text": "mine?"})
    assert (refused.status_code, refused.json()["code"]) == (409, "job_not_held")
    queued = factories.job(licensed, role="coder")
    assert agent.api.post(f"/jobs/{queued.pk}/questions", {"text": "?"}).status_code == 409
    question = agent.api.post(f"/jobs/{job['id']}/questions", {"text": "?"}).json()
    not_yet = agent.api.post(f"/questions/{question['id']}/ack")
    assert (not_yet.status_code, not_yet.json()["code"]) == (409, "question_not_answered")
    key_api.post(f"/questions/{question['id']}/answer", {"answer": "yes"})
    assert other.api.post(f"/questions/{question['id']}/ack").status_code == 404
    assert other.api.get("/agents/me").status_code == 200


def test_another_customers_ids_are_404_on_every_question_route(agent, key_api, other_customer):
    job = running_job(agent)
    question = agent.api.post(f"/jobs/{job['id']}/questions", {"text": "?"}).json()
    factories.license(other_customer, max_agents=5, max_concurrent_tasks_per_agent=2)
    stranger = activate(other_customer)
    from fleet.services.api_keys import api_key_mint
    from fleet.services.audit import SYSTEM
    from tests.fleet.api.conftest import ApiClient

    _, secret = api_key_mint(customer=other_customer, name="x", actor=SYSTEM)
    strange_key = ApiClient(key_api.client.__class__(), secret)
    assert stranger.api.post(f"/jobs/{job['id']}/questions", {"text": "?"}).status_code == 404
    assert stranger.api.post(f"/questions/{question['id']}/ack").status_code == 404
    assert strange_key.get(f"/questions/{question['id']}").status_code == 404
    answer = strange_key.post(f"/questions/{question['id']}/answer", {"answer": "no"})
    assert answer.status_code == 404
    assert strange_key.get("/questions?state=all").json()["results"] == []
    assert Question.objects.get().answered_at is None


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "x" * 4001},
        {"text": "a\x00b"},
        {"text": "?", "options": ["o"] * 21},
        {"text": "?", "options": ["o" * 201]},
        {"text": 5},
        {"text": "?", "extra": 1},
    ],
)
def test_hostile_questions_are_422(agent, body):
    job = running_job(agent)
    response = agent.api.post(f"/jobs/{job['id']}/questions", body)
    assert (response.status_code, response.json()["code"]) == (422, "invalid_input")

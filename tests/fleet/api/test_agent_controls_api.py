"""POST /agents/{id}/pause and /resume with an API key: the customer's own agents only,
bad input 422 naming the field; a paused agent's heartbeat says so and offers no work."""

import pytest
from django.test import Client

from fleet.choices import AgentStatus, AuditAction
from fleet.models import AuditEvent
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.fleet.api.conftest import ApiClient, activate, activation_body, beat

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _counts_at_once(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0  # heartbeats see the queue as it is
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)


def test_pause_then_resume_an_agent(key_api, agent):
    factories.job(agent.agent.customer, role="coder")
    response = key_api.post(
        f"/agents/{agent.agent.pk}/pause", {"reason": "patching the host", "timeout_minutes": 60}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["paused_reason"]) == ("paused", "patching the host")
    assert body["paused_until"] is not None
    answer = beat(agent).json()
    assert (answer["paused"], answer["jobs_pending"]) == (True, 0)
    assert agent.api.post("/jobs/claim").status_code == 204
    event = AuditEvent.objects.get(action=AuditAction.AGENT_PAUSE)
    assert event.actor_label == "api-key:ci"

    response = key_api.post(f"/agents/{agent.agent.pk}/resume")
    assert (response.status_code, response.json()["status"]) == (200, "online")
    answer = beat(agent).json()
    assert (answer["paused"], answer["jobs_pending"]) == (False, 1)
    assert agent.api.post("/jobs/claim").status_code == 200
    assert key_api.post(f"/agents/{agent.agent.pk}/resume").status_code == 200  # idempotent


def test_drain_through_the_api(key_api, agent):
    factories.job(agent.agent.customer, role="coder")
    assert agent.api.post("/jobs/claim").status_code == 200
    response = key_api.post(f"/agents/{agent.agent.pk}/pause", {"reason": "r", "drain": True})
    assert response.json()["status"] == "draining"


def test_another_customers_agent_is_a_404_like_a_missing_one(key_api, other_customer):
    factories.license(other_customer)
    theirs = factories.agent(other_customer)
    for path in (f"/agents/{theirs.pk}/pause", f"/agents/{theirs.pk}/resume"):
        response = key_api.post(path, {"reason": "r"} if path.endswith("pause") else None)
        missing = key_api.post(path.replace(str(theirs.pk), "999999"), {"reason": "r"})
        assert response.status_code == missing.status_code == 404
        assert response.json() == missing.json()
    theirs.refresh_from_db()
    assert theirs.status == AgentStatus.ONLINE


def test_without_a_key_or_with_an_agents_secret_it_is_refused(anon, agent):
    assert anon.post(f"/agents/{agent.agent.pk}/pause", {"reason": "r"}).status_code == 401
    assert agent.api.post(f"/agents/{agent.agent.pk}/pause", {"reason": "r"}).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "a\x00b"}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": "r", "timeout_minutes": 0}, "timeout_minutes"),
        ({"reason": "r", "timeout_minutes": 10**9}, "timeout_minutes"),
        ({"reason": "r", "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(key_api, agent, body, field):
    response = key_api.post(f"/agents/{agent.agent.pk}/pause", body)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


def test_an_upgrading_agent_is_a_409(key_api, licensed):
    upgrading = factories.agent(licensed, status="upgrading")
    response = key_api.post(f"/agents/{upgrading.pk}/pause", {"reason": "r"})
    assert (response.status_code, response.json()["code"]) == (409, "agent_state_conflict")


def test_a_paused_agent_is_not_told_to_upgrade(key_api, licensed):
    agent = activate(licensed)
    key_api.post(f"/agents/{agent.agent.pk}/pause", {"reason": "r"})
    answer = beat(agent).json()
    assert answer["upgrade"] is None and answer["paused"] is True


def test_mint_ephemeral_tokens_through_the_api(key_api):
    response = key_api.post("/tokens", {"count": 2, "role": "tester", "ephemeral": True})
    assert response.status_code == 201
    assert [t["details"]["ephemeral"] for t in response.json()["tokens"]] == [True, True]
    assert key_api.post("/tokens", {"ephemeral": "maybe"}).status_code == 422


def test_an_ephemeral_agents_job_cap_is_one_and_its_first_job_retires_it(licensed):

    _, token = token_mint(customer=licensed, ephemeral=True, actor=SYSTEM)
    api = ApiClient(Client())
    body = api.post("/agents/activate", activation_body(token)).json()
    api.secret = body["agent_secret"]
    assert api.get("/agents/me").json()["ephemeral"] is True
    for _ in range(3):
        factories.job(licensed, role="coder")
    job = api.post("/jobs/claim").json()
    assert api.post("/jobs/claim").status_code == 204  # one at a time (the license says 2)
    api.post(f"/jobs/{job['id']}/fail", {"lease_id": job["lease_id"], "error": "boom"})
    assert api.post("/agents/heartbeat", {"version": "1.9.3"}).status_code == 401  # retired
    event = AuditEvent.objects.get(action=AuditAction.AGENT_DECOMMISSION)
    assert event.actor_label == "system:ephemeral agent finished its job"

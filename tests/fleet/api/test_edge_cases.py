"""Inputs and sequences that once gave a 500 or a wrong answer."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import AnomalyKind
from fleet.models import Agent, Anomaly, AuditEvent, Host, Job
from fleet.services.agents import agent_decommission
from fleet.services.anomalies import anomaly_open
from fleet.services.releases import release_yank
from fleet.services.tokens import token_mint
from tests import factories
from tests.fleet.api.conftest import activate, activation_body

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "sent_at", ["2024-01-01T00:00:00", "9999-12-31T00:00:00Z", "0001-01-01T00:00:00+00:00"]
)
def test_naive_or_far_off_agent_clocks_are_422(agent, sent_at):
    response = agent.api.post("/agents/heartbeat", {"version": "1.9.3", "sent_at": sent_at})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "sent_at"


def test_nul_anywhere_in_a_job_result_is_422(agent, licensed):
    Job.objects.create(customer=licensed, role="coder")
    job = agent.api.post("/jobs/claim").json()
    for result in ({"a": "x\u0000y"}, ["ok", {"k\u0000": 1}], "bad\u0000"):
        response = agent.api.post(
            f"/jobs/{job['id']}/complete", {"lease_id": job["lease_id"], "result": result}
        )
        assert response.status_code == 422
    assert Job.objects.get().status == "running"


@pytest.mark.parametrize(
    "version", ["0.0.0-" + ".".join(["0"] * 29), "1.0.0-" + "1." * 28 + "1", "1.0.0-" + "z" * 58]
)
def test_versions_with_the_longest_prerelease_keys_are_stored(anon, licensed, version):
    _, token = token_mint(customer=licensed)
    response = anon.post("/agents/activate", activation_body(token, version=version))
    assert response.status_code == 201
    assert Agent.objects.get().version == version


def test_long_unit_and_hostname_make_a_name_that_fits(anon, licensed):
    _, token = token_mint(customer=licensed)
    response = anon.post(
        "/agents/activate", activation_body(token, unit_name="u" * 128, hostname="h" * 255)
    )
    assert response.status_code == 201
    assert len(Agent.objects.get().name) == 128


def test_a_bad_forwarded_for_header_falls_back_to_the_peer(anon, licensed, settings):
    settings.NINJA_NUM_PROXIES = 1
    _, token = token_mint(customer=licensed)
    response = anon.post(
        "/agents/activate", activation_body(token), HTTP_X_FORWARDED_FOR="not-an-ip"
    )
    assert response.status_code == 201
    assert AuditEvent.objects.get(action="agent.activate").ip_address == "127.0.0.1"


def test_a_redeemed_token_only_recovers_a_lost_answer_for_15_minutes(anon, licensed):
    _, token = token_mint(customer=licensed)
    body = activation_body(token)
    first = anon.post("/agents/activate", body).json()
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        late = anon.post("/agents/activate", body)
    assert (late.status_code, late.json()["code"]) == (409, "token_already_redeemed")
    assert anon.get("/agents/me", secret=first["agent_secret"]).status_code == 200


def test_a_second_agent_on_a_host_keeps_the_hosts_zone_and_memory(anon, licensed):
    activate(licensed, machine_id="m1", zone="eu-1a", memory_mb=16384)
    activate(licensed, machine_id="m1", zone="", unit_name="agentina@b", state_dir="/b")
    host = Host.objects.get()
    assert (host.zone, host.memory_mb) == ("eu-1a", 16384)


def test_an_agent_on_a_yanked_newer_release_is_told_to_move_and_counted(agent, licensed, key_api):
    newer = factories.release("1.11.0")
    agent.api.post("/agents/heartbeat", {"version": "1.11.0"})
    release_yank(release=newer, reason="crashes")
    hint = agent.api.post("/agents/heartbeat", {"version": "1.11.0"}).json()["update_available"]
    assert hint == {"version": "1.10.0", "channel": "stable"}
    assert key_api.get("/fleet/metrics").json()["agents_not_on_latest"] == 1


def test_decommissioning_closes_the_agents_findings(agent):
    anomaly_open(
        customer=agent.agent.customer_id,
        kind=AnomalyKind.AGENT_OFFLINE,
        fingerprint=f"agent_offline:{agent.agent.pk}",
        message="silent",
        agent_id=agent.agent.pk,
    )
    agent_decommission(agent=agent.agent)
    assert Anomaly.objects.get().resolved_at is not None


def test_expired_tokens_are_listed_as_expired_before_the_daily_job(key_api, licensed):
    token, _ = token_mint(customer=licensed, expires_in=timedelta(seconds=-1))
    assert key_api.get("/tokens?status=outstanding").json()["items"] == []
    [listed] = key_api.get("/tokens?status=expired").json()["items"]
    assert (listed["id"], listed["status"]) == (token.pk, "expired")


def test_a_retried_submit_with_an_idempotency_key_is_one_job(key_api, licensed):
    body = {"role": "coder", "payload": {"repo": "a/b", "task": "t"}}
    first = key_api.post("/jobs", body, HTTP_IDEMPOTENCY_KEY="build-42")
    again = key_api.post("/jobs", body, HTTP_IDEMPOTENCY_KEY="build-42")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = key_api.post("/jobs", {**body, "priority": 5}, HTTP_IDEMPOTENCY_KEY="build-42")
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    assert key_api.post("/jobs", body).status_code == 201  # no key: a new job each time
    assert Job.objects.count() == 2

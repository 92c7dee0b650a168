import json
import logging
import secrets
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import AgentStatus, AnomalyKind, TokenStatus
from fleet.models import ActivationToken, Agent, Anomaly, AuditEvent, Host
from fleet.secrets import SecretKind, secret_mint
from fleet.services.agents import agent_decommission
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint, token_revoke
from tests import factories
from tests.fleet.api.conftest import activate, activation_body

pytestmark = pytest.mark.django_db


def test_first_machine_gets_an_agent_and_its_secret(anon, licensed):
    token, secret = token_mint(customer=licensed, actor=SYSTEM)
    response = anon.post(
        "/agents/activate", activation_body(secret, hostname="build-7", memory_mb=8192)
    )
    assert response.status_code == 201
    body = response.json()
    assert body["created"] is True
    assert body["agent_secret"].startswith("agtn_agt_")
    assert 30 <= body["heartbeat_interval_seconds"] <= 60
    assert body["license"] == {
        "plan": "team",
        "max_agents": 10,
        "seats_used": 1,
        "max_concurrent_tasks_per_agent": 2,
        "channel": "stable",
    }
    agent = Agent.objects.select_related("host").get(pk=body["agent_id"])
    assert (agent.host.hostname, agent.host.memory_mb, agent.status) == ("build-7", 8192, "online")
    assert agent.secret_digest != body["agent_secret"]  # only the digest is kept
    token.refresh_from_db()
    assert token.status == TokenStatus.REDEEMED
    event = AuditEvent.objects.get(action="agent.activate")
    assert event.actor_label == f"agent:{agent.name}"
    assert event.ip_address == "127.0.0.1"


def test_a_second_machine_is_refused_and_the_sharing_is_recorded(anon, licensed):
    _, secret = token_mint(customer=licensed, actor=SYSTEM)
    first = anon.post("/agents/activate", activation_body(secret, hostname="build-1"))
    assert first.status_code == 201
    for _attempt in (1, 2):
        refused = anon.post("/agents/activate", activation_body(secret, hostname="laptop"))
        assert refused.status_code == 409
        body = refused.json()
        assert body["code"] == "token_already_redeemed"
        assert body["redeemed_by_host"] == "build-1"
        assert "single-use" in body["detail"]
        assert "redeemed_at" in body
    assert Agent.objects.count() == 1
    anomaly = Anomaly.objects.get(kind=AnomalyKind.TOKEN_REUSE)
    assert anomaly.occurrences == 2  # folded, not two rows
    assert "laptop" in anomaly.message
    assert ActivationToken.objects.get().refused_attempts == 2


def test_the_same_machine_retrying_gets_its_agent_back_with_a_new_secret(anon, licensed):
    _, secret = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(secret)
    first = anon.post("/agents/activate", body).json()
    again = anon.post("/agents/activate", body)
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["agent_id"] == first["agent_id"]
    assert Agent.objects.count() == 1
    # The lost first answer's secret no longer works; the new one does.
    assert anon.get("/agents/me", secret=first["agent_secret"]).status_code == 401
    assert anon.get("/agents/me", secret=again.json()["agent_secret"]).status_code == 200
    # Another unit on the same machine is another agent, so it needs its own token.
    other_unit = anon.post(
        "/agents/activate", {**body, "unit_name": "agentina@b", "state_dir": "/b"}
    )
    assert other_unit.status_code == 409


def test_a_leaked_token_with_the_holders_identity_but_not_its_install_key_gets_nothing(
    anon, licensed
):
    """Whoever holds a redeemed token can learn the holder's machine id and unit (the 409
    even names the host); only the install key, which never left the host but in the
    first request, proves the caller is the one whose answer was lost."""
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(token)
    first = anon.post("/agents/activate", body).json()
    for forged in ({"install_key": ""}, {"install_key": secrets.token_urlsafe(32)}):
        stolen = anon.post("/agents/activate", {**body, **forged})
        assert stolen.status_code == 409
        assert stolen.json()["code"] == "token_already_redeemed"
    # The real host was not locked out, and its own retry still recovers the agent.
    assert anon.get("/agents/me", secret=first["agent_secret"]).status_code == 200
    assert Anomaly.objects.get(kind=AnomalyKind.TOKEN_REUSE).occurrences == 2
    again = anon.post("/agents/activate", body)
    assert (again.status_code, again.json()["agent_id"]) == (200, first["agent_id"])
    assert Agent.objects.get().install_key_digest not in json.dumps(again.json())


def test_without_an_install_key_a_lost_answer_cannot_be_recovered(anon, licensed):
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(token, install_key="")
    assert anon.post("/agents/activate", body).status_code == 201
    assert anon.post("/agents/activate", body).status_code == 409
    assert Agent.objects.get().install_key_digest == ""


def test_a_redeemed_token_only_recovers_a_lost_answer_for_15_minutes(anon, licensed):
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(token)
    first = anon.post("/agents/activate", body).json()
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        late = anon.post("/agents/activate", body)
    assert (late.status_code, late.json()["code"]) == (409, "token_already_redeemed")
    assert anon.get("/agents/me", secret=first["agent_secret"]).status_code == 200


@pytest.mark.parametrize("key", ["short", "x" * 129, "has spaces in it" * 3, "ключ" * 10])
def test_a_malformed_install_key_is_422_and_the_token_stays_usable(anon, licensed, key):
    token, secret = token_mint(customer=licensed, actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(secret, install_key=key))
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    token.refresh_from_db()
    assert token.status == TokenStatus.OUTSTANDING


def test_a_decommissioned_holder_cannot_be_recovered_even_with_its_key(anon, licensed):
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(token)
    anon.post("/agents/activate", body)
    agent_decommission(agent=Agent.objects.get(), actor=SYSTEM)
    assert anon.post("/agents/activate", body).status_code == 409
    assert Agent.objects.get().status == AgentStatus.DECOMMISSIONED


def test_malformed_and_unknown_tokens_are_401_and_the_malformed_never_reach_the_database(
    anon, licensed, django_assert_num_queries
):
    valid_shape = secret_mint(SecretKind.ACTIVATION_TOKEN).plaintext
    for token in (
        valid_shape[:-1] + ("A" if valid_shape[-1] != "A" else "B"),
        valid_shape[:20],
        "x" * 200,
    ):
        with django_assert_num_queries(0):
            response = anon.post("/agents/activate", activation_body(token))
        assert (response.status_code, response.json()["code"]) == (401, "token_unknown")
    response = anon.post("/agents/activate", activation_body(valid_shape))  # well formed, unknown
    assert (response.status_code, response.json()["code"]) == (401, "token_unknown")


def test_expired_and_revoked_tokens_are_410(anon, licensed):
    _, expired = token_mint(customer=licensed, expires_in=timedelta(seconds=-1), actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(expired))
    assert (response.status_code, response.json()["code"]) == (410, "token_expired")
    token, revoked = token_mint(customer=licensed, actor=SYSTEM)
    token_revoke(token=token, actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(revoked))
    assert (response.status_code, response.json()["code"]) == (410, "token_revoked")
    assert not Agent.objects.exists()


def test_a_full_license_refuses_and_the_token_stays_redeemable(anon, customer):
    factories.license(customer, max_agents=1)
    activate(customer)
    token, secret = token_mint(customer=customer, actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(secret))
    assert response.status_code == 403
    assert response.json() | {"detail": ""} == {
        "code": "license_full",
        "detail": "",
        "max_agents": 1,
        "active_agents": 1,
        "docs_url": "/docs/troubleshooting#license_full",
    }
    token.refresh_from_db()
    assert token.status == TokenStatus.OUTSTANDING
    Agent.objects.update(status=AgentStatus.DECOMMISSIONED, decommissioned_at=timezone.now())
    assert anon.post("/agents/activate", activation_body(secret)).status_code == 201


@pytest.mark.parametrize(
    ("license_fields", "code"),
    [
        ({"suspended": True}, "license_suspended"),
        (
            {
                "valid_from": timezone.now() - timedelta(days=30),
                "valid_until": timezone.now() - timedelta(days=1),
            },
            "license_expired",
        ),
    ],
)
def test_suspended_or_expired_license_is_403_and_burns_nothing(
    anon, customer, license_fields, code
):
    factories.license(customer, **license_fields)
    token, secret = token_mint(customer=customer, actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(secret))
    assert (response.status_code, response.json()["code"]) == (403, code)
    token.refresh_from_db()
    assert token.status == TokenStatus.OUTSTANDING
    assert not Host.objects.exists()


def test_no_license_is_403(anon, customer):
    _, secret = token_mint(customer=customer, actor=SYSTEM)
    assert (
        anon.post("/agents/activate", activation_body(secret)).json()["code"] == "license_missing"
    )


def test_a_token_minted_for_a_role_refuses_another_role(anon, licensed):
    _, secret = token_mint(customer=licensed, role="tester", actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(secret, role="coder"))
    assert (response.status_code, response.json()["code"]) == (422, "role_mismatch")
    assert anon.post("/agents/activate", activation_body(secret, role="tester")).status_code == 201


def test_one_unit_per_host(anon, licensed):
    activate(licensed, machine_id="m-shared", unit_name="agentina@a", state_dir="/a")
    _, secret = token_mint(customer=licensed, actor=SYSTEM)
    response = anon.post(
        "/agents/activate",
        activation_body(secret, machine_id="m-shared", unit_name="agentina@a", state_dir="/other"),
    )
    assert (response.status_code, response.json()["code"]) == (409, "unit_in_use")
    assert ActivationToken.objects.filter(status=TokenStatus.OUTSTANDING).count() == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"role": "manager"},
        {"version": "1.9"},
        {"version": "latest"},
        {"hostname": "bad\x00host"},
        {"hostname": ""},
        {"unit_name": "u" * 129},
        {"memory_mb": 10**30},
        {"memory_mb": -1},
        {"extra": "field"},
    ],
)
def test_bad_activation_input_is_422_naming_the_field(anon, licensed, overrides):
    _, secret = token_mint(customer=licensed, actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(secret, **overrides))
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_input"
    assert body["errors"][0]["field"] == next(iter(overrides))
    assert ActivationToken.objects.get().status == TokenStatus.OUTSTANDING


@pytest.mark.parametrize(
    "version", ["0.0.0-" + ".".join(["0"] * 29), "1.0.0-" + "1." * 28 + "1", "1.0.0-" + "z" * 58]
)
def test_versions_with_the_longest_prerelease_keys_are_stored(anon, licensed, version):
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    response = anon.post("/agents/activate", activation_body(token, version=version))
    assert response.status_code == 201
    assert Agent.objects.get().version == version


def test_long_unit_and_hostname_make_a_name_that_fits(anon, licensed):
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    response = anon.post(
        "/agents/activate", activation_body(token, unit_name="u" * 128, hostname="h" * 255)
    )
    assert response.status_code == 201
    assert len(Agent.objects.get().name) == 128


def test_a_second_agent_on_a_host_keeps_the_hosts_zone_and_memory(anon, licensed):
    activate(licensed, machine_id="m1", zone="eu-1a", memory_mb=16384)
    activate(licensed, machine_id="m1", zone="", unit_name="agentina@b", state_dir="/b")
    host = Host.objects.get()
    assert (host.zone, host.memory_mb) == ("eu-1a", 16384)


def test_a_bad_forwarded_for_header_falls_back_to_the_peer(anon, licensed, settings):
    settings.NINJA_NUM_PROXIES = 1
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    response = anon.post(
        "/agents/activate", activation_body(token), HTTP_X_FORWARDED_FOR="not-an-ip"
    )
    assert response.status_code == 201
    assert AuditEvent.objects.get(action="agent.activate").ip_address == "127.0.0.1"


def test_secrets_never_reach_the_logs(anon, licensed, caplog):
    caplog.set_level(logging.DEBUG)
    _, secret = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(secret)
    agent_secret = anon.post("/agents/activate", body).json()["agent_secret"]
    anon.post("/agents/activate", {**body, "machine_id": "another"})
    anon.post("/agents/heartbeat", {"version": "1.9.3"}, secret=agent_secret)
    anon.client.post(
        "/api/v1/agents/heartbeat",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {agent_secret}",
    )
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in logged and agent_secret not in logged
    stored = str(list(AuditEvent.objects.values_list("changes", flat=True)))
    assert secret not in stored and agent_secret not in stored


def test_license_model_default_channel_reaches_the_agent(anon, customer):
    factories.license(customer, max_agents=2, channel="beta")
    _, secret = token_mint(customer=customer, actor=SYSTEM)
    assert (
        anon.post("/agents/activate", activation_body(secret)).json()["license"]["channel"]
        == "beta"
    )

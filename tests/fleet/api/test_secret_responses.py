"""Every API answer that carries a secret is kept by no cache: `Cache-Control: no-store`
and `Pragma: no-cache` (set on every API answer, so a new operation cannot forget it)."""

import pytest

from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests.fleet.api.conftest import activation_body

pytestmark = pytest.mark.django_db


def kept_by_no_cache(response, status):
    assert response.status_code == status, response.content
    assert "no-store" in response["Cache-Control"]
    assert response["Pragma"] == "no-cache"


def test_minted_tokens_are_not_cached(key_api):
    response = key_api.post("/tokens", {"count": 2})
    kept_by_no_cache(response, 201)
    assert all(t["token"].startswith("agtn_act_") for t in response.json()["tokens"])


def test_the_agent_secret_from_activation_is_not_cached(anon, licensed):
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(token)
    response = anon.post("/agents/activate", body)
    kept_by_no_cache(response, 201)
    assert response.json()["agent_secret"].startswith("agtn_agt_")
    kept_by_no_cache(anon.post("/agents/activate", body), 200)  # the recovery answer too


def test_a_rotated_agent_secret_is_not_cached(agent):
    response = agent.api.post("/agents/rotate-secret")
    kept_by_no_cache(response, 200)
    assert response.json()["agent_secret"].startswith("agtn_agt_")


def test_a_webhook_signing_secret_is_not_cached(key_api, settings):
    settings.ALERT_ALLOW_PRIVATE_NETWORKS = True
    response = key_api.post(
        "/alerts/channels", {"kind": "webhook", "url": "https://127.0.0.1/hook"}
    )
    kept_by_no_cache(response, 201)
    assert response.json()["secret"].startswith("whsec_")


def test_errors_and_reads_are_not_cached_either(key_api, anon):
    kept_by_no_cache(key_api.get("/tokens"), 200)
    kept_by_no_cache(anon.get("/tokens"), 401)
    kept_by_no_cache(anon.get("/nothing/here"), 404)


def test_an_operations_own_cache_control_is_kept(key_api):
    response = key_api.get("/activity/export", data={"format": "csv"})
    assert response["Cache-Control"] == "private, no-store"

"""API keys with scopes and an expiry: every customer operation names the scope it needs
(walked from the OpenAPI document), refuses a key without it (403 insufficient_scope),
an expired key is 401, and keys record when and from where they were last used."""

import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, RequestFactory
from django.utils import timezone

from config.api import api
from fleet.api.auth import ApiKeyAuth
from fleet.choices import ApiKeyScope, AuditAction
from fleet.http import client_address
from fleet.models import AuditEvent, CustomerApiKey, Job
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests import factories
from tests.fleet.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

EVERY_SCOPE = set(ApiKeyScope.values)


def key_client(customer, scopes, **kwargs) -> ApiClient:
    _, secret = api_key_mint(
        customer=customer, name="scoped", actor=SYSTEM, scopes=scopes, **kwargs
    )
    return ApiClient(Client(), secret)


def customer_operations(client) -> list[tuple[str, str, str, dict]]:
    """(method, path, scope, operation) of every operation an API key authenticates,
    read from the OpenAPI document the way a client reads it."""
    doc = client.get("/api/v1/openapi.json").json()
    found = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for requirement in operation.get("security", []):
                if "ApiKeyAuth" in requirement:
                    (scope,) = requirement["ApiKeyAuth"]
                    found.append((method, path, scope, operation))
    return found


def call(api: ApiClient, method: str, path: str):
    """Any path parameter as 1, an empty JSON body: authentication runs before both are
    read, so this is enough to see whether the key is let in."""
    url = re.sub(r"\{[^}]+\}", "1", path).removeprefix("/api/v1")
    if method == "get":
        return api.get(url)
    if method == "delete":
        return api.delete(url)
    return api.client.generic(
        method.upper(),
        f"/api/v1{url}",
        "{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api.secret}",
    )


def test_every_customer_operation_names_one_known_scope_and_declares_403(client):
    operations = customer_operations(client)
    # The document lists every operation the routes authenticate by key, with its scope.
    routed = {
        (method.lower(), f"/api/v1/{bound.prefix}{path}".replace("//", "/"), str(auth.scope))
        for bound in api._get_bound_routers()  # the routes as Ninja serves them
        for path, view in bound.path_operations.items()
        for operation in view.operations
        for method in operation.methods
        for auth in operation.auth_callbacks
        if isinstance(auth, ApiKeyAuth)
    }
    routed = {(m, re.sub(r"\{\w+:(\w+)\}", r"{\1}", p), s) for m, p, s in routed}
    assert {(m, p, s) for m, p, s, _ in operations} == routed
    assert len(operations) >= 36  # the whole customer API, not a stray few
    for method, path, scope, operation in operations:
        assert scope in EVERY_SCOPE, (method, path)
        assert "403" in operation["responses"], (method, path)
        if method != "get":
            # A write never rides on `read`: a read-only key can change nothing.
            assert scope != ApiKeyScope.READ, (method, path)
    by_scope = {scope for _, _, scope, _ in operations}
    assert by_scope == EVERY_SCOPE  # each scope guards something


def test_every_customer_operation_refuses_a_key_lacking_its_scope(client, licensed):
    # Two keys a scope: every scope but it, and it alone.
    lacking = {scope: key_client(licensed, EVERY_SCOPE - {scope}) for scope in EVERY_SCOPE}
    alone = {scope: key_client(licensed, {scope}) for scope in EVERY_SCOPE}
    for method, path, scope, _ in customer_operations(client):
        without = lacking[scope]
        response = call(without, method, path)
        assert response.status_code == 403, (method, path, response.content)
        body = response.json()
        assert body["code"] == "insufficient_scope", (method, path)
        assert body["required_scope"] == scope
        assert scope not in body["key_scopes"]
        assert body["docs_url"] == "/docs/troubleshooting#insufficient_scope"
        # The scope alone lets the key in (what follows is the operation's own answer).
        answer = call(alone[scope], method, path)
        assert answer.status_code not in (401, 403) or answer.json()["code"] not in (
            "insufficient_scope",
            "unauthorized",
        ), (method, path, answer.content)


def test_a_read_only_key_reads_everything_and_changes_nothing(licensed, agent):
    factories.job(licensed, role="coder")
    reader = key_client(licensed, {ApiKeyScope.READ})
    for path in ("/agents", "/jobs", "/hosts", "/anomalies", "/rollouts", "/tokens", "/settings"):
        assert reader.get(path).status_code == 200, path
    assert reader.get("/fleet/metrics").status_code == 200
    assert reader.get("/activity").status_code == 200
    assert (
        reader.client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {reader.secret}").status_code
        == 200
    )
    writes = [
        reader.post("/jobs", {"role": "coder", "payload": {"repo": "a/b", "task": "t"}}),
        reader.post("/tokens", {"count": 1, "role": "coder"}),
        reader.post(f"/agents/{agent.agent.pk}/pause", {"reason": "no"}),
        reader.client.patch(
            "/api/v1/settings",
            {"stale_cleanup_days": 3},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {reader.secret}",
        ),
        reader.post("/alerts/channels", {"kind": "email", "email": "a@example.com"}),
    ]
    assert [(w.status_code, w.json()["code"]) for w in writes] == [
        (403, "insufficient_scope")
    ] * len(writes)
    assert Job.objects.count() == 1
    agent.refresh()
    assert agent.agent.status == "online"
    assert not AuditEvent.objects.filter(actor_label__startswith="api-key:").exists()


def test_the_alert_channel_list_needs_the_alerts_scope_not_read(licensed):
    """A webhook or Slack URL can carry a secret of its own: read-only keys do not see them."""
    reader = key_client(licensed, {ApiKeyScope.READ})
    assert reader.get("/alerts/channels").json()["required_scope"] == "alerts"
    assert key_client(licensed, {ApiKeyScope.ALERTS}).get("/alerts/channels").status_code == 200


def test_a_jobs_key_submits_and_cancels_but_mints_no_tokens(licensed):
    jobs = key_client(licensed, {ApiKeyScope.JOBS})
    submitted = jobs.post("/jobs", {"role": "coder", "payload": {"repo": "a/b", "task": "t"}})
    assert submitted.status_code == 201
    assert jobs.post(f"/jobs/{submitted.json()['id']}/cancel").status_code == 200
    assert jobs.get("/jobs").json()["required_scope"] == "read"
    assert jobs.post("/tokens", {"count": 1}).json()["required_scope"] == "tokens"


def test_an_expired_key_is_401_api_key_expired(licensed):
    api = key_client(licensed, EVERY_SCOPE, expires_at=timezone.now() + timedelta(hours=1))
    assert api.get("/agents").status_code == 200
    CustomerApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.get("/agents")
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_expired"
    assert response.json()["docs_url"] == "/docs/troubleshooting#api_key_expired"
    assert api.post("/jobs", {"role": "coder", "payload": {}}).json()["code"] == "api_key_expired"
    scrape = api.client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {api.secret}")
    assert (scrape.status_code, scrape.json()["code"]) == (401, "api_key_expired")
    assert scrape["WWW-Authenticate"].startswith("Bearer")


def test_metrics_needs_the_read_scope(licensed):
    api = key_client(licensed, {ApiKeyScope.JOBS})
    scrape = api.client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {api.secret}")
    assert scrape.status_code == 403
    assert scrape.json()["code"] == "insufficient_scope"
    assert scrape.json()["required_scope"] == "read"


def test_a_key_minted_without_scopes_holds_every_scope(licensed):
    key, _ = api_key_mint(customer=licensed, name="old-style", actor=SYSTEM)
    assert key.scopes == list(ApiKeyScope.values)
    assert factories.api_key(licensed).scope_list == list(ApiKeyScope.values)


def test_minting_refuses_unknown_or_no_scopes_and_a_past_expiry(licensed):
    from fleet.errors import InvalidInput

    with pytest.raises(InvalidInput):
        api_key_mint(customer=licensed, name="x", actor=SYSTEM, scopes=["everything"])
    with pytest.raises(InvalidInput):
        api_key_mint(customer=licensed, name="x", actor=SYSTEM, scopes=[])
    with pytest.raises(InvalidInput):
        api_key_mint(
            customer=licensed, name="x", actor=SYSTEM, expires_at=timezone.now() - timedelta(1)
        )
    assert not CustomerApiKey.objects.exists()


def test_minting_audits_the_scopes_and_the_expiry(licensed):
    expires = timezone.now() + timedelta(days=30)
    api_key_mint(
        customer=licensed, name="ci", actor=SYSTEM, scopes=["jobs", "read"], expires_at=expires
    )
    event = AuditEvent.objects.get(action=AuditAction.API_KEY_MINT)
    assert event.changes["scopes"] == [None, ["read", "jobs"]]
    assert event.changes["expires_at"] == [None, expires.isoformat()]


def test_the_last_use_records_the_time_and_the_client_address(licensed, settings):
    settings.NINJA_NUM_PROXIES = 1
    api = key_client(licensed, EVERY_SCOPE)
    proxied = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 198.51.100.7"}
    assert api.get("/agents", **proxied).status_code == 200
    expected = client_address(RequestFactory().get("/", **proxied))
    assert expected == "198.51.100.7"  # the address our one proxy saw, not the spoofable left
    key = CustomerApiKey.objects.get()
    assert key.last_used_address == expected
    assert timezone.now() - key.last_used_at < timedelta(seconds=5)
    # A use from elsewhere within the minute is recorded too; the same place is not rewritten.
    api.get("/agents", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.44")
    key.refresh_from_db()
    assert key.last_used_address == "192.0.2.44"
    first = key.last_used_at
    api.get("/agents", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="192.0.2.44")
    key.refresh_from_db()
    assert key.last_used_at == first


def test_a_refused_key_is_not_recorded_as_used(licensed):
    api = key_client(licensed, {ApiKeyScope.READ})
    api.post("/jobs", {"role": "coder", "payload": {}})
    assert CustomerApiKey.objects.get().last_used_at is None


def test_the_openapi_document_names_each_operations_scope(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert paths["/api/v1/jobs"]["post"]["security"] == [{"ApiKeyAuth": ["jobs"]}]
    assert paths["/api/v1/jobs"]["get"]["security"] == [{"ApiKeyAuth": ["read"]}]
    assert paths["/api/v1/settings"]["patch"]["security"] == [{"ApiKeyAuth": ["settings"]}]
    assert paths["/api/v1/rollouts/{rollout_id}/abort"]["post"]["security"] == [
        {"ApiKeyAuth": ["rollouts"]}
    ]
    assert paths["/api/v1/agents/heartbeat"]["post"]["security"] == [{"AgentAuth": []}]


def test_issue_api_key_takes_scopes_and_an_expiry(licensed, capsys):
    call_command(
        "issue_api_key",
        licensed.slug,
        "--name",
        "ci",
        "--scope",
        "jobs",
        "--scope",
        "read",
        "--expires-in-days",
        "30",
    )
    out, err = capsys.readouterr()
    key = CustomerApiKey.objects.get()
    assert key.scopes == ["read", "jobs"]
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert out.strip().startswith("agtn_key_")
    assert "scopes read, jobs" in err
    call_command("issue_api_key", licensed.slug, "--name", "all")
    assert CustomerApiKey.objects.get(name="all").scopes == list(ApiKeyScope.values)
    with pytest.raises(CommandError):
        call_command("issue_api_key", licensed.slug, "--scope", "everything")
    with pytest.raises(CommandError):
        call_command("issue_api_key", licensed.slug, "--expires-in-days", "0")

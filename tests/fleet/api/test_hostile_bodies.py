"""Non-finite numbers and lone surrogates, which Python's json accepts and PostgreSQL
refuses, are a 422 naming the field on every operation, never a 500."""

import json
import re

import pytest

from fleet.choices import JobStatus
from fleet.models import ActivationToken, Job
from tests import factories
from tests.fleet.api.conftest import activation_body, bearer

pytestmark = pytest.mark.django_db

NAN, INF = float("nan"), float("inf")


def raw_post(api, path, raw: str, *, secret=None, method="post"):
    send = getattr(api.client, method)
    return send(
        f"/api/v1{path}",
        raw.encode(),
        content_type="application/json",
        **bearer(api.secret if secret is None else secret),
    )


def refused(response, field, words):
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "invalid_input"
    assert body["errors"] == [{"field": field, "message": body["errors"][0]["message"]}]
    assert words in body["errors"][0]["message"]
    return body


@pytest.fixture
def running(agent, licensed):
    factories.job(licensed, role="coder")
    claimed = agent.api.post("/jobs/claim").json()
    return claimed["id"], claimed["lease_id"]


@pytest.mark.parametrize(
    ("result", "field", "words"),
    [
        ({"metrics": [{"score": NAN}]}, "result.metrics.0.score", "finite"),
        ({"p95": INF}, "result.p95", "finite"),
        ([1, 2, -INF], "result.2", "finite"),
        ({"log": "ok \ud800 then"}, "result.log", "surrogate"),
        ({"nested": {"\udfff": 1}}, "result.nested", "surrogate"),
        ("\udc00", "result", "surrogate"),
    ],
)
def test_complete_refuses_non_finite_numbers_and_lone_surrogates(
    agent, running, result, field, words
):
    job_id, lease = running
    response = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease, "result": result})
    refused(response, field, words)
    assert Job.objects.get(pk=job_id).status == JobStatus.RUNNING  # nothing was done
    done = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease, "result": {"ok": 1}})
    assert done.status_code == 200


@pytest.mark.parametrize("literal", ["1e999", "-1E400", "Infinity", "-Infinity", "NaN"])
def test_number_literals_that_are_not_finite_are_refused(agent, running, literal):
    job_id, lease = running
    raw = f'{{"lease_id": "{lease}", "result": {{"x": {literal}}}}}'
    refused(raw_post(agent.api, f"/jobs/{job_id}/complete", raw), "result.x", "finite")


def test_a_valid_surrogate_pair_is_an_ordinary_character(agent, running):
    job_id, lease = running
    raw = f'{{"lease_id": "{lease}", "result": {{"emoji": "\\ud83d\\ude00"}}}}'
    assert raw_post(agent.api, f"/jobs/{job_id}/complete", raw).status_code == 200
    assert Job.objects.get(pk=job_id).result == {"emoji": "\U0001f600"}


def test_fail_heartbeat_and_findings_refuse_them_too(agent, running):
    job_id, lease = running
    fail = agent.api.post(f"/jobs/{job_id}/fail", {"lease_id": lease, "error": "boom \ud800"})
    refused(fail, "error", "surrogate")
    refused(
        agent.api.post("/agents/heartbeat", {"version": "1.9.3", "load": NAN}), "load", "finite"
    )
    refused(agent.api.post("/anomalies", {"message": "\udbff"}), "message", "surrogate")
    assert Job.objects.get(pk=job_id).status == JobStatus.RUNNING


def test_customer_automation_refuses_them(key_api, licensed):
    job = {"role": "coder", "payload": {"repo": "a/b", "task": "fix \ud800"}}
    refused(key_api.post("/jobs", job), "payload.task", "surrogate")
    refused(key_api.post("/tokens", {"count": 1, "note": "\ud800"}), "note", "surrogate")
    refused(key_api.post("/tokens", {"count": INF}), "count", "finite")
    labels = {"count": 1, "labels": {"gpu\udc00": "a100"}}
    refused(key_api.post("/tokens", labels), "labels", "surrogate")
    assert not ActivationToken.objects.exists()


def test_activation_refuses_them(anon, licensed):
    from fleet.services.audit import SYSTEM
    from fleet.services.tokens import token_mint

    _, token = token_mint(customer=licensed, actor=SYSTEM)
    body = activation_body(token, hostname="build-\ud800")
    refused(anon.post("/agents/activate", body), "hostname", "surrogate")
    body = activation_body(token, memory_mb=NAN)
    refused(anon.post("/agents/activate", body), "memory_mb", "finite")


def test_every_operation_with_a_body_refuses_them(client, agent, key_api):
    """Whatever the operation and its schema: the parser refuses before validation."""
    doc = client.get("/api/v1/openapi.json").json()
    seen = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            security = json.dumps(operation.get("security", []))
            secret = (
                agent.secret
                if "AgentAuth" in security
                else key_api.secret
                if "ApiKeyAuth" in security
                else ""
            )
            url = re.sub(r"\{[^}]+\}", "1", path.removeprefix("/api/v1"))
            for raw, words in (('{"probe": NaN}', "finite"), ('{"probe": "\\udfff"}', "surrogate")):
                response = raw_post(key_api, url, raw, secret=secret, method=method)
                refused(response, "probe", words)
            seen += 1
    assert seen >= 20

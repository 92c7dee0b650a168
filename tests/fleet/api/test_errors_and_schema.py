"""One error shape everywhere, a true OpenAPI document, and a fuzz run over it."""

import json

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import status_code_conformance

from config.wsgi import application
from tests import factories
from tests.fleet.api.conftest import activate, bearer

pytestmark = pytest.mark.django_db


def test_unknown_path_and_wrong_method_answer_in_the_api_shape(anon, agent):
    missing = anon.get("/nothing/here")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong = anon.client.put("/api/v1/agents/heartbeat")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")
    assert "POST" in wrong["Allow"]


def test_an_oversized_body_is_413_in_the_api_shape(agent, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = agent.api.post("/anomalies", {"message": "x" * 1500})
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")


@pytest.mark.parametrize(
    "raw",
    [b"{", b"null", b"[]", b'"text"', b"\xff\xfe", b'{"version": "1.0.0"', b"\x00"],
)
def test_malformed_json_is_422(agent, raw):
    response = agent.api.client.post(
        "/api/v1/agents/heartbeat", raw, content_type="application/json", **bearer(agent.secret)
    )
    assert response.status_code == 422
    assert response.json()["code"] in ("invalid_json", "invalid_input")


def test_every_operation_declares_its_error_statuses(client):
    doc = client.get("/api/v1/openapi.json").json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            if operation.get("security"):
                assert "401" in statuses, (method, path)
            if "requestBody" in operation or any(
                p["in"] != "header" for p in operation.get("parameters", [])
            ):
                assert "422" in statuses, (method, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = json.dumps(response)
                    assert "ErrorOut" in ref, (method, path, status)


def test_an_unexpected_error_is_a_500_in_the_api_shape(agent, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("fleet.api.agents.agent_record_heartbeat", explode)
    response = agent.api.post("/agents/heartbeat", {"version": "1.9.3"})
    assert (response.status_code, response.json()["code"]) == (500, "internal_error")
    assert "boom" not in response.content.decode()


schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)


@pytest.fixture
def credentials(licensed, key_api):
    """An agent and a key to fuzz with. The WSGI transport fires request signals that would
    close the test's connection (Django's test client reconnects them after each of its
    requests, so set up first, then disconnect)."""
    agent = activate(licensed)
    factories.job(licensed, role="coder")
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield {"agent": agent.secret, "key": key_api.secret}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same cases every run, so CI is repeatable
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_fuzz_no_5xx_and_no_undocumented_status(case, credentials):
    security = json.dumps(case.operation.definition.raw.get("security", []))
    headers = {}
    if "AgentAuth" in security:
        headers["Authorization"] = f"Bearer {credentials['agent']}"
    elif "ApiKeyAuth" in security:
        headers["Authorization"] = f"Bearer {credentials['key']}"
    response = case.call(headers=headers)
    assert response.status_code < 500, response.text
    case.validate_response(response, checks=[status_code_conformance])

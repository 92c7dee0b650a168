"""The product's docs: /docs/troubleshooting has an entry for every error code the API
declares or answers, every error body links to its entry, and /docs/security tells each
API key scope's operations from the API itself."""

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.db import OperationalError
from django.test import Client

from fleet.choices import ApiKeyScope
from fleet.errors import FleetError, error_catalogue
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests.fleet.api.conftest import ApiClient, bearer

pytestmark = pytest.mark.django_db


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if tag == "script":
            self.scripts.append(values.get("src") or "")


def page_ids(client: Client, path: str) -> set[str]:
    response = client.get(path)
    assert response.status_code == 200, path
    parser = _Ids()
    parser.feed(response.content.decode())
    return parser.ids


def declared_error_codes(doc: dict) -> dict[str, set[str]]:
    """code -> the operations that declare it: the `code` enum of each error response's
    schema, as a client reads the document."""
    schemas = doc["components"]["schemas"]
    declared: dict[str, set[str]] = {}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                for content in response.get("content", {}).values():
                    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                    code = schemas[ref]["properties"]["code"]
                    codes = code.get("enum") or code.get("examples") or []
                    assert codes, (method, path, status, ref)  # every error names its codes
                    for value in codes:
                        declared.setdefault(value, set()).add(f"{method.upper()} {path}")
    return declared


def test_every_error_code_the_openapi_document_declares_has_an_entry(client):
    doc = client.get("/api/v1/openapi.json").json()
    declared = declared_error_codes(doc)
    entries = page_ids(client, "/docs/troubleshooting")
    missing = {code: sorted(ops)[:3] for code, ops in declared.items() if code not in entries}
    assert not missing
    # What the customer API's scopes add is declared where it can happen.
    assert "POST /api/v1/jobs" in declared["insufficient_scope"]
    assert "GET /api/v1/agents" in declared["api_key_expired"]


def test_every_code_of_the_catalogue_has_an_entry_with_a_meaning_and_a_hint(client):
    entries = page_ids(client, "/docs/troubleshooting")
    catalogue = error_catalogue()
    assert len({e.code for e in catalogue}) == len(catalogue)
    for entry in catalogue:
        assert entry.code in entries
        assert len(entry.meaning) > 20, entry.code
        assert len(entry.hint) > 10, entry.code

    # Every error class's code is in it (subclasses refining a detail share their parent's).
    def every(cls: type[FleetError]) -> list[type[FleetError]]:
        return [s for sub in cls.__subclasses__() for s in (sub, *every(sub))]

    assert {cls.code for cls in every(FleetError)} == {e.code for e in catalogue}


def assert_links_to_its_entry(client: Client, body: dict) -> None:
    url = urlsplit(body["docs_url"])
    assert url.path == "/docs/troubleshooting"
    assert url.fragment == body["code"]
    assert body["code"] in page_ids(client, url.path)


def test_every_error_body_carries_a_working_docs_url(
    client, licensed, agent, settings, monkeypatch
):
    """Each way config/api.py, the operations and /metrics answer an error (keyed by the
    code expected, then how it was caused)."""
    _, secret = api_key_mint(customer=licensed, name="reader", actor=SYSTEM, scopes=["read"])
    reader = ApiClient(Client(), secret)
    anon = ApiClient(Client())
    answers = {
        "not_found/path": anon.get("/nothing/here"),
        "not_found/object": reader.get("/jobs/999999"),
        "method_not_allowed": anon.client.put("/api/v1/agents/heartbeat"),
        "unauthorized": anon.get("/agents"),
        "insufficient_scope": reader.post("/jobs", {"role": "coder", "payload": {}}),
        "invalid_input": reader.get("/jobs?status=nonsense"),
        "invalid_json": agent.api.client.post(
            "/api/v1/agents/heartbeat",
            b"{",
            content_type="application/json",
            **bearer(agent.secret),
        ),
        "unauthorized/metrics": anon.client.get("/metrics"),
        "insufficient_scope/metrics": Client().get(
            "/metrics",
            **bearer(api_key_mint(customer=licensed, name="j", actor=SYSTEM, scopes=["jobs"])[1]),
        ),
    }
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    answers["body_too_large"] = agent.api.post("/anomalies", {"message": "x" * 1500})
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("fleet.api.agents.agent_record_heartbeat", explode)
    answers["internal_error"] = agent.api.post("/agents/heartbeat", {"version": "1.9.3"})

    def unavailable(**kwargs):
        raise OperationalError("the database is away")

    monkeypatch.setattr("fleet.api.agents.agent_record_heartbeat", unavailable)
    answers["service_unavailable"] = agent.api.post("/agents/heartbeat", {"version": "1.9.3"})
    settings.API_THROTTLE_RATES = {"activate": "1/min", "api_key": "1/min"}
    reader.get("/agents")
    answers["rate_limited"] = reader.get("/agents")

    for name, response in answers.items():
        assert response.status_code >= 400, name
        body = response.json()
        assert body["code"] == name.split("/")[0], name
        assert_links_to_its_entry(client, body)


def test_the_troubleshooting_page_says_what_each_code_means_and_what_to_do(client):
    html = client.get("/docs/troubleshooting").content.decode()
    assert "<h2>403 Forbidden</h2>" in html
    entry = html[html.index('id="insufficient_scope"') :]
    assert "required_scope" in entry[:2000]
    assert "What to do:" in entry[:2000]


def test_the_security_page_lists_each_scopes_operations_from_the_api(client):
    response = client.get("/docs/security")  # public: no sign-in
    assert response.status_code == 200
    html = response.content.decode()
    for scope in ApiKeyScope.values:
        assert f'id="scope-{scope}"' in html
    row = html[html.index('id="scope-jobs"') :]
    row = row[: row.index("</tr>")]
    assert "POST /api/v1/jobs" in row and "POST /api/v1/jobs/{job_id}/cancel" in row
    assert "GET /api/v1/jobs" not in re.sub(r"POST /api/v1/jobs\S*", "", row)
    read = html[html.index('id="scope-read"') :]
    assert "GET /metrics" in read[: read.index("</tr>")]
    sections = ("stored", "tenancy", "roles", "sso", "sessions", "lockouts", "proxies", "staff")
    for section in sections:
        assert f'id="{section}"' in html


def test_the_docs_pages_load_nothing_from_elsewhere(client):
    for path in ("/docs/", "/docs/security", "/docs/troubleshooting"):
        response = client.get(path)
        assert response.status_code == 200
        parser = _Ids()
        parser.feed(response.content.decode())
        assert all(src.startswith("/static/") for src in parser.scripts), path
        assert "default-src 'self'" in response["Content-Security-Policy"]

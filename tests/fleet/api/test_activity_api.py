"""The audit log through the customer API: `GET /activity` (the Activity page's list, by
cursor) and `GET /activity/export` (CSV or JSON Lines, streamed) — the key's customer's
events only, exact range boundaries, and every bad input a 422 naming its field."""

import csv
import io
import json
from base64 import b64encode
from datetime import UTC, datetime

import pytest
from django.test import Client

from fleet.choices import AuditAction
from fleet.models import AuditEvent
from tests import factories
from tests.fleet.api.conftest import ApiClient

pytestmark = pytest.mark.django_db


def event(customer, at: datetime, action=AuditAction.JOB_SUBMIT, **fields) -> AuditEvent:
    """An audit row at exactly `at` (the column is auto_now_add: set it afterwards)."""
    created = factories.audit_event(customer, action=action, **fields)
    AuditEvent.objects.filter(pk=created.pk).update(at=at)
    created.refresh_from_db()
    return created


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def download(api: ApiClient, **params: str):
    response = api.get("/activity/export", data=params)
    assert response.status_code == 200, response.content
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    return response, body


def exported_ids(api: ApiClient, **params: str) -> list[int]:
    _, body = download(api, format="jsonl", **params)
    return [json.loads(line)["id"] for line in body.splitlines()]


@pytest.fixture
def quiet(key_api, licensed):
    """The key's customer with no event yet (its key's own mint left out)."""
    AuditEvent.objects.filter(customer=licensed).delete()
    return licensed


@pytest.fixture
def log(quiet, other_customer):
    """The key's customer's events, and another customer's around them."""
    licensed = quiet
    own = {
        "submit": event(
            licensed,
            moment("2025-04-01T09:00:00"),
            actor_label="api-key:ci",
            target_id="7",
            target_repr="job 7",
            changes={"priority": 5},
            ip_address="203.0.113.9",
        ),
        "claim": event(
            licensed,
            moment("2025-04-01T09:01:00"),
            AuditAction.JOB_CLAIM,
            actor_label="agent:coder-1",
            target_id="7",
        ),
        "revoke": event(
            licensed,
            moment("2025-04-02T10:00:00"),
            AuditAction.TOKEN_REVOKE,
            actor_label="olga",
            target_type="fleet.activationtoken",
            target_id="3",
            target_repr="agtn_act_ab12… (coder)",
        ),
    }
    for n in range(3):
        event(other_customer, moment(f"2025-04-01T09:0{n}:00"), actor_label="intruder")
    return own


# --- GET /activity ----------------------------------------------------------------------


def test_the_list_is_the_activity_page_newest_first_own_events_only(key_api, log):
    response = key_api.get("/activity")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [e["id"] for e in body["results"]] == [log["revoke"].pk, log["submit"].pk]
    first = body["results"][1]
    assert first == {
        "id": log["submit"].pk,
        "time": "2025-04-01T09:00:00.000000Z",
        "actor": "api-key:ci",
        "actor_kind": "api_key",
        "action": "job.submit",
        "action_words": AuditAction.JOB_SUBMIT.label,
        "target_type": "fleet.job",
        "target_id": "7",
        "target_label": "job 7",
        "changes": {"priority": 5},
        "address": "203.0.113.9",
    }
    with_machine = key_api.get("/activity", data={"machine": "true"}).json()["results"]
    assert len(with_machine) == 3
    claims = key_api.get("/activity", data={"action": "job.claim"}).json()["results"]
    assert [e["id"] for e in claims] == [log["claim"].pk]
    agents = key_api.get("/activity", data={"actor": "agent", "machine": "true"}).json()
    assert [e["actor"] for e in agents["results"]] == ["agent:coder-1"]


def test_the_list_pages_by_cursor_and_takes_the_range(key_api, log):
    first = key_api.get("/activity", data={"page_size": 1, "machine": "true"}).json()
    second = key_api.get(first["next"].split("/api/v1", 1)[1]).json()
    assert [e["id"] for e in first["results"] + second["results"]] == [
        log["revoke"].pk,
        log["claim"].pk,
    ]
    day = key_api.get("/activity", data={"since": "2025-04-02", "until": "2025-04-02"}).json()
    assert [e["id"] for e in day["results"]] == [log["revoke"].pk]


# --- GET /activity/export ---------------------------------------------------------------


def test_the_csv_export_parses_back_with_the_customers_events_only(key_api, log, licensed):
    response, body = download(key_api, format="csv", machine="true")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Cache-Control"] == "private, no-store"
    today = datetime.now(UTC).strftime("%Y%m%d")
    disposition = response["Content-Disposition"]
    assert disposition.startswith(
        f'attachment; filename="agentina-activity-{licensed.slug}-2025-04-01-{today}T'
    )
    assert disposition.endswith('Z.csv"')
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [int(r["id"]) for r in rows] == [log["submit"].pk, log["claim"].pk, log["revoke"].pk]
    assert "intruder" not in body
    assert rows[0] == {
        "id": str(log["submit"].pk),
        "time": "2025-04-01T09:00:00.000000Z",
        "actor": "api-key:ci",
        "actor_kind": "api_key",
        "action": "job.submit",
        "action_words": AuditAction.JOB_SUBMIT.label,
        "target_type": "fleet.job",
        "target_id": "7",
        "target_label": "job 7",
        "changes": '{"priority": 5}',
        "address": "203.0.113.9",
    }
    assert rows[1]["address"] == "" and rows[1]["actor_kind"] == "agent"


def test_the_jsonl_export_is_one_json_object_a_line(key_api, log):
    response, body = download(key_api, format="jsonl", machine="true")
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].endswith('.jsonl"')
    lines = body.split("\n")
    assert lines[-1] == ""  # every line ends with a newline, the last one too
    records = [json.loads(line) for line in lines[:-1]]
    assert [r["id"] for r in records] == [log["submit"].pk, log["claim"].pk, log["revoke"].pk]
    assert records[2]["target_label"] == "agtn_act_ab12… (coder)"
    assert records[0]["changes"] == {"priority": 5}


def test_the_export_keeps_the_activity_pages_filters(key_api, log):
    assert exported_ids(key_api) == [log["submit"].pk, log["revoke"].pk]  # machine hidden
    assert exported_ids(key_api, actor="agent", machine="true") == [log["claim"].pk]
    assert exported_ids(key_api, action="token.revoke") == [log["revoke"].pk]


def test_range_boundaries_are_exact(key_api, quiet):
    licensed = quiet
    at = {
        text: event(licensed, moment(text)).pk
        for text in (
            "2025-03-31T23:59:59.999999",
            "2025-04-01T00:00:00",
            "2025-04-10T11:59:59.999999",
            "2025-04-10T12:00:00",
            "2025-04-30T23:59:59.999999",
            "2025-05-01T00:00:00",
        )
    }
    # Dates: from the first moment of `since` through the last of `until`.
    assert exported_ids(key_api, since="2025-04-01", until="2025-04-30") == [
        at["2025-04-01T00:00:00"],
        at["2025-04-10T11:59:59.999999"],
        at["2025-04-10T12:00:00"],
        at["2025-04-30T23:59:59.999999"],
    ]
    # Date and time: `since` inclusive, `until` exclusive, offsets honoured.
    assert exported_ids(key_api, until="2025-04-10T12:00:00Z") == [
        at["2025-03-31T23:59:59.999999"],
        at["2025-04-01T00:00:00"],
        at["2025-04-10T11:59:59.999999"],
    ]
    assert exported_ids(key_api, since="2025-04-10T14:00:00+02:00", until="2025-05-01T00:00Z") == [
        at["2025-04-10T12:00:00"],
        at["2025-04-30T23:59:59.999999"],
    ]
    assert exported_ids(key_api, since="2025-05-01")[-1] == at["2025-05-01T00:00:00"]
    # A naive time is UTC.
    assert exported_ids(key_api, since="2025-04-10T12:00:00", until="2025-04-10T12:00:01") == [
        at["2025-04-10T12:00:00"]
    ]
    assert len(exported_ids(key_api, since="0001-01-01", until="9999-12-31")) == len(at)
    response, _ = download(key_api, since="2025-04-01", until="2025-04-30")
    assert (
        "agentina-activity-" + licensed.slug + "-2025-04-01-2025-04-30.csv"
        in (response["Content-Disposition"])
    )


def test_another_customers_key_exports_nothing_of_this_one(licensed, log, other_customer):
    from fleet.services.api_keys import api_key_mint
    from fleet.services.audit import SYSTEM

    _, secret = api_key_mint(customer=other_customer, name="theirs", actor=SYSTEM)
    theirs = ApiClient(Client(), secret)
    _, body = download(theirs, format="jsonl", machine="true")
    actors = {json.loads(line)["actor"] for line in body.splitlines()}
    assert actors == {"intruder", "system"}  # the key's own mint is audited too
    listed = theirs.get("/activity", data={"machine": "true"}).json()["results"]
    assert not {e["id"] for e in listed} & {e.pk for e in log.values()}


def test_csv_cells_that_would_run_as_formulas_are_neutralised(key_api, quiet):
    licensed = quiet
    hostile = {
        '=HYPERLINK("http://evil")': '\'=HYPERLINK("http://evil")',
        "+1+1": "'+1+1",
        "-2+3": "'-2+3",
        "@SUM(A1)": "'@SUM(A1)",
        "\t=1": "'\t=1",
        "  =1": "'  =1",
        "plain = fine": "plain = fine",
    }
    for label in hostile:
        event(licensed, moment("2025-04-01T00:00:00"), actor_label=label, target_repr=label)
    _, body = download(key_api, format="csv")
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [r["actor"] for r in rows] == list(hostile.values())
    assert [r["target_label"] for r in rows] == list(hostile.values())
    for row in csv.reader(io.StringIO(body, newline="")):
        assert not [cell for cell in row if cell.lstrip(" ")[:1] in set("=+-@\t\r\n")]
    # JSON Lines carry what was recorded.
    _, lines = download(key_api, format="jsonl")
    assert [json.loads(line)["actor"] for line in lines.splitlines()] == list(hostile)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2025-04-02", "until": "2025-04-01"}, "until"),
        ({"since": "2025-04-01T12:00:00Z", "until": "2025-04-01T12:00:00Z"}, "until"),
        ({"since": "2025-04-01T12:00:00Z", "until": "2025-04-01T11:59:59Z"}, "until"),
        ({"since": "2025-13-01"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "2025-04-01\x00"}, "since"),
        ({"until": "2025-04-01T00:00:00\x00Z"}, "until"),
        ({"since": "2" * 41}, "since"),
        (
            {"since": "\u0662\u0660\u0662\u0665-\u0660\u0664-\u0660\u0661"},
            "since",
        ),  # not ASCII digits
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),  # before year 1 in UTC
        ({"format": "xlsx"}, "format"),
        ({"format": "csv\x00"}, "format"),
        ({"actor": "nobody"}, "actor"),
        ({"action": "job.explode"}, "action"),
        ({"machine": "perhaps"}, "machine"),
    ],
)
def test_hostile_input_is_a_422_naming_the_field(key_api, log, params, field):
    for path in ("/activity/export", "/activity"):
        if path == "/activity" and field == "format":
            continue
        response = key_api.get(path, data=params)
        assert response.status_code == 422, (path, params)
        body = response.json()
        assert body["code"] == "invalid_input"
        assert [e["field"] for e in body["errors"]] == [field], body


def test_an_unknown_cursor_is_a_422_naming_it(key_api, log):
    response = key_api.get("/activity", data={"cursor": b64encode(b"p=abc").decode()})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["cursor"]


def test_without_a_key_or_with_an_agents_secret_it_is_401(anon, agent, log):
    for path in ("/activity", "/activity/export"):
        assert anon.get(path).status_code == 401
        assert agent.api.get(path).status_code == 401


def test_the_routes_are_in_the_openapi_document_with_their_errors(anon):
    doc = anon.get("/openapi.json").json()
    listed = doc["paths"]["/api/v1/activity"]["get"]
    exported = doc["paths"]["/api/v1/activity/export"]["get"]
    for operation in (listed, exported):
        assert {"200", "401", "422", "429", "503"} <= set(operation["responses"])
        assert "ApiKeyAuth" in json.dumps(operation["security"])
        names = {p["name"] for p in operation["parameters"]}
        assert {"actor", "action", "machine", "since", "until"} <= names
    assert {"format"} <= {p["name"] for p in exported["parameters"]}
    assert set(exported["responses"]["200"]["content"]) == {"text/csv", "application/x-ndjson"}
    assert "cursor" in {p["name"] for p in listed["parameters"]}

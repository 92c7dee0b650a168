"""The Agents page, bulk actions and the customer's settings in the customer API: the same
filters, cursor pages that visit every agent exactly once, another customer's ids a 404,
hostile input a 422 naming the field."""

from base64 import b64encode

import pytest
from django.test import Client

from fleet.choices import AgentStatus, AuditAction, BulkActionState
from fleet.models import Agent, AuditEvent, BulkAction, Customer
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests import factories
from tests.fleet.api.conftest import ApiClient, walk

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(licensed):
    host = factories.host(licensed, zone="eu-1")
    for n in range(7):
        factories.agent(licensed, host=host, role="tester", labels={"gpu": "a100"} if n < 3 else {})
    factories.agent(licensed, role="coder")
    factories.agent(licensed, role="coder", status=AgentStatus.DECOMMISSIONED)
    return licensed


def patch(api: ApiClient, path: str, body):
    return api.client.patch(
        f"/api/v1{path}", body, content_type="application/json", **api._auth(None)
    )


def test_agents_list_filters_like_the_page_and_cursor_visits_each_once(key_api, fleet):
    every = walk(key_api, "/agents", "")
    assert len(every) == len({a["id"] for a in every}) == 8  # decommissioned left out
    assert [a["id"] for a in every] == sorted((a["id"] for a in every), reverse=True)
    assert {a["role"] for a in walk(key_api, "/agents", "role=tester")} == {"tester"}
    assert len(walk(key_api, "/agents", "role=tester")) == 7
    assert len(walk(key_api, "/agents", "label=gpu%3Da100")) == 3
    assert len(walk(key_api, "/agents", "zone=eu-1")) == 7
    assert len(walk(key_api, "/agents", "status=decommissioned")) == 1


def test_a_page_of_agents_costs_the_same_for_any_fleet(
    key_api, fleet, django_assert_max_num_queries
):
    host = factories.host(fleet)
    Agent.objects.bulk_create(factories.agent_row(fleet, host) for _ in range(300))
    with django_assert_max_num_queries(4):  # the key, its last use, the page
        response = key_api.get("/agents?page_size=50")
    assert len(response.json()["results"]) == 50


@pytest.mark.parametrize(
    "query",
    [
        "cursor=%21%21not-base64",
        "cursor=" + b64encode(b"p=abc").decode(),
        "cursor=" + b64encode(b"p=1&o=-5").decode(),
        "page_size=0",
        "page_size=100000",
        "status=sleeping",
        "q=a%00b",
    ],
)
def test_hostile_list_queries_are_422_naming_the_field(key_api, fleet, query):
    response = key_api.get(f"/agents?{query}")
    assert response.status_code == 422, response.content
    field = query.split("=", 1)[0]
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_another_customers_agents_are_never_listed(key_api, fleet, other_customer):
    factories.license(other_customer)
    theirs = factories.agent(other_customer, labels={"gpu": "a100"})
    assert theirs.pk not in {a["id"] for a in walk(key_api, "/agents", "")}
    assert theirs.pk not in {a["id"] for a in walk(key_api, "/agents", "label=gpu")}


def test_a_bulk_action_through_the_api_runs_and_reports_progress(
    key_api, fleet, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = key_api.post(
            "/agents/bulk",
            {"action": "pause", "filters": {"role": "tester"}, "reason": "host patching"},
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["action"], body["total"], body["filters"]) == ("pause", 7, {"role": "tester"})
    progress = key_api.get(f"/agents/bulk/{body['id']}").json()
    assert (progress["state"], progress["processed"], progress["changed"]) == ("done", 7, 7)
    assert progress["percent"] == 100
    assert Agent.objects.filter(status=AgentStatus.PAUSED).count() == 7
    event = AuditEvent.objects.get(action=AuditAction.AGENTS_BULK)
    assert event.changes["agents"] == [None, 7] and event.actor_label == "api-key:ci"

    with django_capture_on_commit_callbacks(execute=True):
        labelled = key_api.post(
            "/agents/bulk",
            {"action": "label", "filters": {"role": "coder"}, "labels": {"pool": "ci"}},
        ).json()
    assert key_api.get(f"/agents/bulk/{labelled['id']}").json()["changed"] == 1


def test_bulk_refusals_lose_nothing(key_api, fleet):
    no_reason = key_api.post("/agents/bulk", {"action": "pause"})
    assert (no_reason.status_code, no_reason.json()["code"]) == (409, "agent_state_conflict")
    no_labels = key_api.post("/agents/bulk", {"action": "label"})
    assert no_labels.status_code == 409
    for body, field in (
        ({"action": "explode"}, "action"),
        ({"action": "resume", "filters": {"role": "a\x00"}}, "role"),
        ({"action": "resume", "filters": {"colour": "red"}}, "colour"),
        ({"action": "label", "labels": {"bad key": "x"}}, "labels"),
        ({"action": "label", "labels": {f"k{n}": "v" for n in range(10_000)}}, "labels"),
    ):
        response = key_api.post("/agents/bulk", body)
        assert response.status_code == 422, (body, response.content)
        assert any(field in e["field"] for e in response.json()["errors"]), response.content
    assert not BulkAction.objects.exists()


def test_another_customers_bulk_action_is_a_404(
    key_api, fleet, other_customer, django_capture_on_commit_callbacks
):
    _, theirs_secret = api_key_mint(customer=other_customer, name="theirs", actor=SYSTEM)
    theirs = ApiClient(Client(), theirs_secret)
    with django_capture_on_commit_callbacks(execute=True):
        action = theirs.post("/agents/bulk", {"action": "resume"}).json()
    assert BulkAction.objects.get(pk=action["id"]).state == BulkActionState.DONE
    mine = key_api.get(f"/agents/bulk/{action['id']}")
    missing = key_api.get("/agents/bulk/999999")
    assert mine.status_code == missing.status_code == 404
    assert mine.json() == missing.json()


def test_settings_read_and_patched_only_what_is_sent(key_api, licensed):
    assert key_api.get("/settings").json() == {
        "stale_cleanup_days": None,
        "stale_cleanup_since": None,
        "job_max_runtime_seconds": None,
        "time_zone": "UTC",
        "maintenance_days": [],
        "maintenance_start": None,
        "maintenance_end": None,
        "update_pins": [],
    }
    body = patch(key_api, "/settings", {"stale_cleanup_days": 14}).json()
    assert body["stale_cleanup_days"] == 14 and body["stale_cleanup_since"] is not None
    body = patch(key_api, "/settings", {"job_max_runtime_seconds": 3600}).json()
    assert (body["stale_cleanup_days"], body["job_max_runtime_seconds"]) == (14, 3600)
    body = patch(key_api, "/settings", {"stale_cleanup_days": None}).json()
    assert (body["stale_cleanup_days"], body["stale_cleanup_since"]) == (None, None)
    assert body["job_max_runtime_seconds"] == 3600
    events = AuditEvent.objects.filter(action=AuditAction.CUSTOMER_UPDATE)
    assert events.count() == 3 and {e.actor_label for e in events} == {"api-key:ci"}
    licensed.refresh_from_db()
    assert licensed.job_max_runtime_seconds == 3600


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stale_cleanup_days": 0}, "stale_cleanup_days"),
        ({"stale_cleanup_days": 366}, "stale_cleanup_days"),
        ({"stale_cleanup_days": "soon"}, "stale_cleanup_days"),
        ({"job_max_runtime_seconds": 8 * 24 * 3600}, "job_max_runtime_seconds"),
        ({"slug": "mine"}, "slug"),
    ],
)
def test_bad_settings_are_422_naming_the_field(key_api, licensed, body, field):
    response = patch(key_api, "/settings", body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert Customer.objects.get(pk=licensed.pk).stale_cleanup_days is None


def test_new_operations_are_in_the_openapi_document_with_their_errors(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/agents"]["get"]["responses"]) >= {"200", "401", "422"}
    assert set(paths["/api/v1/agents/bulk"]["post"]["responses"]) >= {"202", "409", "422"}
    assert set(paths["/api/v1/agents/bulk/{action_id}"]["get"]["responses"]) >= {"200", "404"}
    assert set(paths["/api/v1/settings"]["patch"]["responses"]) >= {"200", "422"}

"""The Hosts, Jobs and Anomalies pages in the customer API: the pages' filters, cursor pages
that visit every row once at a cost that does not grow with the rows, another customer's
rows never listed and their ids a 404 like a missing one, hostile input a 422 naming the
field, and resolve and reopen audited and harmless twice."""

from base64 import b64encode
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet import policy
from fleet.choices import AgentStatus, AnomalyKind, AuditAction, JobStatus
from fleet.models import Agent, Anomaly, AuditEvent, Host, Job
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests import factories
from tests.fleet.api.conftest import ApiClient, walk

pytestmark = pytest.mark.django_db


def ids(rows: list[dict]) -> list[int]:
    return [row["id"] for row in rows]


def assert_each_once_newest_first(rows: list[dict]) -> None:
    assert ids(rows) == sorted(set(ids(rows)), reverse=True)


def queries_for(api: ApiClient, path: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = api.get(path)
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries)


def problem_fields(response) -> list[str]:
    assert response.status_code == 422, response.content
    return [error["field"] for error in response.json()["errors"]]


@pytest.fixture
def theirs(other_customer) -> ApiClient:
    """Another customer's key, and a fleet of theirs that looks like ours."""
    factories.license(other_customer)
    _, secret = api_key_mint(customer=other_customer, name="theirs", actor=SYSTEM)
    return ApiClient(Client(), secret)


# --- hosts ------------------------------------------------------------------------------


@pytest.fixture
def hosts(licensed):
    gpu = factories.host(licensed, zone="eu-1", memory_mb=4096)
    factories.agent(licensed, gpu, role="tester")
    factories.agent(licensed, gpu, role="coder", labels={"gpu": "a100"})
    silent = timezone.now() - timedelta(hours=1)  # offline as every page counts it
    factories.agent(licensed, gpu, role="coder", last_heartbeat_at=silent)
    factories.agent(licensed, gpu, status=AgentStatus.DECOMMISSIONED)  # holds no seat
    plain = [factories.host(licensed, zone="us-1") for _ in range(4)]
    for host in plain:
        factories.agent(licensed, host)
    return gpu, plain


def test_hosts_are_listed_with_their_counts_and_the_pages_filters(key_api, hosts):
    gpu, plain = hosts
    every = walk(key_api, "/hosts")
    assert_each_once_newest_first(every)
    assert set(ids(every)) == {gpu.pk, *(h.pk for h in plain)}
    row = next(r for r in every if r["id"] == gpu.pk)
    assert (row["hostname"], row["zone"], row["memory_mb"]) == (gpu.hostname, "eu-1", 4096)
    assert (row["n_agents"], row["n_testers"], row["n_online"]) == (3, 1, 2)
    assert row["memory_budget_mb"] == 3 * policy.IDLE_AGENT_MB + policy.TESTER_WORKLOAD_MB
    assert ids(walk(key_api, "/hosts", "label=gpu%3Da100")) == [gpu.pk]
    assert ids(walk(key_api, "/hosts", "label=gpu")) == [gpu.pk]
    assert walk(key_api, "/hosts", "label=gpu%3Dh100") == []
    assert set(ids(walk(key_api, "/hosts", "zone=us-1"))) == {h.pk for h in plain}
    assert walk(key_api, "/hosts", "zone=us-1&label=gpu") == []


def test_another_customers_hosts_are_never_listed(key_api, hosts, theirs, other_customer):
    their_host = factories.host(other_customer, zone="eu-1")
    factories.agent(other_customer, their_host, labels={"gpu": "a100"})
    assert their_host.pk not in ids(walk(key_api, "/hosts"))
    assert their_host.pk not in ids(walk(key_api, "/hosts", "label=gpu"))
    assert ids(walk(theirs, "/hosts")) == [their_host.pk]


# --- jobs -------------------------------------------------------------------------------


@pytest.fixture
def jobs(licensed):
    now = timezone.now()
    agent = factories.agent(licensed, role="coder")
    return {
        "queued": [factories.job(licensed, role="coder") for _ in range(3)],
        "gpu": factories.job(licensed, role="tester", required_labels={"gpu": "a100"}),
        "running": factories.job(
            licensed, role="coder", status=JobStatus.RUNNING, agent=agent, started_at=now
        ),
        "done": factories.job(
            licensed, role="reviewer", status=JobStatus.SUCCEEDED, finished_at=now
        ),
    }


def test_jobs_are_listed_with_the_pages_filters(key_api, jobs):
    every = walk(key_api, "/jobs")
    assert_each_once_newest_first(every)
    assert len(every) == 6
    queued = walk(key_api, "/jobs", "status=queued")
    assert set(ids(queued)) == {j.pk for j in jobs["queued"]} | {jobs["gpu"].pk}
    assert ids(walk(key_api, "/jobs", "status=running")) == [jobs["running"].pk]
    coders = walk(key_api, "/jobs", "role=coder")
    assert {row["role"] for row in coders} == {"coder"} and len(coders) == 4
    assert ids(walk(key_api, "/jobs", "status=queued&role=coder")) == sorted(
        (j.pk for j in jobs["queued"]), reverse=True
    )
    labelled = walk(key_api, "/jobs", "label=gpu%3Da100")
    assert ids(labelled) == [jobs["gpu"].pk]
    assert labelled[0]["required_labels"] == {"gpu": "a100"}
    assert walk(key_api, "/jobs", "label=gpu&status=running") == []
    running = walk(key_api, "/jobs", "status=running")[0]
    assert running["agent_id"] == jobs["running"].agent_id


def test_another_customers_jobs_are_never_listed(key_api, jobs, theirs, other_customer):
    their_job = factories.job(other_customer, role="coder", required_labels={"gpu": "a100"})
    assert their_job.pk not in ids(walk(key_api, "/jobs"))
    assert their_job.pk not in ids(walk(key_api, "/jobs", "label=gpu"))
    assert ids(walk(theirs, "/jobs")) == [their_job.pk]
    mine, missing = key_api.get(f"/jobs/{their_job.pk}"), key_api.get("/jobs/999999999")
    assert mine.status_code == missing.status_code == 404
    assert mine.json() == missing.json()


# --- anomalies --------------------------------------------------------------------------


@pytest.fixture
def findings(licensed):
    agent = factories.agent(licensed, name="coder-7")
    opened = factories.anomaly(
        licensed,
        agent=agent,
        kind=AnomalyKind.AGENT_OFFLINE,
        fingerprint=f"agent_offline:{agent.pk}",
        message="coder-7 stopped sending heartbeats.",
    )
    resolved = factories.anomaly(
        licensed, resolved_at=timezone.now(), resolution_note="restarted it"
    )
    return opened, resolved


def test_anomalies_are_listed_by_the_pages_tabs(key_api, findings):
    opened, resolved = findings
    unresolved = walk(key_api, "/anomalies")
    assert ids(unresolved) == [opened.pk] == ids(walk(key_api, "/anomalies", "state=open"))
    row = unresolved[0]
    assert (row["kind"], row["agent_name"], row["cause"]) == (
        "agent_offline",
        "coder-7",
        "agent_offline",
    )
    assert (row["resolved_at"], row["resolution_note"]) == (None, "")
    done = walk(key_api, "/anomalies", "state=resolved")
    assert ids(done) == [resolved.pk] and done[0]["resolution_note"] == "restarted it"
    both = walk(key_api, "/anomalies", "state=all")
    assert_each_once_newest_first(both)
    assert set(ids(both)) == {opened.pk, resolved.pk}


def test_resolve_with_a_note_is_audited_and_harmless_twice(key_api, findings):
    opened, _ = findings
    response = key_api.post(f"/anomalies/{opened.pk}/resolve", {"note": "rebooted the host"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["resolved_at"] is not None and body["resolution_note"] == "rebooted the host"
    assert body["resolved_by"] is None  # a key, not a member
    again = key_api.post(f"/anomalies/{opened.pk}/resolve", {"note": "second thoughts"})
    assert again.status_code == 200
    assert again.json()["resolution_note"] == "rebooted the host"
    assert again.json()["resolved_at"] == body["resolved_at"]
    event = AuditEvent.objects.get(action=AuditAction.ANOMALY_RESOLVE)
    assert event.actor_label == "api-key:ci" and event.target_id == str(opened.pk)
    assert event.changes["note"] == [None, "rebooted the host"]
    assert walk(key_api, "/anomalies") == []


def test_reopen_is_audited_harmless_twice_and_refused_while_a_newer_one_is_open(
    key_api, findings, licensed
):
    _, resolved = findings
    response = key_api.post(f"/anomalies/{resolved.pk}/reopen", {"note": "it is back"})
    assert response.status_code == 200, response.content
    assert (response.json()["resolved_at"], response.json()["resolution_note"]) == (None, "")
    again = key_api.post(f"/anomalies/{resolved.pk}/reopen", {"note": "still back"})
    assert again.status_code == 200 and again.json()["resolved_at"] is None
    event = AuditEvent.objects.get(action=AuditAction.ANOMALY_REOPEN)
    assert (event.actor_label, event.changes["note"]) == ("api-key:ci", [None, "it is back"])

    old = factories.anomaly(
        licensed, fingerprint="disk", resolved_at=timezone.now(), resolution_note="cleaned"
    )
    factories.anomaly(licensed, fingerprint="disk")  # the same cause, open again since
    refused = key_api.post(f"/anomalies/{old.pk}/reopen", {"note": "not fixed"})
    assert (refused.status_code, refused.json()["code"]) == (409, "anomaly_open_elsewhere")
    old.refresh_from_db()
    assert old.resolved_at is not None and old.resolution_note == "cleaned"


def test_one_path_serves_agents_reporting_and_keys_listing(key_api, agent):
    reported = agent.api.post("/anomalies", {"message": "git fetch keeps failing"})
    assert reported.status_code == 200, reported.content
    listed = key_api.get("/anomalies").json()["results"]
    assert ids(listed) == [reported.json()["id"]]
    assert listed[0]["agent_id"] == agent.agent.pk
    assert agent.api.get("/anomalies").status_code == 401  # an agent reads no findings
    assert key_api.post("/anomalies", {"message": "x"}).status_code == 401  # nor reports a key


def test_another_customers_findings_are_never_listed_and_their_ids_are_missing(
    key_api, findings, theirs, other_customer
):
    open_theirs = factories.anomaly(other_customer)
    closed_theirs = factories.anomaly(other_customer, resolved_at=timezone.now())
    assert not {open_theirs.pk, closed_theirs.pk} & set(
        ids(walk(key_api, "/anomalies", "state=all"))
    )
    for anomaly in (open_theirs, closed_theirs):
        for action in ("resolve", "reopen"):
            mine = key_api.post(f"/anomalies/{anomaly.pk}/{action}", {"note": "mine now"})
            missing = key_api.post(f"/anomalies/999999999/{action}", {"note": "mine now"})
            assert mine.status_code == missing.status_code == 404
            assert mine.json() == missing.json()
    open_theirs.refresh_from_db()
    closed_theirs.refresh_from_db()
    assert open_theirs.resolved_at is None and closed_theirs.resolved_at is not None
    assert not AuditEvent.objects.filter(
        action__in=[AuditAction.ANOMALY_RESOLVE, AuditAction.ANOMALY_REOPEN]
    ).exists()


# --- every list -------------------------------------------------------------------------


def _rows(customer, n: int) -> None:
    """n more hosts, each with an agent that has a job and a finding."""
    start = Host.objects.count()
    hosts = Host.objects.bulk_create(
        Host(customer=customer, hostname=f"bulk-{start + i}", machine_id=f"bulk-{start + i}")
        for i in range(n)
    )
    agents = Agent.objects.bulk_create(factories.agent_row(customer, host) for host in hosts)
    Job.objects.bulk_create(factories.job_row(customer, agent=None) for _ in agents)
    Anomaly.objects.bulk_create(
        Anomaly(
            customer=customer,
            agent=agent,
            kind=AnomalyKind.AGENT_REPORTED,
            fingerprint=f"bulk-{agent.pk}",
        )
        for agent in agents
    )


@pytest.mark.parametrize(
    "path", ["/hosts", "/hosts?label=gpu", "/jobs", "/jobs?status=queued", "/anomalies"]
)
def test_a_page_of_50_costs_the_same_for_10_rows_or_1000(key_api, licensed, path):
    page = f"{path}{'&' if '?' in path else '?'}page_size=50"
    _rows(licensed, 10)
    key_api.get(page)  # the key's last use is written at most once a minute
    few = queries_for(key_api, page)
    _rows(licensed, 990)
    many = queries_for(key_api, page)
    assert few == many <= 2  # the key, the page
    assert len(key_api.get(page).json()["results"]) == (0 if "label" in path else 50)


@pytest.mark.parametrize(
    "query",
    [
        "/hosts?label=gpu%00",
        "/hosts?zone=" + "z" * 65,
        "/hosts?cursor=%21%21not-base64",
        "/hosts?page_size=0",
        "/jobs?status=sleeping",
        "/jobs?role=pilot",
        "/jobs?label=a%00b",
        "/jobs?cursor=" + b64encode(b"p=abc").decode(),
        "/jobs?page_size=100000",
        "/anomalies?state=closed",
        "/anomalies?cursor=" + b64encode(b"p=1&o=-5").decode(),
    ],
)
def test_hostile_list_queries_are_422_naming_the_field(key_api, licensed, query):
    field = query.split("?", 1)[1].split("=", 1)[0]
    assert problem_fields(key_api.get(query)) == [field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "note"),
        ({"note": ""}, "note"),
        ({"note": "   "}, "note"),
        ({"note": "a\x00b"}, "note"),
        ({"note": "x" * 2001}, "note"),
        ({"note": "fixed", "resolved_by": "root"}, "resolved_by"),
    ],
)
def test_hostile_notes_are_422_naming_the_field(key_api, findings, body, field):
    opened, resolved = findings
    assert problem_fields(key_api.post(f"/anomalies/{opened.pk}/resolve", body)) == [field]
    assert problem_fields(key_api.post(f"/anomalies/{resolved.pk}/reopen", body)) == [field]
    assert problem_fields(key_api.post("/anomalies/x/resolve", {"note": "ok"})) == ["anomaly_id"]
    assert not AuditEvent.objects.filter(action=AuditAction.ANOMALY_RESOLVE).exists()


def test_the_lists_need_a_key(anon, agent):
    for path in ("/hosts", "/jobs", "/anomalies"):
        assert anon.get(path).status_code == 401
        assert anon.get(path, secret=agent.secret).status_code == 401


def test_the_new_operations_are_in_the_openapi_document_with_their_errors(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    lists = {"200", "401", "403", "422", "429", "503"}
    assert set(paths["/api/v1/hosts"]["get"]["responses"]) == lists
    assert set(paths["/api/v1/jobs"]["get"]["responses"]) == lists
    assert set(paths["/api/v1/anomalies"]["get"]["responses"]) == lists
    assert "post" in paths["/api/v1/anomalies"]  # the agents' report, on the same path
    assert {p["name"] for p in paths["/api/v1/jobs"]["get"]["parameters"]} >= {
        "status",
        "role",
        "label",
        "cursor",
        "page_size",
    }
    for action in ("resolve", "reopen"):
        responses = set(paths[f"/api/v1/anomalies/{{anomaly_id}}/{action}"]["post"]["responses"])
        assert responses >= {"200", "401", "404", "413", "422", "429", "503"}
    assert "409" in paths["/api/v1/anomalies/{anomaly_id}/reopen"]["post"]["responses"]

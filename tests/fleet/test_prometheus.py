"""GET /metrics: the Prometheus exposition, parsed back with prometheus_client's parser."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import OperationalError, connection
from django.test import Client
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from fleet import prometheus
from fleet.choices import AgentRole, AgentStatus, Channel, JobCancelReason, JobStatus
from fleet.models import Agent, Job
from fleet.selectors import fleet_metrics, role_numbers
from fleet.services.api_keys import api_key_mint, api_key_revoke
from fleet.services.audit import SYSTEM
from tests import factories

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 2, 12, 0, 30, tzinfo=UTC)
STAFF_TOKEN = "staff-scrape-token-0123456789-abcdefghijklmnopqrstuvwxyz"
# A scrape's statements, whatever the fleet's size: the key, the license, the latest
# release, agents, jobs, waits, findings (staff: the customers instead of the key). SQLite
# has no percentile_cont: its waits are two plain reads.
STATEMENTS = 7 if connection.vendor == "postgresql" else 8

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(secret: str | None, client: Client | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret is not None else {}
    return (client or Client()).get("/metrics", **headers)


def samples(response) -> Samples:
    """Every sample of a 200 scrape, by name and labels; every family documented."""
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    found: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        assert family.name.startswith("agentina_")
        assert family.documentation, family.name
        for s in family.samples:
            found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def value(found: Samples, name: str, customer: str, **labels: str) -> float | None:
    return found.get((f"agentina_{name}", tuple(sorted({"customer": customer, **labels}.items()))))


def of_customer(found: Samples, customer: str) -> Samples:
    return {k: v for k, v in found.items() if ("customer", customer) in k[1]}


def key_for(customer) -> str:
    return api_key_mint(customer=customer, name="prometheus", actor=SYSTEM)[1]


def job(customer, *, queued_ago: timedelta, role: str = AgentRole.CODER, **fields) -> Job:
    made = factories.job(customer, role=role, **fields)
    Job.objects.filter(pk=made.pk).update(queued_at=NOW - queued_ago)
    return made


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def acme():
    """A small fleet with known numbers, on stable (latest 1.10.0):
    - agents: two coders online (1.10.0, 1.9.3); a reviewer whose status says online but
      which has been silent 10 minutes (1.9.3: offline by every number); a paused tester
      heard now (1.10.0); an indexer offline an hour (1.8.0); a decommissioned one.
    - coder jobs: queued 120 s and 30 s ago; one running, which waited 20 s two minutes
      ago; two succeeded in the last hour, one 90 minutes ago; a reviewer job queued 60 s
      ago and one failed; a tester job timed out and one cancelled by an operator.
    - two open findings, one resolved."""
    customer = factories.customer(slug="acme")
    factories.license(customer, channel=Channel.STABLE)
    factories.release("1.9.3")
    factories.release("1.10.0")
    factories.release("1.11.0-beta.1", channel=Channel.BETA)
    heard = {"last_heartbeat_at": NOW}
    coder = factories.agent(customer, role=AgentRole.CODER, version="1.10.0", **heard)
    factories.agent(customer, role=AgentRole.CODER, version="1.9.3", **heard)
    factories.agent(
        customer,
        role=AgentRole.REVIEWER,
        version="1.9.3",
        status=AgentStatus.ONLINE,
        last_heartbeat_at=NOW - timedelta(minutes=10),
    )
    factories.agent(
        customer, role=AgentRole.TESTER, version="1.10.0", status=AgentStatus.PAUSED, **heard
    )
    factories.agent(
        customer,
        role=AgentRole.INDEXER,
        version="1.8.0",
        status=AgentStatus.OFFLINE,
        last_heartbeat_at=NOW - timedelta(hours=1),
    )
    factories.agent(customer, version="0.9.0", status=AgentStatus.DECOMMISSIONED)

    minutes = timedelta(minutes=1)
    job(customer, queued_ago=timedelta(seconds=120))
    job(customer, queued_ago=timedelta(seconds=30))
    job(
        customer,
        queued_ago=timedelta(seconds=140),
        status=JobStatus.RUNNING,
        agent=coder,
        started_at=NOW - timedelta(seconds=120),
    )
    for ago in (10, 50, 90):
        job(
            customer,
            queued_ago=(ago + 5) * minutes,
            status=JobStatus.SUCCEEDED,
            agent=coder,
            started_at=NOW - (ago + 4) * minutes,
            finished_at=NOW - ago * minutes,
        )
    job(customer, queued_ago=timedelta(seconds=60), role=AgentRole.REVIEWER)
    job(
        customer,
        queued_ago=30 * minutes,
        role=AgentRole.REVIEWER,
        status=JobStatus.FAILED,
        started_at=NOW - 29 * minutes,
        finished_at=NOW - 20 * minutes,
    )
    for reason in (JobCancelReason.TIMED_OUT, JobCancelReason.OPERATOR):
        job(
            customer,
            queued_ago=40 * minutes,
            role=AgentRole.TESTER,
            status=JobStatus.CANCELLED,
            stop_reason=reason,
            started_at=NOW - 39 * minutes,
            finished_at=NOW - 15 * minutes,
        )
    factories.anomaly(customer)
    factories.anomaly(customer)
    factories.anomaly(customer, resolved_at=NOW)
    return customer


@pytest.fixture
def globex():
    """Another customer, on beta (latest 1.11.0-beta.1), whose numbers must stay its own."""
    customer = factories.customer(slug="globex")
    factories.license(customer, channel=Channel.BETA)
    for _ in range(3):
        factories.agent(customer, role=AgentRole.TESTER, version="1.7.0")
    job(customer, queued_ago=timedelta(seconds=900), role=AgentRole.TESTER)
    factories.anomaly(customer)
    return customer


def test_a_key_scrapes_its_fleet_with_exact_numbers(acme, globex):
    recent = Job.objects.filter(
        customer=acme, role="coder", finished_at__gt=NOW - timedelta(hours=1)
    )
    costly = recent.update(cost_usd=Decimal("0.25"), input_tokens=100, output_tokens=10)
    found = samples(scrape(key_for(acme)))

    def v(name: str, **labels: str) -> float | None:
        return value(found, name, "acme", **labels)

    # The reviewer silent for 10 minutes is offline, though its status column says online.
    assert {s: v("agents", status=s) for s in ("online", "offline", "upgrading", "paused")} == {
        "online": 2,
        "offline": 2,
        "upgrading": 0,
        "paused": 1,
    }
    assert v("agents", status="draining") == 0
    assert v("agents_online") == 3  # heard within the window: the paused tester too
    assert v("agents_online_ratio") == pytest.approx(3 / 5)
    assert {ver: v("agents_by_version", version=ver) for ver in ("1.8.0", "1.9.3", "1.10.0")} == {
        "1.8.0": 1,
        "1.9.3": 2,
        "1.10.0": 2,
    }
    assert v("agents_by_version", version="0.9.0") is None  # decommissioned
    assert (v("agents_not_on_latest"), v("agents_minor_behind")) == (3, 1)
    assert v("jobs_completed_last_hour") == 2
    assert (v("jobs_failed_last_hour"), v("jobs_timed_out_last_hour")) == (1, 1)
    assert v("anomalies_unresolved") == 2

    assert v("role_agents", role="reviewer") == 1
    assert v("role_agents_online", role="reviewer") == 0
    assert (v("role_agents", role="coder"), v("role_agents_online", role="coder")) == (2, 2)
    assert {r: v("jobs_queued", role=r) for r in AgentRole.values} == {
        "coder": 2,
        "reviewer": 1,
        "tester": 0,
        "indexer": 0,
    }
    assert v("jobs_running", role="coder") == 1
    assert v("jobs_oldest_wait_seconds", role="coder") == 120
    assert v("jobs_oldest_wait_seconds", role="reviewer") == 60
    assert v("jobs_oldest_wait_seconds", role="tester") == 0  # nothing waits
    # Coder waits: 20 s (started 2 minutes ago), 120 s and 30 s (still queued).
    assert v("jobs_wait_p50_seconds", role="coder") == pytest.approx(30)
    assert v("jobs_wait_p95_seconds", role="coder") == pytest.approx(30 + 0.9 * 90)
    assert v("jobs_wait_p50_seconds", role="reviewer") == pytest.approx(60)
    assert v("jobs_wait_p95_seconds", role="reviewer") == pytest.approx(60)
    assert v("jobs_wait_p50_seconds", role="tester") is None  # no wait in the window

    assert v("role_cost_usd_last_hour", role="coder") == pytest.approx(0.25 * costly)
    assert v("role_tokens_last_hour", role="coder") == 110 * costly
    assert costly and v("role_cost_usd_last_hour", role="tester") == 0

    assert of_customer(found, "globex") == {}  # tenancy
    assert all(("customer", "acme") in labels for _, labels in found)


def test_the_numbers_are_fleet_metrics_and_role_numbers(acme):
    """The exporter reads set-based, the dashboard through the selectors: the same answers."""
    found = samples(scrape(key_for(acme)))
    metrics = fleet_metrics(acme, now=NOW)
    assert value(found, "agents_online_ratio", "acme") == pytest.approx(metrics.online_ratio)
    assert value(found, "agents_online", "acme") == metrics.agents_online
    for name in (
        "jobs_completed_last_hour",
        "jobs_failed_last_hour",
        "jobs_timed_out_last_hour",
        "anomalies_unresolved",
        "agents_not_on_latest",
        "agents_minor_behind",
    ):
        assert value(found, name, "acme") == getattr(metrics, name), name
    for numbers in role_numbers(acme, now=NOW):
        role = numbers.role
        assert value(found, "role_agents", "acme", role=role) == numbers.agents
        assert value(found, "role_agents_online", "acme", role=role) == numbers.online
        assert value(found, "jobs_queued", "acme", role=role) == numbers.queued
        assert value(found, "jobs_running", "acme", role=role) == numbers.running
        oldest = value(found, "jobs_oldest_wait_seconds", "acme", role=role)
        assert oldest == (numbers.oldest_wait_seconds or 0)


def test_staff_see_every_customer_labelled_as_its_own_key_does(acme, globex, settings):
    settings.METRICS_TOKEN = STAFF_TOKEN
    empty = factories.customer(slug="initech")
    found = samples(scrape(STAFF_TOKEN))
    for customer in (acme, globex, empty):
        assert of_customer(found, customer.slug) == samples(scrape(key_for(customer)))
    assert sum(len(of_customer(found, c.slug)) for c in (acme, globex, empty)) == len(found)
    assert value(found, "agents", "globex", status="online") == 3
    assert value(found, "agents_not_on_latest", "globex") == 3  # against 1.11.0-beta.1
    assert value(found, "jobs_oldest_wait_seconds", "globex", role="tester") == 900
    assert value(found, "agents", "initech", status="online") == 0
    assert value(found, "agents_online_ratio", "initech") is None  # no agents, no ratio


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer agtn_key_nope",
        "Bearer agtn_key_" + "A" * 38,  # the shape of a key, not its checksum
        "Bearer " + STAFF_TOKEN[:-1],
        "Bearer " + STAFF_TOKEN + "x",
        "Bearer ÿ\u00e9\u00ff" * 50,
        "Bearer " + "x" * 8000,
        "Bearer \x00\x01\x7f",
        "bearer\tsomething",
    ],
)
def test_missing_or_bad_credentials_are_401(acme, authorization, settings):
    settings.METRICS_TOKEN = STAFF_TOKEN
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "unauthorized"
    assert b"agentina_" not in response.content


def test_a_revoked_key_is_401(acme):
    secret = key_for(acme)
    assert scrape(secret).status_code == 200
    api_key_revoke(key=acme.api_keys.get(), actor=SYSTEM)
    response = scrape(secret)
    assert (response.status_code, response["WWW-Authenticate"][:6]) == (401, "Bearer")


@pytest.mark.parametrize("token", ["", STAFF_TOKEN])
def test_without_metrics_token_no_staff_scrape(acme, settings, token):
    """Empty METRICS_TOKEN turns the staff scrape off: an empty bearer is no password."""
    settings.METRICS_TOKEN = ""
    assert scrape(token).status_code == 401


def test_only_get(acme):
    response = Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {key_for(acme)}")
    assert response.status_code == 405


def test_a_database_fault_is_503_with_retry_after(acme, monkeypatch):
    def unreachable(customer, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(prometheus, "fleet_scrape", unreachable)
    response = scrape(key_for(acme))
    assert (response.status_code, response.json()["code"]) == (503, "service_unavailable")
    assert response["Retry-After"] == "5"


def grow(customer, agents: int) -> None:
    """`agents` more agents across roles, versions and presence, each of them with jobs."""
    host = factories.host(customer)
    roles, versions = AgentRole.values, ["1.8.0", "1.9.3", "1.10.0"]
    rows = [
        factories.agent_row(
            customer,
            host,
            role=roles[i % 4],
            version=versions[i % 3],
            status=AgentStatus.ONLINE if i % 5 else AgentStatus.OFFLINE,
            last_heartbeat_at=NOW - timedelta(seconds=30 if i % 5 else 3600),
        )
        for i in range(agents)
    ]
    created = Agent.objects.bulk_create(rows)
    Job.objects.bulk_create(
        factories.job_row(
            customer,
            role=a.role,
            status=JobStatus.SUCCEEDED,
            agent=a,
            started_at=NOW - timedelta(minutes=3),
            finished_at=NOW - timedelta(minutes=2),
        )
        for a in created
    )
    Job.objects.bulk_create(
        factories.job_row(customer, role=roles[i % 4]) for i in range(agents // 2)
    )


@pytest.mark.parametrize("agents", [10, 1000])
def test_a_key_scrape_is_a_fixed_number_of_statements(acme, agents, django_assert_num_queries):
    grow(acme, agents)
    secret = key_for(acme)
    client = Client()
    scrape(secret, client)  # the first use of a key also records it (once a minute)
    with django_assert_num_queries(STATEMENTS):
        found = samples(scrape(secret, client))
    assert value(found, "agents_online", "acme") == 3 + agents - agents // 5


@pytest.mark.parametrize("agents", [10, 1000])
def test_a_staff_scrape_is_a_fixed_number_of_statements(
    acme, globex, agents, settings, django_assert_num_queries
):
    """Set-based: the same statements for every customer together, plus one latest
    release for each channel in use (stable and beta here)."""
    settings.METRICS_TOKEN = STAFF_TOKEN
    grow(acme, agents)
    grow(globex, agents)
    for n in range(20):
        factories.customer(slug=f"quiet-{n}")
    with django_assert_num_queries(STATEMENTS + 1):
        found = samples(scrape(STAFF_TOKEN))
    assert value(found, "agents_online", "globex") == 3 + agents - agents // 5
    assert value(found, "agents_online", "quiet-19") == 0

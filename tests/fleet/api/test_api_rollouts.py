"""Upgrade waves in the customer API: start one with the Upgrades form's settings, watch
its steps and the latest gate in words, steer it with every control the page offers (each
audited with the key's name, a repeat a clear 409); another customer's wave is as missing
as no wave at all."""

from base64 import b64encode
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.choices import AgentRole, AuditAction, Channel, RolloutState
from fleet.models import AuditEvent, Rollout
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from fleet.services.rollouts import rollout_record_result, rollouts_advance_all
from fleet.versions import SemVer
from tests import factories
from tests.fleet.api.conftest import ApiClient, walk

pytestmark = pytest.mark.django_db

START = {"release": "1.10.0", "reason": "the monthly upgrade"}
STEERS = ("pause", "resume", "resume-anyway", "set-floor", "skip-soak", "retry-failed", "abort")


def steer_body(action: str) -> dict:
    return {"reason": "testing", **({"floor_percent": 80} if action == "set-floor" else {})}


def problem_fields(response) -> list[str]:
    assert response.status_code == 422, response.content
    return [error["field"] for error in response.json()["errors"]]


@pytest.fixture
def fleet(licensed):
    """Eight online agents on 1.9.3, every role, over two hosts in two zones; 1.10.0 is the
    newest release of the license's channel."""
    hosts = [factories.host(licensed, zone=zone) for zone in ("a", "b")]
    for i in range(8):
        factories.agent(licensed, hosts[i % 2], role=AgentRole.values[i % 4], version="1.9.3")
    return licensed


@pytest.fixture
def wave(key_api, fleet) -> dict:
    response = key_api.post("/rollouts", START)
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def their_wave(other_customer) -> Rollout:
    return factories.started_wave(other_customer)


def test_a_wave_starts_with_the_default_settings_and_is_audited(key_api, fleet, wave):
    assert (wave["state"], wave["release"], wave["current_batch"]) == ("canary", "1.10.0", 0)
    assert (wave["agents"], wave["agents_upgraded"]) == (8, 0)
    assert wave["canary_agent_id"] is not None and wave["canary_agent"]
    assert (wave["canary_soak_hours"], wave["batch_percent"]) == (24, 25)
    assert (wave["batch_watch_minutes"], wave["online_floor_percent"]) == (60, 95)
    assert wave["last_gate"] is None and wave["paused_reason"] == ""
    assert set(wave["actions"]) == {"pause", "skip_soak", "retry_failed", "set_floor", "abort"}
    canary, *batches = wave["batches"]
    assert (canary["number"], canary["label"], canary["total"]) == (0, "Canary", 1)
    assert canary["counts"] == {"offered": 1}
    assert sum(b["total"] for b in batches) == 7 and wave["batches_total"] == len(batches)
    event = AuditEvent.objects.get(action=AuditAction.ROLLOUT_START)
    assert event.actor_label == "api-key:ci" and event.target_id == str(wave["id"])
    assert event.changes["reason"] == [None, "the monthly upgrade"]
    assert key_api.get(f"/rollouts/{wave['id']}").json() == wave


def test_a_wave_starts_with_the_forms_settings(key_api, fleet):
    canary = fleet.agents.filter(role="tester").first()
    response = key_api.post(
        "/rollouts",
        {
            **START,
            "canary_agent_id": canary.pk,
            "canary_soak_hours": 0,
            "batch_percent": 50,
            "batch_watch_minutes": 0,
            "online_floor_percent": 80,
            "acceptance_drop_tolerance_percent": 10,
            "cost_increase_tolerance_percent": 100,
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["canary_agent_id"], body["canary_soak_hours"]) == (canary.pk, 0)
    assert (body["batch_percent"], body["batch_watch_minutes"]) == (50, 0)
    assert body["online_floor_percent"] == 80
    rollout = Rollout.objects.get()
    assert (rollout.canary_soak, rollout.batch_watch) == (timedelta(0), timedelta(0))
    assert (rollout.batch_fraction, rollout.online_ratio_floor) == (Decimal("0.5"), Decimal("0.8"))
    assert (rollout.acceptance_drop_tolerance, rollout.cost_increase_tolerance) == (
        Decimal("0.1"),
        Decimal("1"),
    )
    assert (body["acceptance_drop_tolerance_percent"], body["cost_increase_tolerance_percent"]) == (
        10,
        100,
    )


def test_a_second_start_is_a_clear_409_and_starts_nothing(key_api, wave):
    again = key_api.post("/rollouts", START)
    assert (again.status_code, again.json()["code"]) == (409, "rollout_refused")
    assert "under way" in again.json()["detail"]
    assert Rollout.objects.count() == 1


def test_the_service_refuses_what_cannot_be_upgraded(key_api, fleet):
    factories.release("1.9.0")
    downgrade = key_api.post("/rollouts", {**START, "release": "1.9.0"})
    assert (downgrade.status_code, downgrade.json()["code"]) == (409, "rollout_refused")
    nothing = key_api.post("/rollouts", {**START, "release": "1.9.3"})
    assert (nothing.status_code, nothing.json()["code"]) == (409, "rollout_refused")
    assert not Rollout.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"release": "2.0.0"}, "release"),  # no such release
        ({"release": "2.1.0-beta"}, "release"),  # not in the license's channel
        ({"release": "1.8.0"}, "release"),  # yanked
        ({"release": "latest"}, "release"),
        ({"release": "1.10.0\x00"}, "release"),
        ({"canary_agent_id": 999_999_999}, "canary_agent_id"),
        ({"canary_agent_id": 0}, "canary_agent_id"),
        ({"canary_agent_id": 2**63}, "canary_agent_id"),
        ({"batch_percent": 100}, "batch_percent"),  # all at once
        ({"batch_percent": 0}, "batch_percent"),
        ({"canary_soak_hours": -1}, "canary_soak_hours"),
        ({"batch_watch_minutes": 24 * 60 + 1}, "batch_watch_minutes"),
        ({"online_floor_percent": 101}, "online_floor_percent"),
        ({"online_floor_percent": "most"}, "online_floor_percent"),
        ({"acceptance_drop_tolerance_percent": 101}, "acceptance_drop_tolerance_percent"),
        ({"cost_increase_tolerance_percent": -1}, "cost_increase_tolerance_percent"),
        ({"reason": ""}, "reason"),
        ({"reason": "a\x00b"}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"scope": {"planet": ["mars"]}}, "scope.planet"),
        ({"scope": {"role": ["pilot"]}}, "scope.role.0"),
        ({"scope": {"labels": {"bad key": "x"}}}, "scope.labels"),
        ({"scope": {"zone": ["z" * 300]}}, "scope.zone.0"),
        ({"all_at_once": True}, "all_at_once"),
    ],
)
def test_hostile_starts_are_422_naming_the_field(key_api, fleet, body, field):
    factories.release("2.1.0-beta", channel=Channel.BETA)
    factories.release("1.8.0", yanked=True)
    assert problem_fields(key_api.post("/rollouts", {**START, **body})) == [field]
    assert not Rollout.objects.exists()


def test_a_canary_must_be_an_online_agent_of_the_customer(key_api, fleet, other_customer):
    theirs = factories.agent(other_customer, version="1.9.3")
    offline = factories.agent(
        fleet, version="1.9.3", last_heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    for agent in (theirs, offline):
        response = key_api.post("/rollouts", {**START, "canary_agent_id": agent.pk})
        assert problem_fields(response) == ["canary_agent_id"]
    assert not Rollout.objects.exists()


def test_pause_resume_abort_are_audited_and_a_repeat_is_a_clear_409(key_api, wave):
    url = f"/rollouts/{wave['id']}"
    paused = key_api.post(f"{url}/pause", {"reason": "a holiday"})
    assert paused.status_code == 200, paused.content
    assert paused.json()["state"] == "paused"
    assert paused.json()["paused_reason"] == "paused by api-key:ci: a holiday"
    assert set(paused.json()["actions"]) >= {"resume", "resume_anyway", "abort"}
    twice = key_api.post(f"{url}/pause", {"reason": "a holiday"})
    assert (twice.status_code, twice.json()["code"]) == (409, "rollout_state")

    resumed = key_api.post(f"{url}/resume", {"reason": "back"})
    assert (resumed.status_code, resumed.json()["state"]) == (200, "canary")
    assert resumed.json()["paused_reason"] == ""
    assert key_api.post(f"{url}/resume", {"reason": "back"}).status_code == 409

    aborted = key_api.post(f"{url}/abort", {"reason": "a bad release"})
    assert (aborted.status_code, aborted.json()["state"]) == (200, "aborted")
    assert aborted.json()["finished_at"] is not None and aborted.json()["actions"] == []
    counts = [b["counts"] for b in aborted.json()["batches"]]
    assert all(set(c) == {"excluded"} for c in counts)  # no agent told anything more
    again = key_api.post(f"{url}/abort", {"reason": "a bad release"})
    assert (again.status_code, again.json()["code"]) == (409, "rollout_state")
    assert Rollout.objects.get().state == RolloutState.ABORTED

    events = AuditEvent.objects.filter(target_type="fleet.rollout").order_by("pk")
    assert [(e.action, e.actor_label) for e in events] == [
        (AuditAction.ROLLOUT_START, "api-key:ci"),
        (AuditAction.ROLLOUT_PAUSE, "api-key:ci"),
        (AuditAction.ROLLOUT_RESUME, "api-key:ci"),
        (AuditAction.ROLLOUT_ABORT, "api-key:ci"),
    ]
    assert events[3].changes["reason"] == [None, "a bad release"]


def test_the_other_controls_of_the_page(key_api, wave):
    url = f"/rollouts/{wave['id']}"
    floor = key_api.post(f"{url}/set-floor", {"reason": "a small fleet", "floor_percent": 80})
    assert (floor.status_code, floor.json()["online_floor_percent"]) == (200, 80)
    assert key_api.post(f"{url}/skip-soak", {"reason": "seen enough"}).status_code == 200
    assert Rollout.objects.get().skip_soak is True
    assert key_api.post(f"{url}/retry-failed", {"reason": "flaky"}).status_code == 200
    refused = key_api.post(f"{url}/resume-anyway", {"reason": "judged"})
    assert (refused.status_code, refused.json()["code"]) == (409, "rollout_state")
    key_api.post(f"{url}/pause", {"reason": "look first"})
    anyway = key_api.post(f"{url}/resume-anyway", {"reason": "judged the gate"})
    assert (anyway.json()["state"], anyway.json()["gates_waived_batch"]) == ("canary", 0)
    actions = AuditEvent.objects.filter(actor_label="api-key:ci").values_list("action", flat=True)
    assert set(actions) >= {
        AuditAction.ROLLOUT_FLOOR,
        AuditAction.ROLLOUT_SKIP_SOAK,
        AuditAction.ROLLOUT_RETRY_FAILED,
        AuditAction.ROLLOUT_RESUME,
    }


def test_the_latest_gate_reads_in_words(key_api, wave):
    text = "88% of the wave's 8 agents are online (below the floor of 95%): 1 offline — sim-4."
    Rollout.objects.filter(pk=wave["id"]).update(
        last_gate={
            "at": "2026-01-01T12:00:00+00:00",
            "checks": [
                {"name": "upgraded agents", "passed": True, "text": "1 of 1 on 1.10.0."},
                {"name": "online floor", "passed": False, "text": text},
            ],
        }
    )
    gate = key_api.get(f"/rollouts/{wave['id']}").json()["last_gate"]
    assert gate["passed"] is False and gate["at"].startswith("2026-01-01T12:00:00")
    assert [c["text"] for c in gate["checks"] if not c["passed"]] == [text]
    listed = key_api.get("/rollouts").json()["results"][0]
    assert listed["last_gate"] == gate and "batches" not in listed


def test_waves_are_listed_newest_first_each_once(key_api, fleet, their_wave):
    release = factories.release("1.11.0")
    done = [
        factories.rollout(fleet, release, state=RolloutState.COMPLETED, finished_at=timezone.now())
        for _ in range(4)
    ]
    started = key_api.post("/rollouts", START).json()
    every = walk(key_api, "/rollouts")
    assert [r["id"] for r in every] == [started["id"], *sorted((r.pk for r in done), reverse=True)]
    assert their_wave.pk not in {r["id"] for r in every}


def test_another_customers_wave_is_as_missing_as_none(key_api, fleet, their_wave):
    for path in ("", *(f"/{action}" for action in STEERS)):
        send = key_api.get if not path else lambda url, p=path: key_api.post(url, steer_body(p[1:]))
        theirs, missing = send(f"/rollouts/{their_wave.pk}{path}"), send(f"/rollouts/999999{path}")
        assert theirs.status_code == missing.status_code == 404, path
        assert theirs.json() == missing.json()
    their_wave.refresh_from_db()
    assert their_wave.state == RolloutState.CANARY and their_wave.skip_soak is False
    assert not AuditEvent.objects.filter(actor_label="api-key:ci").exists()


def test_their_key_sees_only_their_wave(other_customer, their_wave, wave):
    _, secret = api_key_mint(customer=other_customer, name="theirs", actor=SYSTEM)
    theirs = ApiClient(Client(), secret)
    assert [r["id"] for r in walk(theirs, "/rollouts")] == [their_wave.pk]
    assert theirs.get(f"/rollouts/{wave['id']}").status_code == 404


def _completed_waves(customer, n: int) -> None:
    release = factories.release(f"1.{20 + Rollout.objects.count()}.0")
    Rollout.objects.bulk_create(
        Rollout(
            customer=customer,
            release=release,
            state=RolloutState.COMPLETED,
            canary_agent=customer.agents.first(),
        )
        for _ in range(n)
    )


def test_a_page_of_waves_costs_the_same_for_10_or_1000(key_api, fleet):
    _completed_waves(fleet, 10)
    key_api.get("/rollouts")  # the key's last use is written at most once a minute
    with CaptureQueriesContext(connection) as few:
        key_api.get("/rollouts?page_size=50")
    _completed_waves(fleet, 990)
    with CaptureQueriesContext(connection) as many:
        response = key_api.get("/rollouts?page_size=50")
    assert len(response.json()["results"]) == 50
    assert len(few.captured_queries) == len(many.captured_queries) <= 2  # the key, the page


def test_a_wave_reads_in_a_fixed_number_of_queries(key_api, wave, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):  # the key, the wave, its steps
        key_api.get(f"/rollouts/{wave['id']}")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/pause", {}, "reason"),
        ("/pause", {"reason": " "}, "reason"),
        ("/resume", {"reason": "x" * 2001}, "reason"),
        ("/abort", {"reason": "a\x00"}, "reason"),
        ("/abort", {"reason": "why", "force": True}, "force"),
        ("/set-floor", {"reason": "why"}, "floor_percent"),
        ("/set-floor", {"reason": "why", "floor_percent": 101}, "floor_percent"),
        ("/set-floor", {"reason": "why", "floor_percent": "NaN"}, "floor_percent"),
    ],
)
def test_hostile_steering_is_422_naming_the_field(key_api, wave, path, body, field):
    assert problem_fields(key_api.post(f"/rollouts/{wave['id']}{path}", body)) == [field]
    abc = key_api.post(f"/rollouts/abc{path}", steer_body(path[1:]))
    assert problem_fields(abc) == ["rollout_id"]
    assert Rollout.objects.get().state == RolloutState.CANARY


@pytest.mark.parametrize(
    "query",
    [
        "cursor=%21%21not-base64",
        "cursor=" + b64encode(b"p=abc").decode(),
        "page_size=0",
        "page_size=201",
    ],
)
def test_hostile_list_queries_are_422_naming_the_field(key_api, fleet, query):
    assert problem_fields(key_api.get(f"/rollouts?{query}")) == [query.split("=", 1)[0]]


def test_waves_need_a_key(anon, agent, fleet):
    for secret in ("", agent.secret):
        assert anon.get("/rollouts", secret=secret).status_code == 401
        assert anon.post("/rollouts", START, secret=secret).status_code == 401
    assert not Rollout.objects.exists()


def test_a_wave_started_through_the_api_moves_on_with_beat(key_api, fleet):
    """The engine takes it like any other: once the canary reports, beat gates the step
    and the wave shows the gate in words."""
    wave = key_api.post("/rollouts", {**START, "canary_soak_hours": 0}).json()
    canary = fleet.agents.get(pk=wave["canary_agent_id"])
    canary.version = SemVer("1.10.0")
    canary.save(update_fields=["version"])
    rollout_record_result(
        agent=canary, outcome="succeeded", to_version=SemVer("1.10.0"), detail="", actor=SYSTEM
    )
    rollouts_advance_all()
    body = key_api.get(f"/rollouts/{wave['id']}").json()
    assert (body["state"], body["current_batch"], body["agents_upgraded"]) == ("rolling", 1, 1)
    assert body["last_gate"]["passed"] is True
    assert all(check["text"] for check in body["last_gate"]["checks"])
    assert body["batches"][0]["counts"] == {"succeeded": 1}


def test_the_new_operations_are_in_the_openapi_document_with_their_errors(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/rollouts"]["get"]["responses"]) == {
        "200",
        "401",
        "403",
        "422",
        "429",
        "503",
    }
    assert set(paths["/api/v1/rollouts"]["post"]["responses"]) == {
        "201",
        "401",
        "403",
        "409",
        "413",
        "422",
        "429",
        "503",
    }
    assert set(paths["/api/v1/rollouts/{rollout_id}"]["get"]["responses"]) >= {"200", "404"}
    for action in STEERS:
        responses = paths[f"/api/v1/rollouts/{{rollout_id}}/{action}"]["post"]["responses"]
        assert set(responses) >= {"200", "401", "404", "409", "413", "422", "429", "503"}

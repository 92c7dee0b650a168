"""A wave's scope (roles, zones, hosts, labels) set through the API, and maintenance
windows: outside a customer's window no wave step starts (time-travelled)."""

from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine

from fleet.choices import AgentRole, RolloutTargetState
from fleet.models import AuditEvent, Customer, Release, Rollout, RolloutTarget
from fleet.services.audit import SYSTEM
from fleet.services.rollouts import rollout_advance, rollout_start
from tests import factories
from tests.fleet.api.conftest import activate, beat

pytestmark = pytest.mark.django_db
START = {"release": "1.10.0", "reason": "the monthly upgrade"}


def test_a_wave_upgrades_only_its_scope(key_api, licensed):
    hosts = [factories.host(licensed, zone=zone, hostname=f"h-{zone}") for zone in ("a", "b")]
    for i in range(8):
        factories.agent(
            licensed,
            hosts[i % 2],
            role=AgentRole.values[i % 2],
            version="1.9.3",
            labels={"gpu": "a100"} if i < 4 else {},
        )
    scope = {"role": [AgentRole.values[0]], "zone": ["a"], "labels": {"gpu": "a100"}}
    wave = key_api.post("/rollouts", {**START, "scope": scope})
    assert wave.status_code == 201, wave.content
    assert wave.json()["scope"] == {"labels": {"gpu": "a100"}, "role": ["coder"], "zone": ["a"]}
    targets = RolloutTarget.objects.filter(rollout_id=wave.json()["id"]).select_related("agent")
    assert {(t.agent.role, t.agent.host.zone, t.agent.labels["gpu"]) for t in targets} == {
        ("coder", "a", "a100")
    }
    assert len(targets) == 2
    Rollout.objects.all().delete()
    by_host = key_api.post("/rollouts", {**START, "scope": {"host": ["h-b"]}})
    assert by_host.json()["agents"] == 4
    started = AuditEvent.objects.filter(action="rollout.start").order_by("pk").last()
    assert started.changes["scope"] == [None, {"host": ["h-b"]}]


def test_a_scope_nobody_matches_is_refused(key_api, licensed):
    factories.agent(licensed, version="1.9.3")
    refused = key_api.post("/rollouts", {**START, "scope": {"zone": ["nowhere"]}})
    assert refused.status_code == 409
    assert not Rollout.objects.exists()


# --- maintenance windows ----------------------------------------------------------------

BERLIN_SATURDAY_NIGHT = {  # Saturdays 23:00 to Sunday 02:00, Berlin time
    "time_zone": "Europe/Berlin",
    "maintenance_days": [6],
    "maintenance_start": "23:00:00",
    "maintenance_end": "02:00:00",
}


def patch_settings(key_api, body):
    return key_api.client.patch(
        "/api/v1/settings",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key_api.secret}",
    )


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        ("2026-12-05T21:59:00", False),  # Sat 22:59 in Berlin (UTC+1 in December)
        ("2026-12-05T22:00:00", True),  # Sat 23:00
        ("2026-12-06T00:30:00", True),  # Sun 01:30, the same window past midnight
        ("2026-12-06T01:00:00", False),  # Sun 02:00: closed
        ("2026-12-06T22:30:00", False),  # Sun 23:30: not a window day
        ("2026-12-02T22:30:00", False),  # Wed 23:30
    ],
)
def test_the_window_is_in_the_customers_time_zone_and_may_cross_midnight(customer, utc, open_):
    customer.time_zone = "Europe/Berlin"
    customer.maintenance_days = [6]
    customer.maintenance_start, customer.maintenance_end = time(23), time(2)
    at = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert customer.in_maintenance_window(at) is open_
    customer.maintenance_days = []
    assert customer.in_maintenance_window(at)  # no window: any time


def test_outside_the_window_no_wave_step_starts(key_api, licensed):
    answer = (
        key_api.patch("/settings", BERLIN_SATURDAY_NIGHT) if hasattr(key_api, "patch") else None
    )
    if answer is None:
        answer = key_api.client.patch(
            "/api/v1/settings",
            BERLIN_SATURDAY_NIGHT,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key_api.secret}",
        )
    assert answer.status_code == 200, answer.content
    assert answer.json()["maintenance_days"] == [6]
    wednesday = datetime(2026, 12, 2, 12, tzinfo=UTC)
    with time_machine.travel(wednesday, tick=False):
        agents = [activate(licensed) for _ in range(3)]
        rollout = rollout_start(
            customer=licensed,
            release=Release.objects.get(version="1.10.0"),
            actor=SYSTEM,
            canary_soak=timedelta(0),
            batch_watch=timedelta(0),
        )
        canary = next(a for a in agents if a.agent.pk == rollout.canary_agent_id)
        assert beat(canary).json()["upgrade"] is None  # not offered outside the window
        assert rollout_advance(rollout.pk) == "waiting for the maintenance window"

    def at(moment):
        with time_machine.travel(moment, tick=False):
            for a in agents:
                a.api.post("/agents/heartbeat", {"version": str(a.refresh().version)})
            return rollout_advance(rollout.pk)

    def upgrade(a):
        order = beat(a).json()["upgrade"]
        assert order and order["version"] == "1.10.0"
        a.api.post(
            "/agents/upgrade-result",
            {"outcome": "succeeded", "from_version": "1.9.3", "to_version": "1.10.0"},
        )

    saturday_night = datetime(2026, 12, 5, 22, 10, tzinfo=UTC)  # 23:10 in Berlin
    assert at(saturday_night) == "step offered in the maintenance window"
    with time_machine.travel(saturday_night, tick=False):
        upgrade(canary)
    assert at(saturday_night + timedelta(minutes=1)) == "batch 1 of 2 offered"

    def upgrade_offered(moment):
        with time_machine.travel(moment, tick=False):
            offered = set(
                RolloutTarget.objects.filter(
                    rollout=rollout, state=RolloutTargetState.OFFERED
                ).values_list("agent_id", flat=True)
            )
            assert len(offered) == 1
            for a in agents:
                if a.agent.pk in offered:
                    upgrade(a)

    upgrade_offered(saturday_night + timedelta(minutes=2))
    # The window closed before batch 1's gate: the gate passes, batch 2 waits for it.
    sunday_morning = datetime(2026, 12, 6, 9, tzinfo=UTC)
    assert at(sunday_morning) == "gate passed; waiting for the maintenance window"
    assert at(sunday_morning + timedelta(days=3)) == (
        "gate passed; waiting for the maintenance window"
    )
    next_saturday = saturday_night + timedelta(days=7)
    assert at(next_saturday) == "batch 2 of 2 offered"
    upgrade_offered(next_saturday + timedelta(minutes=1))
    # Completing starts no step: it happens outside the window too.
    assert at(next_saturday + timedelta(hours=12)) == "completed"
    assert (
        RolloutTarget.objects.filter(rollout=rollout, state=RolloutTargetState.SUCCEEDED).count()
        == 3
    )


def test_the_next_batch_waits_for_the_window(licensed, customer):
    Customer.objects.filter(pk=licensed.pk).update(
        time_zone="UTC", maintenance_days=[3], maintenance_start=time(12), maintenance_end=time(13)
    )
    wednesday_noon = datetime(2026, 12, 2, 12, 5, tzinfo=UTC)
    with time_machine.travel(wednesday_noon, tick=False):
        agents = [activate(licensed) for _ in range(3)]
        licensed.refresh_from_db()
        rollout = rollout_start(
            customer=licensed,
            release=Release.objects.get(version="1.10.0"),
            actor=SYSTEM,
            canary_soak=timedelta(0),
        )
        canary = next(a for a in agents if a.agent.pk == rollout.canary_agent_id)
        beat(canary)
        canary.api.post(
            "/agents/upgrade-result",
            {"outcome": "succeeded", "from_version": "1.9.3", "to_version": "1.10.0"},
        )
    later = datetime(2026, 12, 2, 13, 30, tzinfo=UTC)
    with time_machine.travel(later, tick=False):
        for a in agents:
            a.api.post("/agents/heartbeat", {"version": str(a.refresh().version)})
        assert rollout_advance(rollout.pk) == "gate passed; waiting for the maintenance window"
        assert not RolloutTarget.objects.filter(
            rollout=rollout, batch=1, state=RolloutTargetState.OFFERED
        ).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"maintenance_days": [8]}, "maintenance_days.0"),
        ({"maintenance_days": [1]}, "start"),  # days without hours
        ({"maintenance_start": "25:00"}, "maintenance_start"),
        ({"maintenance_start": "01:00"}, "days"),  # hours without days
        # A time with an offset is not a local time (nor storable): 422, not a 500.
        ({**BERLIN_SATURDAY_NIGHT, "maintenance_start": "23:00:00+02:00"}, "maintenance_start"),
    ],
)
def test_a_malformed_window_is_422_and_changes_nothing(key_api, licensed, body, field):
    response = patch_settings(key_api, {**body, "stale_cleanup_days": 30})
    assert response.status_code == 422, response.content
    body = response.json()
    fields = [e["field"] for e in body.get("errors", [])] or [body.get("field")]
    assert field in fields, body
    licensed.refresh_from_db()
    assert (licensed.maintenance_days, licensed.stale_cleanup_days) == ([], None)

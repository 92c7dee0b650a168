"""Each event is emitted by the change that causes it, in its transaction, folded as the
issue asks (one agents.offline per sweep, not one per agent)."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from fleet.choices import AlertEventType, AnomalyKind, AnomalySeverity
from fleet.models import AlertDelivery, AlertEvent, Rollout, RolloutTarget
from fleet.services import sweeps
from fleet.services.agents import agent_record_heartbeat
from fleet.services.alerts import (
    alert_channel_create,
    alerts_daily_digest,
    alerts_license_watch,
    alerts_online_ratio_watch,
)
from fleet.services.anomalies import anomaly_open
from fleet.services.audit import SYSTEM
from fleet.services.rollouts.engine import Gate, GateCheck, pause_wave
from fleet.services.tokens import token_mint
from fleet.versions import SemVer
from tests import factories
from tests.fleet.api.conftest import ApiClient, activation_body

pytestmark = pytest.mark.django_db
T = AlertEventType


def events(type):
    return list(AlertEvent.objects.filter(type=type).order_by("pk"))


def test_a_sweep_folds_every_silent_agent_into_one_event_per_customer(
    customer, other_customer, monkeypatch
):
    monkeypatch.setattr(sweeps, "CHUNK", 2)  # five agents: three chunks, still one event
    factories.sweep_state()
    old = timezone.now() - timedelta(minutes=10)
    mine = [factories.agent(customer, last_heartbeat_at=old) for _ in range(5)]
    factories.agent(other_customer, last_heartbeat_at=old)
    factories.agent(customer)  # heard from: stays online
    alert_channel_create(
        customer=customer, kind="webhook", url="http://127.0.0.1:9/h", actor=SYSTEM
    )
    assert sweeps.agents_mark_stale().marked_offline == 6
    [event, theirs] = sorted(events(T.AGENTS_OFFLINE), key=lambda e: e.customer_id != customer.pk)
    assert event.data["count"] == 5
    assert sorted(event.data["agents"]) == sorted(a.name for a in mine)
    assert theirs.customer_id == other_customer.pk and theirs.data["count"] == 1
    assert AlertDelivery.objects.filter(event=event).count() == 1  # one message, not five
    assert sweeps.agents_mark_stale().marked_offline == 0
    assert len(events(T.AGENTS_OFFLINE)) == 2


def test_a_heartbeat_back_says_back_online_and_the_last_one_closes_the_incident(customer):
    a, b = (
        factories.agent(customer, status="offline", offline_since=timezone.now()) for _ in range(2)
    )
    agent_record_heartbeat(agent=a, version=SemVer("1.0.0"), running_job_ids=[])
    agent_record_heartbeat(agent=b, version=SemVer("1.0.0"), running_job_ids=[])
    first, last = events(T.AGENTS_BACK_ONLINE)
    assert (first.data["agent"], first.data["still_offline"]) == (a.name, 1)
    assert "incident" not in first.data
    assert (last.data["still_offline"], last.data["incident"]) == (0, "agents_offline")


def test_a_paused_wave_says_why_with_its_gate_in_words(customer):
    rollout = factories.started_wave(customer)
    failed = GateCheck("online ratio", False, "3 of 8 online")
    gate = Gate([GateCheck("upgraded agents healthy", True, "All 1 upgraded."), failed], {})
    pause_wave(rollout, "Only 3 of 8 agents online.", {}, SYSTEM, gate=gate)
    [event] = events(T.ROLLOUT_PAUSED)
    assert event.data["reason"] == "Only 3 of 8 agents online."
    assert event.data["gate"][1] == {
        "name": "online ratio",
        "passed": False,
        "text": "3 of 8 online",
    }
    assert event.severity == AnomalySeverity.CRITICAL
    assert event.data["portal_path"] == f"/portal/upgrades/{rollout.pk}/"


def test_a_pause_for_another_cause_carries_no_earlier_gate(customer):
    """An operator's pause (or a silent agent's) is no gate failure: the alert must not
    show the checks an earlier step passed as if they were why."""
    rollout = factories.started_wave(customer)
    rollout.last_gate = {"at": "x", "checks": [{"name": "old", "passed": True, "text": "ok"}]}
    pause_wave(rollout, "paused by olga: release notes", {}, SYSTEM)
    [event] = events(T.ROLLOUT_PAUSED)
    assert event.data["gate"] == []


def test_a_rollback_says_rolled_back_and_paused(customer):
    from fleet.services.agents import agent_record_upgrade_result

    rollout = factories.started_wave(customer)
    canary = RolloutTarget.objects.get(rollout=rollout, batch=0)
    agent_record_upgrade_result(
        agent=canary.agent,
        outcome="smoke_check_failed",
        from_version=SemVer("1.0.0"),
        to_version=SemVer("1.1.0"),
        detail="tests failed",
    )
    [rolled] = events(T.ROLLOUT_ROLLED_BACK)
    assert (rolled.data["agent"], rolled.data["to_version"]) == (canary.agent.name, "1.1.0")
    assert len(events(T.ROLLOUT_PAUSED)) == 1
    assert not events(T.ANOMALY_OPENED)  # the rollback and gate findings have their own events


def test_a_completed_wave_says_so(customer):
    from fleet.services.rollouts.engine import _next_step

    rollout = factories.started_wave(customer)
    rollout.current_batch = rollout.batches_total  # its last step passed its gates
    assert _next_step(rollout, timezone.now()) == "completed"
    assert Rollout.objects.get(pk=rollout.pk).state == "completed"
    [event] = events(T.ROLLOUT_COMPLETED)
    assert event.data["incident"] == f"rollout:{rollout.pk}"


def test_findings_open_anomaly_opened_with_their_severity_but_offline_ones_do_not(customer):
    anomaly_open(
        customer=customer,
        kind="agent_reported",
        fingerprint="d",
        message="Disk full",
        severity="critical",
        actor=SYSTEM,
    )
    anomaly_open(
        customer=customer,
        kind="agent_reported",
        fingerprint="d",
        message="again",
        severity="critical",
        actor=SYSTEM,
    )  # folded: no second event
    anomaly_open(
        customer=customer,
        kind=AnomalyKind.AGENT_OFFLINE,
        fingerprint="agent_offline:1",
        message="m",
        actor=SYSTEM,
    )
    [event] = events(T.ANOMALY_OPENED)
    assert (event.severity, event.data["message"]) == ("critical", "Disk full")


def test_a_second_machine_with_a_redeemed_token_is_token_reused_once(customer):
    factories.license(customer)
    _, token = token_mint(customer=customer, actor=SYSTEM)
    api = ApiClient(Client())
    assert api.post("/agents/activate", activation_body(token)).status_code == 201
    intruder = activation_body(token)
    for _ in range(2):
        assert api.post("/agents/activate", intruder).status_code == 409
    [event] = events(T.TOKEN_REUSED)
    assert event.data["hostname"] == intruder["hostname"]


def test_licenses_near_their_cap_or_their_end_say_so_once(customer):
    factories.license(customer, max_agents=10, valid_until=timezone.now() + timedelta(days=10))
    for _ in range(8):
        factories.agent(customer)
    alerts_license_watch()
    assert not events(T.LICENSE_NEAR_CAP)
    assert [e.data["days"] for e in events(T.LICENSE_EXPIRING)] == [14]
    factories.agent(customer)  # 9 of 10: 90%
    alerts_license_watch()
    alerts_license_watch()
    [near] = events(T.LICENSE_NEAR_CAP)
    assert (near.data["seats_used"], near.data["max_agents"]) == (9, 10)
    alerts_license_watch(now=timezone.now() + timedelta(days=8))
    expiring = events(T.LICENSE_EXPIRING)
    assert [(e.data["days"], e.severity) for e in expiring] == [(14, "warning"), (3, "critical")]


def test_activation_reaching_90_percent_says_near_cap(customer):
    from tests.fleet.api.conftest import activate

    factories.license(customer, max_agents=2)
    activate(customer)
    assert not events(T.LICENSE_NEAR_CAP)
    activate(customer)
    assert len(events(T.LICENSE_NEAR_CAP)) == 1


def test_online_ratio_low_for_five_minutes_then_recovered(customer):
    now = timezone.now().replace(second=30, microsecond=0)
    for minute in range(4):
        factories.snapshot(
            customer, taken_at=now.replace(second=0) - timedelta(minutes=minute), online_ratio=0.5
        )
    alerts_online_ratio_watch(now=now)
    assert not events(T.ONLINE_RATIO_LOW)  # four minutes: not yet
    factories.snapshot(
        customer, taken_at=now.replace(second=0) - timedelta(minutes=4), online_ratio=0.5
    )
    alerts_online_ratio_watch(now=now)
    alerts_online_ratio_watch(now=now)
    [low] = events(T.ONLINE_RATIO_LOW)
    assert low.data["online_ratio"] == 0.5
    later = now + timedelta(minutes=1)
    factories.snapshot(customer, taken_at=later.replace(second=0), online_ratio=1.0)
    alerts_online_ratio_watch(now=later)
    alerts_online_ratio_watch(now=later)
    [recovered] = events(T.ONLINE_RATIO_RECOVERED)
    assert recovered.data["incident"] == low.data["incident"]


def test_the_daily_digest_counts_unresolved_findings_once_a_day(customer, other_customer):
    factories.anomaly(customer, severity="critical")
    factories.anomaly(customer, severity="warning")
    factories.anomaly(customer, severity="warning", resolved_at=timezone.now())
    alerts_daily_digest()
    alerts_daily_digest()
    [digest] = events(T.ANOMALIES_DAILY_DIGEST)
    assert digest.customer_id == customer.pk
    assert (digest.data["unresolved"], digest.data["by_severity"]) == (
        2,
        {"critical": 1, "warning": 1},
    )
    assert digest.data["time_zone"] == "UTC"

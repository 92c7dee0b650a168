"""Findings: a repeat of one fingerprint folds into the open row; people and cleared
conditions resolve them; people reopen them; every open, resolve and reopen is audited."""

from datetime import timedelta

import pytest
import time_machine
from django.db.models import Q
from django.utils import timezone

from fleet.choices import AgentStatus, AnomalyKind, AnomalySeverity
from fleet.models import Anomaly, AuditEvent
from fleet.services.agents import agent_decommission
from fleet.services.anomalies import (
    Finding,
    anomalies_record,
    anomalies_record_agents_offline,
    anomalies_reopen,
    anomalies_resolve,
    anomaly_open,
    anomaly_resolve_fingerprint,
)
from fleet.services.audit import SYSTEM, Actor
from tests import factories

pytestmark = pytest.mark.django_db


def open_finding(customer, fingerprint="git-503", message="repo unreachable", **kwargs):
    return anomaly_open(
        customer=customer,
        kind=AnomalyKind.AGENT_REPORTED,
        fingerprint=fingerprint,
        message=message,
        **kwargs,
        actor=SYSTEM,
    )


def actions():
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


# --- opening and folding ------------------------------------------------------------------


def test_a_repeat_folds_into_the_open_row(customer):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        first = open_finding(customer, severity=AnomalySeverity.CRITICAL)
    with time_machine.travel(start + timedelta(minutes=5), tick=False):
        again = open_finding(customer, message="repo unreachable again")
    assert again.pk == first.pk
    assert Anomaly.objects.count() == 1
    assert again.occurrences == 2
    assert (again.first_seen, again.last_seen) == (start, start + timedelta(minutes=5))
    assert again.message == "repo unreachable again"  # the latest words
    assert (again.kind, again.severity) == (AnomalyKind.AGENT_REPORTED, AnomalySeverity.CRITICAL)
    assert actions() == ["anomaly.open"]  # opened once, folds are not events


def test_another_fingerprint_or_customer_is_another_row(customer, other_customer):
    first = open_finding(customer)
    assert open_finding(customer, fingerprint="disk-full").pk != first.pk
    theirs = open_finding(other_customer)
    assert theirs.pk != first.pk
    assert (theirs.customer_id, theirs.occurrences) == (other_customer.pk, 1)
    assert Anomaly.objects.get(pk=first.pk).occurrences == 1
    audit = AuditEvent.objects.filter(action="anomaly.open")
    assert sorted(audit.values_list("customer_id", flat=True)) == sorted(
        [customer.pk, customer.pk, other_customer.pk]
    )


def test_a_finding_opened_with_a_customer_id_names_its_agent_and_job(customer):
    agent = factories.agent(customer)
    job = factories.job(customer, agent=agent)
    finding = anomaly_open(
        customer=customer.pk,
        kind=AnomalyKind.JOB_FAILURES,
        fingerprint=f"job_failures:a{agent.pk}",
        message="three failures",
        agent_id=agent.pk,
        job_id=job.pk,
        actor=SYSTEM,
    )
    assert (finding.customer_id, finding.agent_id, finding.job_id) == (
        customer.pk,
        agent.pk,
        job.pk,
    )
    assert finding.severity == AnomalySeverity.WARNING
    event = AuditEvent.objects.get()
    assert (event.target_id, event.target_repr, event.actor_label) == (
        str(finding.pk),
        f"job_failures:a{agent.pk}",
        "system",
    )


def test_a_batch_opens_and_folds_with_two_statements_and_answers_in_order(
    customer, other_customer, assert_data_statements
):
    findings = [
        Finding(customer.pk, AnomalyKind.CLOCK_SKEW, "skew:1", "first"),
        Finding(customer.pk, AnomalyKind.CLOCK_SKEW, "skew:2", "second"),
        Finding(customer.pk, AnomalyKind.CLOCK_SKEW, "skew:1", "first, said again"),
        Finding(other_customer.pk, AnomalyKind.CLOCK_SKEW, "skew:1", "theirs"),
    ]
    # The upsert, the audit rows, and the anomaly.opened events (known keys, insert, channels).
    with assert_data_statements(5):
        ids = anomalies_record(findings, actor=SYSTEM)
    assert ids[0] == ids[2]
    assert len(set(ids)) == 3
    repeated = Anomaly.objects.get(pk=ids[0])
    assert (repeated.occurrences, repeated.message) == (1, "first, said again")
    assert Anomaly.objects.get(pk=ids[3]).customer_id == other_customer.pk
    assert anomalies_record(findings[:2], actor=SYSTEM) == ids[:2]  # a second batch folds
    assert list(Anomaly.objects.order_by("pk").values_list("occurrences", flat=True)) == [2, 2, 1]
    assert actions() == ["anomaly.open"] * 3
    assert anomalies_record([], actor=SYSTEM) == []


def test_an_overlong_fingerprint_is_cut_and_still_folds(customer):
    long = "x" * 250
    first = open_finding(customer, fingerprint=long)
    again = open_finding(customer, fingerprint=long)
    assert first.fingerprint == "x" * 200
    assert (again.pk, again.occurrences) == (first.pk, 2)


# --- resolving and reopening --------------------------------------------------------------


def test_a_person_resolves_a_finding_once(customer, django_user_model):
    user = django_user_model.objects.create_user("olga")
    actor = Actor(user=user, label="olga", ip_address="10.0.0.5")
    finding = open_finding(customer)
    assert (
        anomalies_resolve(where=Q(pk=finding.pk), note="rotated the deploy key", actor=actor) == 1
    )
    finding.refresh_from_db()
    assert finding.resolved_at is not None
    assert (finding.resolved_by, finding.resolution_note) == (user, "rotated the deploy key")
    resolved_at = finding.resolved_at
    assert anomalies_resolve(where=Q(pk=finding.pk), note="again", actor=actor) == 0  # twice
    finding.refresh_from_db()
    assert (finding.resolved_at, finding.resolution_note) == (resolved_at, "rotated the deploy key")
    event = AuditEvent.objects.get(action="anomaly.resolve")
    assert (event.target_id, event.actor_user, event.ip_address) == (
        str(finding.pk),
        user,
        "10.0.0.5",
    )
    assert event.changes == {"note": [None, "rotated the deploy key"]}


def test_the_same_problem_after_a_resolve_is_a_new_finding(customer):
    finding = open_finding(customer)
    anomalies_resolve(where=Q(pk=finding.pk), note="fixed", actor=SYSTEM)
    again = open_finding(customer)
    assert again.pk != finding.pk
    assert (again.occurrences, again.resolved_at) == (1, None)
    assert Anomaly.objects.get(pk=finding.pk).resolved_at is not None


def test_resolve_closes_only_the_open_findings_that_match(customer, other_customer):
    now = timezone.now() - timedelta(minutes=1)
    offline = [
        anomaly_open(
            customer=c,
            kind=AnomalyKind.AGENT_OFFLINE,
            fingerprint=f"agent_offline:{i}",
            message="silent",
            actor=SYSTEM,
        )
        for i, c in enumerate([customer, customer, other_customer])
    ]
    reported = open_finding(customer)
    closed = anomalies_resolve(
        where=Q(customer=customer, kind=AnomalyKind.AGENT_OFFLINE),
        note="cleared",
        now=now,
        actor=SYSTEM,
    )
    assert closed == 2
    still_open = Anomaly.objects.filter(resolved_at__isnull=True)
    assert set(still_open.values_list("pk", flat=True)) == {offline[2].pk, reported.pk}
    assert set(
        Anomaly.objects.filter(resolved_at__isnull=False).values_list("resolved_at", flat=True)
    ) == {now}
    assert anomalies_resolve(where=Q(pk=-1), note="nothing", actor=SYSTEM) == 0


def test_resolve_works_through_every_chunk(customer, monkeypatch):
    monkeypatch.setattr("fleet.services.anomalies.RESOLVE_CHUNK", 2)
    for i in range(5):
        open_finding(customer, fingerprint=f"f{i}")
    assert anomalies_resolve(where=Q(customer=customer), note="all of them", actor=SYSTEM) == 5
    assert not Anomaly.objects.filter(resolved_at__isnull=True).exists()
    assert AuditEvent.objects.filter(action="anomaly.resolve").count() == 5


def test_resolving_by_fingerprint_closes_that_customers_finding_only(customer, other_customer):
    mine = open_finding(customer)
    theirs = open_finding(other_customer)
    other = open_finding(customer, fingerprint="disk-full")
    assert (
        anomaly_resolve_fingerprint(
            customer=customer, fingerprint="git-503", note="ok", actor=SYSTEM
        )
        == 1
    )
    still_open = set(Anomaly.objects.filter(resolved_at__isnull=True).values_list("pk", flat=True))
    assert still_open == {theirs.pk, other.pk}
    assert mine.pk not in still_open


def test_a_person_reopens_a_resolved_finding_once(customer):
    finding = open_finding(customer)
    anomalies_resolve(where=Q(pk=finding.pk), note="fixed", actor=SYSTEM)
    assert anomalies_reopen(ids=[finding.pk], note="not fixed", actor=SYSTEM) == 1
    finding.refresh_from_db()
    assert (finding.resolved_at, finding.resolved_by, finding.resolution_note) == (None, None, "")
    assert (
        anomalies_reopen(ids=[finding.pk], note="not fixed", actor=SYSTEM) == 0
    )  # twice: open already
    assert actions() == ["anomaly.open", "anomaly.resolve", "anomaly.reopen"]
    assert AuditEvent.objects.get(action="anomaly.reopen").changes == {"note": [None, "not fixed"]}
    # A repeat now folds into the reopened row.
    assert open_finding(customer).pk == finding.pk


def test_reopen_leaves_a_finding_resolved_when_its_fingerprint_is_open_again(customer):
    old = open_finding(customer)
    anomalies_resolve(where=Q(pk=old.pk), note="fixed", actor=SYSTEM)
    new = open_finding(customer)
    assert anomalies_reopen(ids=[old.pk], note="not fixed", actor=SYSTEM) == 0
    assert Anomaly.objects.get(pk=old.pk).resolved_at is not None
    assert Anomaly.objects.filter(resolved_at__isnull=True).get().pk == new.pk


def test_reopening_two_resolved_rows_of_one_fingerprint_reopens_the_newest(customer):
    start = timezone.now()
    rows = []
    for minutes in (0, 10):
        with time_machine.travel(start + timedelta(minutes=minutes), tick=False):
            finding = open_finding(customer)
            anomalies_resolve(where=Q(pk=finding.pk), note="fixed", actor=SYSTEM)
            rows.append(finding)
    assert anomalies_reopen(ids=[r.pk for r in rows], note="not fixed", actor=SYSTEM) == 1
    assert Anomaly.objects.get(resolved_at__isnull=True).pk == rows[1].pk


# --- agents the stale sweep marked offline --------------------------------------------------


def test_offline_findings_only_for_the_agents_this_sweep_marked(customer):
    now = timezone.now()
    marked = factories.agent(
        customer, status=AgentStatus.OFFLINE, name="build-1", offline_since=now
    )
    earlier = factories.agent(
        customer, status=AgentStatus.OFFLINE, offline_since=now - timedelta(minutes=5)
    )
    back = factories.agent(customer, status=AgentStatus.ONLINE)
    ids = [marked.pk, earlier.pk, back.pk]
    assert anomalies_record_agents_offline(ids, now=now) == 1
    finding = Anomaly.objects.get()
    assert (finding.agent_id, finding.kind, finding.fingerprint) == (
        marked.pk,
        AnomalyKind.AGENT_OFFLINE,
        f"agent_offline:{marked.pk}",
    )
    assert finding.message == "build-1 stopped sending heartbeats."
    assert (finding.first_seen, finding.last_seen) == (now, now)
    assert actions() == ["anomaly.open"]
    assert anomalies_record_agents_offline([], now=now) == 0


def test_decommissioning_closes_the_agents_findings(customer):
    agent = factories.agent(customer)
    anomaly_open(
        customer=agent.customer_id,
        kind=AnomalyKind.AGENT_OFFLINE,
        fingerprint=f"agent_offline:{agent.pk}",
        message="silent",
        agent_id=agent.pk,
        actor=SYSTEM,
    )
    agent_decommission(agent=agent, actor=SYSTEM)
    assert Anomaly.objects.get().resolved_at is not None

"""Bulk actions: every agent matching a filter (not just a page), worked through by a task
in chunks that commit their progress, resumed after a stopped worker, audited once with
the count."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from fleet.choices import AgentStatus, AuditAction, BulkActionState, JobStatus, MemberRole
from fleet.models import Agent, AuditEvent, BulkAction, Job
from fleet.selectors import bulk_action_get, license_seats
from fleet.services.audit import SYSTEM
from fleet.services.bulk import (
    bulk_action_run,
    bulk_action_start,
    bulk_action_step,
    bulk_actions_stalled,
)
from fleet.tasks import mark_stale_agents
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def start(django_capture_on_commit_callbacks):
    """bulk_action_start, and what its commit queues (the task) run in-process at once."""

    def call(customer, kind, filters=None, **params):
        with django_capture_on_commit_callbacks(execute=True):
            action = bulk_action_start(
                customer=customer, kind=kind, filters=filters or {}, params=params, actor=SYSTEM
            )
        action.refresh_from_db()
        return action

    return call


@pytest.fixture
def fleet(customer):
    factories.license(customer, max_agents=500)
    host = factories.host(customer)
    now = timezone.now()
    Agent.objects.bulk_create(
        [factories.agent_row(customer, host, last_heartbeat_at=now) for _ in range(120)]
        + [
            factories.agent_row(customer, host, role="tester", last_heartbeat_at=now)
            for _ in range(30)
        ]
    )
    return customer


def test_a_bulk_decommission_takes_every_matching_agent_not_a_page(fleet, start):
    coder = Agent.objects.filter(role="coder").first()
    factories.job(fleet, status="running", agent=coder)
    assert license_seats(fleet).used == 150
    action = start(fleet, "decommission", {"role": "coder"})
    assert (action.state, action.total, action.processed, action.changed) == ("done", 120, 120, 120)
    assert Agent.objects.filter(status=AgentStatus.DECOMMISSIONED).count() == 120
    assert Agent.objects.filter(role="tester", status="online").count() == 30
    assert license_seats(fleet).used == 30
    assert Job.objects.get().status == JobStatus.QUEUED  # its job back in the queue
    [event] = AuditEvent.objects.filter(action=AuditAction.AGENTS_BULK)
    assert event.changes["agents"] == [None, 120] and event.changes["filters"] == [
        None,
        "role=coder",
    ]
    assert not AuditEvent.objects.filter(action=AuditAction.AGENT_DECOMMISSION).exists()


def test_a_stopped_run_is_resumed_where_it_stopped(fleet, monkeypatch):
    monkeypatch.setattr("fleet.tasks.run_bulk_action.delay", lambda action_id: None)
    action = bulk_action_start(
        customer=fleet, kind="pause", filters={}, params={"reason": "freeze"}, actor=SYSTEM
    )
    assert not bulk_action_step(action.pk, chunk=50)  # then the worker is killed
    action.refresh_from_db()
    assert (action.state, action.processed) == (BulkActionState.RUNNING, 50)
    assert Agent.objects.filter(status=AgentStatus.PAUSED).count() == 50
    assert bulk_actions_stalled() == []  # fresh progress: not stalled yet
    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=False):
        assert bulk_actions_stalled() == [action.pk]
    done = bulk_action_run(action.pk)
    assert (done.state, done.processed, done.changed) == ("done", 150, 150)
    assert Agent.objects.filter(status=AgentStatus.PAUSED, paused_reason="freeze").count() == 150
    assert bulk_action_step(action.pk)  # a redelivered message: nothing more
    assert AuditEvent.objects.filter(action=AuditAction.AGENTS_BULK).count() == 1


def test_beat_hands_a_stalled_action_to_a_worker_again(fleet, monkeypatch):
    queued = []
    monkeypatch.setattr("fleet.tasks.run_bulk_action.delay", queued.append)
    action = bulk_action_start(customer=fleet, kind="resume", filters={}, params={}, actor=SYSTEM)
    with time_machine.travel(timezone.now() + timedelta(minutes=3), tick=False):
        mark_stale_agents.apply()
    assert queued == [action.pk]  # by beat (its first message was lost)


def test_bulk_labels_are_added_and_resume_undoes_a_bulk_pause(fleet, start):
    start(fleet, "pause", {"role": "tester"}, reason="r")
    start(fleet, "label", {"role": "tester"}, labels={"pool": "qa"})
    assert Agent.objects.filter(labels__pool="qa").count() == 30
    action = start(fleet, "resume")
    assert (action.total, action.changed) == (150, 30)  # only the paused ones moved
    assert not Agent.objects.filter(status=AgentStatus.PAUSED).exists()


def test_the_portal_asks_and_shows_progress_viewers_refused_tenancy_held(
    fleet, other_customer, django_user_model, django_capture_on_commit_callbacks
):
    owner = member_client(fleet, django_user_model, MemberRole.OWNER, "olga")
    viewer = member_client(fleet, django_user_model, MemberRole.VIEWER, "vera")
    page = owner.get(reverse("portal:agents"), {"role": "tester"}).content.decode()
    assert "Act on all 30 agents matching these filters" in page
    assert (
        "Owners and admins act on many agents"
        in viewer.get(reverse("portal:agents")).content.decode()
    )
    refused = viewer.post(reverse("portal:agents_bulk"), {"kind": "decommission"})
    assert refused.status_code == 403 and not BulkAction.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        owner.post(reverse("portal:agents_bulk"), {"kind": "decommission", "role": "tester"})
    action = BulkAction.objects.get()
    response = owner.get(reverse("portal:bulk_detail", args=[action.pk]))
    page = response.content.decode()
    assert "30 of 30" in page and "<progress" in page
    poll = owner.get(reverse("portal:bulk_detail", args=[action.pk]), HTTP_HX_REQUEST="true")
    assert poll.status_code == 286  # done: htmx stops polling
    assert (
        owner.post(reverse("portal:agents_bulk"), {"kind": "pause"}, follow=True).status_code == 200
    )
    assert BulkAction.objects.count() == 1  # a pause without a reason is refused
    theirs = member_client(other_customer, django_user_model, MemberRole.OWNER, "otto")
    assert theirs.get(reverse("portal:bulk_detail", args=[action.pk])).status_code == 404


@pytest.mark.postgres  # the set-based statements are PostgreSQL's (SQLite reads the list)
@pytest.mark.parametrize(
    ("kind", "params"), [("label", {"labels": {"pool": "x"}}), ("pause", {"reason": "freeze"})]
)
def test_a_chunk_costs_the_same_statements_however_many_agents_it_moves(
    fleet, monkeypatch, django_assert_max_num_queries, kind, params
):
    """Set-based: a chunk of 100 agents costs no more statements than a chunk of 5, and the
    action's stored list of ids is never read whole nor rewritten by a step."""
    monkeypatch.setattr("fleet.tasks.run_bulk_action.delay", lambda action_id: None)
    action = bulk_action_start(customer=fleet, kind=kind, filters={}, params=params, actor=SYSTEM)
    statements = []
    for chunk in (5, 100):
        with django_assert_max_num_queries(20) as captured:
            bulk_action_step(action.pk, chunk=chunk)
        statements.append(len(captured))
        assert not any("agent_ids" in q["sql"] and "jsonpath" not in q["sql"] for q in captured)
    assert statements[0] == statements[1]
    action.refresh_from_db()
    assert (action.processed, action.changed) == (105, 105)
    assert bulk_action_run(action.pk).changed == 150


def test_bulk_labels_overwrite_a_key_and_leave_an_agent_at_its_label_limit(fleet, start):
    full = Agent.objects.filter(role="tester").first()
    Agent.objects.filter(pk=full.pk).update(labels={f"k{n}": "v" for n in range(32)})
    Agent.objects.filter(role="coder").update(labels={"pool": "ci", "gpu": "a100"})
    action = start(fleet, "label", {}, labels={"pool": "cd"})
    assert (action.total, action.changed) == (150, 149)
    labelled = Agent.objects.values_list("labels", flat=True)  # compared here: any database
    assert sum(labels == {"pool": "cd", "gpu": "a100"} for labels in labelled) == 120
    assert len(Agent.objects.get(pk=full.pk).labels) == 32  # one more would pass the limit
    again = start(fleet, "label", {}, labels={"pool": "cd"})
    assert again.changed == 0  # nothing left to add


@pytest.mark.postgres  # row locks
@pytest.mark.django_db(transaction=True)
def test_workers_running_one_action_at_once_move_each_agent_exactly_once(fleet, monkeypatch):
    """A redelivered message runs beside the first: the action's row is locked per chunk,
    so the threads share the chunks and every agent is counted once."""
    monkeypatch.setattr("fleet.tasks.run_bulk_action.delay", lambda action_id: None)
    action = bulk_action_start(
        customer=fleet, kind="label", filters={}, params={"labels": {"pool": "x"}}, actor=SYSTEM
    )
    barrier = threading.Barrier(3)
    errors: list[str] = []

    def work() -> None:
        try:
            barrier.wait()
            while not bulk_action_step(action.pk, chunk=10):
                pass
        except BaseException as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    action.refresh_from_db()
    assert (action.state, action.processed, action.changed) == ("done", 150, 150)
    assert AuditEvent.objects.filter(action=AuditAction.AGENTS_BULK).count() == 1


def test_a_filter_nothing_matches_is_done_at_once_with_nobody_moved(fleet, start):
    for filters in ({"version": "not-a-version"}, {"role": "nobody"}):
        action = start(fleet, "pause", filters, reason="r")
        assert (action.state, action.total, action.processed, action.changed) == ("done", 0, 0, 0)
        assert action.agent_ids == []
    assert not Agent.objects.filter(status=AgentStatus.PAUSED).exists()


def test_progress_is_polled_without_reading_the_stored_ids(fleet, start, django_assert_num_queries):
    action = start(fleet, "resume")
    with django_assert_num_queries(1) as captured:
        polled = bulk_action_get(fleet.pk, action.pk)
        assert (polled.percent, polled.state, polled.total) == (100, "done", 150)
    assert "agent_ids" not in captured[0]["sql"]

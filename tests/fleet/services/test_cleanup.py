"""Stale cleanup, opted in per customer: never an agent heard from inside the window (time
travel), listed on the portal first, seats freed, undone within 7 days if a seat is free,
decommissioned for good after that; run by beat once per period."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from fleet.choices import AgentStatus, AuditAction, JobStatus
from fleet.errors import AgentStateConflict, SeatLimitReached
from fleet.models import Agent, AuditEvent, Job
from fleet.selectors import agent_for_secret, agents_cleanup_due, license_seats
from fleet.services.agents import agent_record_heartbeat
from fleet.services.audit import SYSTEM
from fleet.services.cleanup import agent_cleanup_undo, agents_clean_up_stale
from fleet.services.customers import customer_update
from fleet.tasks import clean_up_stale_agents
from fleet.versions import SemVer
from tests import factories

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


@pytest.fixture
def fleet(customer):
    """Opted in for 30 days, two days ago; three agents heard 31, 29.5 and 0 days ago."""
    factories.license(customer, max_agents=3)
    now = timezone.now()
    with time_machine.travel(now - 2 * DAY, tick=False):
        customer.stale_cleanup_days = 30
        customer_update(customer=customer, actor=SYSTEM)
    agents = {
        name: factories.agent(
            customer,
            name=name,
            status="offline",
            last_heartbeat_at=now - ago,
            registered_at=now - 60 * DAY,
        )
        for name, ago in [("old", 31 * DAY), ("almost", 29.5 * DAY), ("fresh", timedelta(0))]
    }
    return agents


def status(agent) -> str:
    return Agent.objects.get(pk=agent.pk).status


def test_only_agents_silent_past_the_window_are_cleaned_up_and_their_seats_freed(customer, fleet):
    factories.job(customer, status="running", agent=fleet["old"])
    assert license_seats(customer).free == 0
    run = agents_clean_up_stale()
    assert (run.cleaned_up, run.skipped) == (1, False)
    assert status(fleet["old"]) == AgentStatus.CLEANED_UP
    assert {status(fleet["almost"]), status(fleet["fresh"])} == {"offline"}
    assert license_seats(customer).free == 1
    assert Job.objects.get().status == JobStatus.QUEUED  # its job back for another agent
    assert AuditEvent.objects.filter(action=AuditAction.AGENT_CLEAN_UP).count() == 1
    assert agents_clean_up_stale().cleaned_up == 0  # twice: nothing more


def test_never_an_agent_heard_from_inside_the_window_time_travel(customer, fleet):
    almost = fleet["almost"]
    later = timezone.now() + 0.4 * DAY  # 29.9 days silent: still inside
    with time_machine.travel(later, tick=False):
        assert agents_clean_up_stale().cleaned_up == 1  # only "old"
        assert status(almost) == "offline"
        # It heartbeats (a steady beat, written) at 29.9 days: its window starts again.
        agent_record_heartbeat(
            agent=Agent.objects.get(pk=almost.pk), version=SemVer("1.9.3"), running_job_ids=[]
        )
    with time_machine.travel(later + 29 * DAY, tick=False):
        agents_clean_up_stale()
        assert status(almost) == AgentStatus.ONLINE
    with time_machine.travel(later + 31 * DAY, tick=False):
        Agent.objects.filter(pk=almost.pk).update(status="offline")  # the sweep's doing
        agents_clean_up_stale()
        assert status(almost) == AgentStatus.CLEANED_UP


def test_it_is_announced_a_day_before(customer, fleet):
    assert [a.name for a in agents_cleanup_due(customer)] == ["old", "almost"]
    customer.stale_cleanup_days = None
    assert agents_cleanup_due(customer) == []


def test_turned_on_it_waits_a_day_so_the_portal_lists_it_first(customer):
    factories.license(customer)
    old = factories.agent(customer, status="offline", last_heartbeat_at=timezone.now() - 90 * DAY)
    customer.stale_cleanup_days = 30
    customer_update(customer=customer, actor=SYSTEM)
    assert agents_cleanup_due(customer) == [old]
    assert agents_clean_up_stale().cleaned_up == 0
    with time_machine.travel(timezone.now() + DAY + timedelta(minutes=1), tick=False):
        assert agents_clean_up_stale().cleaned_up == 1


def test_off_by_default(customer):
    factories.license(customer)
    old = factories.agent(customer, status="offline", last_heartbeat_at=timezone.now() - 900 * DAY)
    assert agents_clean_up_stale().cleaned_up == 0
    assert status(old) == "offline"


def test_undo_within_7_days_while_a_seat_is_free(customer, fleet):
    agents_clean_up_stale()
    old = Agent.objects.get(pk=fleet["old"].pk)
    assert agent_for_secret("agtn_agt_x") is None
    other = factories.agent(customer)  # takes the freed seat
    with pytest.raises(SeatLimitReached):
        agent_cleanup_undo(agent=old, actor=SYSTEM)
    other.status, other.decommissioned_at = "decommissioned", timezone.now()
    other.save()
    agent_cleanup_undo(agent=old, actor=SYSTEM)
    assert status(old) == AgentStatus.OFFLINE
    assert AuditEvent.objects.filter(action=AuditAction.AGENT_RESTORE).count() == 1
    with pytest.raises(AgentStateConflict):
        agent_cleanup_undo(agent=old, actor=SYSTEM)  # twice: it is not cleaned up any more


def test_after_7_days_it_is_decommissioned_for_good(customer, fleet):
    agents_clean_up_stale()
    old = fleet["old"]
    with time_machine.travel(timezone.now() + 6 * DAY, tick=False):
        assert agents_clean_up_stale().finalized == 0
    with time_machine.travel(timezone.now() + 7 * DAY + timedelta(minutes=1), tick=False):
        with pytest.raises(AgentStateConflict):
            agent_cleanup_undo(agent=Agent.objects.get(pk=old.pk), actor=SYSTEM)
        assert agents_clean_up_stale().finalized == 1
    gone = Agent.objects.get(pk=old.pk)
    assert gone.status == AgentStatus.DECOMMISSIONED and gone.decommissioned_at is not None


def test_beat_runs_it_once_a_period(customer, fleet):
    assert clean_up_stale_agents.apply().get()["cleaned_up"] == 1
    assert clean_up_stale_agents.apply().get() == {}  # a second beat: claimed, nothing done


def test_the_portal_announces_and_an_owner_restores(customer, fleet, django_user_model):
    from fleet.choices import MemberRole
    from tests.portal.conftest import member_client

    owner = member_client(customer, django_user_model, MemberRole.OWNER, "olga")
    viewer = member_client(customer, django_user_model, MemberRole.VIEWER, "vera")
    page = owner.get(reverse("portal:agents")).content.decode()
    assert "2 agents will be cleaned up within a day" in page
    agents_clean_up_stale()
    old = fleet["old"]
    page = viewer.get(reverse("portal:agent_detail", args=[old.pk])).content.decode()
    assert "Cleaned up" in page and "Owners and admins restore agents: ask an owner" in page
    assert viewer.post(reverse("portal:agent_restore", args=[old.pk])).status_code == 403
    response = owner.post(reverse("portal:agent_restore", args=[old.pk]), follow=True)
    assert "is restored" in response.content.decode()
    assert status(old) == AgentStatus.OFFLINE


def test_another_customers_agent_cannot_be_restored(customer, other_customer, django_user_model):
    from fleet.choices import MemberRole
    from tests.portal.conftest import member_client

    factories.license(other_customer)
    theirs = factories.agent(other_customer, status="cleaned_up", cleaned_up_at=timezone.now())
    owner = member_client(customer, django_user_model, MemberRole.OWNER, "olga")
    assert owner.post(reverse("portal:agent_restore", args=[theirs.pk])).status_code == 404
    assert status(theirs) == AgentStatus.CLEANED_UP

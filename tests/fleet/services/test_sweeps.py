import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from fleet import tasks
from fleet.choices import AgentStatus, AnomalyKind, JobStatus, TokenStatus
from fleet.models import ActivationToken, Agent, Anomaly, AuditEvent, Job, SweepState
from fleet.services.audit import SYSTEM
from fleet.services.sweeps import STALE_SWEEP, agents_mark_stale, jobs_requeue_expired
from fleet.services.tokens import token_mint
from tests import factories
from tests.beat import sweep_until
from tests.conftest import data_statements

pytestmark = pytest.mark.django_db


def warm(now=None):
    """A sweep ran a moment ago: no gap, no grace."""
    now = now or timezone.now()
    SweepState.objects.update_or_create(
        name=STALE_SWEEP, defaults={"last_run_at": now - timedelta(seconds=30), "grace_until": None}
    )


def test_only_silent_agents_go_offline_each_with_a_finding(customer):
    now = timezone.now()
    silent = factories.agent(customer, last_heartbeat_at=now - timedelta(minutes=4))
    fresh = factories.agent(customer, last_heartbeat_at=now - timedelta(minutes=2))
    gone = factories.agent(
        customer, status=AgentStatus.DECOMMISSIONED, last_heartbeat_at=now - timedelta(days=2)
    )
    stuck = factories.agent(
        customer, status=AgentStatus.UPGRADING, last_heartbeat_at=now - timedelta(minutes=10)
    )
    never = factories.agent(customer, last_heartbeat_at=None)
    Agent.objects.filter(pk=never.pk).update(registered_at=now - timedelta(minutes=5))
    newborn = factories.agent(customer, last_heartbeat_at=None)
    warm(now)
    with time_machine.travel(now, tick=False):
        assert agents_mark_stale().marked_offline == 3
        assert agents_mark_stale().marked_offline == 0  # twice: the same end state
    statuses = dict(Agent.objects.values_list("pk", "status"))
    assert statuses == {
        silent.pk: "offline",
        fresh.pk: "online",
        gone.pk: "decommissioned",
        stuck.pk: "offline",
        never.pk: "offline",
        newborn.pk: "online",
    }
    offline = Anomaly.objects.filter(kind=AnomalyKind.AGENT_OFFLINE)
    assert sorted(offline.values_list("agent_id", flat=True)) == sorted(
        [silent.pk, stuck.pk, never.pk]
    )
    assert set(offline.values_list("occurrences", flat=True)) == {1}
    assert AuditEvent.objects.filter(action="agent.offline").count() == 3


@pytest.mark.parametrize("silent", [False, True])
def test_the_sweep_issues_the_same_statements_for_10_and_2000_agents(customer, silent):
    def fleet(n):
        seen = timezone.now() - timedelta(minutes=10 if silent else 1)
        host = factories.host(customer)
        Agent.objects.bulk_create(
            factories.agent_row(customer, host, last_heartbeat_at=seen) for _ in range(n)
        )

    def count():
        warm()
        Agent.objects.filter(status=AgentStatus.OFFLINE).update(status=AgentStatus.ONLINE)
        Anomaly.objects.all().delete()
        with data_statements() as statements:
            agents_mark_stale()
        return len(statements)

    fleet(10)
    small = count()
    fleet(1990)
    assert count() == small


def test_after_a_control_plane_gap_agents_get_one_window_of_grace(customer):
    start = timezone.now()
    agent_a = factories.agent(customer, last_heartbeat_at=start)
    agent_b = factories.agent(customer, last_heartbeat_at=start)
    sweep_until(start + timedelta(minutes=1), start=start)
    # Beat stops for 20 minutes; nobody could be heard from meanwhile.
    back = start + timedelta(minutes=21)
    with time_machine.travel(back, tick=False):
        result = agents_mark_stale()
    assert (result.in_grace, result.marked_offline) == (True, 0)
    assert set(Agent.objects.values_list("status", flat=True)) == {"online"}
    # Agent A reports in during the grace window; B stays silent.
    Agent.objects.filter(pk=agent_a.pk).update(last_heartbeat_at=back + timedelta(seconds=40))
    sweep_until(back + timedelta(minutes=3, seconds=30), start=back + timedelta(seconds=30))
    assert Agent.objects.get(pk=agent_a.pk).status == "online"
    assert Agent.objects.get(pk=agent_b.pk).status == "offline"


def test_the_first_sweep_ever_also_gives_grace(customer):
    factories.agent(customer, last_heartbeat_at=timezone.now() - timedelta(hours=2))
    assert agents_mark_stale().in_grace
    assert Agent.objects.get().status == "online"


def test_expired_leases_requeue_then_fail_for_good_with_a_finding(customer, settings):
    settings.JOB_MAX_ATTEMPTS = 2
    agent = factories.agent(customer)
    now = timezone.now()
    retry = factories.job(
        customer,
        role="coder",
        status=JobStatus.RUNNING,
        agent=agent,
        attempts=1,
        lease_expires_at=now - timedelta(seconds=1),
    )
    last = factories.job(
        customer,
        role="coder",
        status=JobStatus.RUNNING,
        agent=agent,
        attempts=2,
        lease_expires_at=now - timedelta(seconds=1),
    )
    live = factories.job(
        customer,
        role="coder",
        status=JobStatus.RUNNING,
        agent=agent,
        attempts=1,
        lease_expires_at=now + timedelta(minutes=1),
    )
    assert jobs_requeue_expired(now=now) == (1, 1)
    assert jobs_requeue_expired(now=now) == (0, 0)
    retry.refresh_from_db()
    last.refresh_from_db()
    live.refresh_from_db()
    assert (retry.status, retry.agent_id, retry.lease_id) == ("queued", None, None)
    assert (last.status, live.status) == ("failed", "running")
    finding = Anomaly.objects.get(kind=AnomalyKind.JOB_ABANDONED)
    assert finding.job_id == last.pk
    assert AuditEvent.objects.filter(action="job.lease_expired").count() == 2


def test_token_expiry_is_idempotent_and_audited(customer):
    overdue, _ = token_mint(customer=customer, expires_in=timedelta(seconds=-1), actor=SYSTEM)
    live, _ = token_mint(customer=customer, actor=SYSTEM)
    redeemed, _ = token_mint(customer=customer, expires_in=timedelta(seconds=-1), actor=SYSTEM)
    ActivationToken.objects.filter(pk=redeemed.pk).update(status=TokenStatus.REDEEMED)
    assert tasks.expire_tokens() == 1
    assert tasks.expire_tokens() == 0
    statuses = dict(ActivationToken.objects.values_list("pk", "status"))
    assert statuses == {overdue.pk: "expired", live.pk: "outstanding", redeemed.pk: "redeemed"}
    assert AuditEvent.objects.filter(action="token.expire").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_end_like_one(customer):
    now = timezone.now()
    for _ in range(30):
        factories.agent(customer, last_heartbeat_at=now - timedelta(minutes=5))
    agent = factories.agent(customer)
    for _ in range(10):
        factories.job(
            customer,
            role="coder",
            status=JobStatus.RUNNING,
            agent=agent,
            attempts=1,
            lease_expires_at=now - timedelta(seconds=5),
        )
    warm(now)
    barrier = threading.Barrier(2)
    results = []

    def sweep():
        try:
            barrier.wait()
            with time_machine.travel(now, tick=False):
                results.append(agents_mark_stale())
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.marked_offline for r in results) == 30
    assert sum(r.requeued for r in results) == 10
    assert Anomaly.objects.filter(kind=AnomalyKind.AGENT_OFFLINE).count() == 30
    assert set(Anomaly.objects.values_list("occurrences", flat=True)) == {1}
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 10
    assert AuditEvent.objects.filter(action="job.lease_expired").count() == 10

"""Every beat query has an index that serves it: against a seeded year of history, each
periodic task runs and every SELECT, UPDATE and DELETE it sent is EXPLAINed with
sequential scans discouraged; a plan that still reads a table that grows with time from
end to end means no index can serve that query, and the cost of the task would grow with
the table's whole history, minute after minute."""

import json
import os
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet import tasks
from fleet.choices import (
    AuditAction,
    JobStatus,
    RollupResolution,
    TokenStatus,
)
from fleet.models import (
    ActivationToken,
    AlertEvent,
    Anomaly,
    AuditEvent,
    FleetRollup,
    FleetSnapshot,
    Job,
)
from fleet.services.retention import retention_prune
from tests import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

# Tables whose rows pile up with time (the rest are bounded by the fleet's size).
GROWING = {
    "fleet_fleetsnapshot",
    "fleet_fleetrollup",
    "fleet_job",
    "fleet_auditevent",
    "fleet_anomaly",
    "fleet_alertevent",
    "fleet_alertdelivery",
    "fleet_activationtoken",
    "fleet_bulkaction",
    "fleet_rollout",
    "fleet_rollouttarget",
    "fleet_agentfactschange",
}

BEAT_TASKS = [
    tasks.mark_stale_agents,
    tasks.take_snapshots,
    tasks.advance_rollouts,
    tasks.clean_up_stale_agents,
    tasks.expire_tokens,
    tasks.send_due_alerts,
    tasks.alert_licenses,
    tasks.anomalies_daily_digest,
    tasks.roll_up_and_prune,
]


@pytest.fixture
def a_year(customer, other_customer):
    """Two customers' year: snapshots, rollups, jobs, audit, findings, alerts, tokens,
    with retention run once, as a year in service would have it."""
    now = timezone.now().replace(second=0, microsecond=0)
    for c in (customer, other_customer):
        factories.license(c, max_agents=50)
        c.stale_cleanup_days = 30
        c.stale_cleanup_since = now - timedelta(days=400)
        c.save()
        agents = [factories.agent(c) for _ in range(5)]
        minutes = range(0, 365 * 24 * 60, 397)
        FleetSnapshot.objects.bulk_create(
            FleetSnapshot(customer=c, taken_at=now - timedelta(minutes=m)) for m in minutes
        )
        FleetRollup.objects.bulk_create(
            FleetRollup(
                customer=c,
                resolution=RollupResolution.HOUR,
                period_start=(now - timedelta(hours=h)).replace(minute=0),
            )
            for h in range(2, 365 * 24, 29)
        )
        FleetRollup.objects.bulk_create(
            FleetRollup(
                customer=c,
                resolution=RollupResolution.DAY,
                period_start=(now - timedelta(days=d)).replace(hour=0, minute=0),
            )
            for d in range(1, 365)
        )
        Job.objects.bulk_create(
            Job(
                customer=c,
                role="coder",
                agent=agents[n % 5],
                status=JobStatus.SUCCEEDED,
                started_at=now - timedelta(minutes=n * 263 + 5),
                finished_at=now - timedelta(minutes=n * 263),
            )
            for n in range(2_000)
        )
        AuditEvent.objects.bulk_create(
            AuditEvent(
                customer=c,
                action=AuditAction.JOB_CLAIM if n % 2 else AuditAction.TOKEN_MINT,
                actor_label="system",
                target_type="fleet.job",
                target_id=str(n),
                target_repr="job",
            )
            for n in range(2_000)
        )
        Anomaly.objects.bulk_create(
            Anomaly(
                customer=c,
                kind="agent_reported",
                fingerprint=f"f{n}",
                message="m",
                resolved_at=now - timedelta(hours=n * 3),
            )
            for n in range(1_000)
        )
        AlertEvent.objects.bulk_create(
            AlertEvent(
                customer=c,
                type="agent_offline",
                created_at=now - timedelta(hours=n * 8),
                dedup_key=f"k{n}",
            )
            for n in range(1_000)
        )
        ActivationToken.objects.bulk_create(
            ActivationToken(
                customer=c,
                display_prefix="agtn_act_x",
                digest=f"{c.pk}-{n}-".ljust(64, "0"),
                status=TokenStatus.EXPIRED,
                expires_at=now - timedelta(hours=n * 8),
            )
            for n in range(1_000)
        )
    # Audit events are stamped on insert: spread them over the year afterwards.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE fleet_auditevent SET at = now() - (id % 8760) * interval '1 hour'")
    # Retention ran before (a service a year old has been pruning all along): what is
    # left is its steady state, then measured.
    retention_prune(now=now)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return now


def index_facts(cursor) -> dict[str, tuple[str, str, bool]]:
    """Each index: its table, its leading column, and whether it is partial."""
    cursor.execute(
        """SELECT i.relname, t.relname, a.attname, x.indpred IS NOT NULL
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
            WHERE t.relname LIKE 'fleet_%%'"""
    )
    return {name: (table, lead or "", partial) for name, table, lead, partial in cursor}


def full_scans(plan: dict, indexes: dict, limited: bool = False) -> list[str]:
    """The growing tables a plan reads end to end, at any depth: a sequential scan, or an
    index read without a condition on its leading column (the whole index, in order).
    Fine: a partial index (its predicate bounds it: queued jobs, open deliveries) and an
    index read in order under a LIMIT with no filter (the newest row)."""
    found = []
    node = plan.get("Node Type", "")
    if node == "Seq Scan" and plan.get("Relation Name") in GROWING:
        found.append(f"{plan['Relation Name']} (sequential scan)")
    if "Index Name" in plan:
        table, lead, partial = indexes.get(plan["Index Name"], ("", "", False))
        cond = plan.get("Index Cond", "")
        in_order = limited and not plan.get("Filter") and not cond
        if table in GROWING and not partial and lead not in cond and not in_order:
            found.append(f"{table} (all of index {plan['Index Name']})")
    for child in plan.get("Plans", []):
        found += full_scans(child, indexes, limited or node == "Limit")
    return found


def test_every_beat_query_is_served_by_an_index(a_year):
    sent: list[tuple[str, str]] = []
    for task in BEAT_TASKS:
        with CaptureQueriesContext(connection) as captured:
            task.apply()
        sent += [(task.name, q["sql"]) for q in captured.captured_queries]
    checked, scans = 0, []
    with connection.cursor() as cursor:
        # EXPLAIN_TEST_DROP="job_running job_finished_at" shows the test failing without them.
        for index in os.environ.get("EXPLAIN_TEST_DROP", "").split():
            cursor.execute(f"DROP INDEX {index}")
        indexes = index_facts(cursor)
        cursor.execute("SET enable_seqscan = off")
        try:
            for task_name, sql in sent:
                verb = sql.lstrip().split(None, 1)[0].upper()
                if verb not in ("SELECT", "UPDATE", "DELETE", "WITH"):
                    continue
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
                plan = cursor.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                checked += 1
                for scan in full_scans(plan[0]["Plan"], indexes):
                    scans.append(f"{task_name}: {scan}: {sql[:300]}")
        finally:
            cursor.execute("SET enable_seqscan = on")
    assert checked > 40, f"only {checked} statements checked: did the tasks run?"
    assert not scans, "sequential scans of growing tables:\n" + "\n".join(scans)
    print(f"{checked} statements of {len(BEAT_TASKS)} beat tasks, each served by an index")

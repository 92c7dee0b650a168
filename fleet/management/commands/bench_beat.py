"""Benchmark beat's sweep and snapshot at fleet scale on PostgreSQL.

Seeds N agents (100 per customer, 4 per host, two zones) and M jobs with set-based SQL,
then times, three runs each: the stale sweep with nobody stale, the sweep marking 5% of
the fleet offline, and the minute snapshot with its detections. Runs only against a
database whose name ends in "_bench" (`make bench-beat` makes one), never real data."""

import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.utils import timezone

from fleet.models import Agent, Anomaly, AuditEvent, SweepState
from fleet.services.detections import fleet_detect
from fleet.services.snapshots import fleet_snapshots_take
from fleet.services.sweeps import STALE_SWEEP, agents_mark_stale

SEED_SQL = """
INSERT INTO fleet_customer (name, slug, contact_email, notes, created_at)
SELECT 'Bench ' || c, 'bench-' || c, '', '', now() FROM generate_series(1, %(customers)s) c;

INSERT INTO fleet_license (customer_id, plan, max_agents, max_concurrent_tasks_per_agent,
                           valid_from, suspended, suspended_reason, channel, is_current, created_at)
SELECT id, 'scale', 1000, 2, now() - interval '1 day', false, '', 'stable', true, now()
  FROM fleet_customer;

INSERT INTO fleet_release (version, channel, published_at, notes, yanked, yanked_reason)
VALUES (%(v110)s, 'stable', now(), '', false, ''), (%(v18)s, 'stable', now(), '', false, '');

INSERT INTO fleet_host (customer_id, machine_id, hostname, zone, memory_mb, created_at)
SELECT c.id, 'm-' || c.id || '-' || h, 'host-' || c.id || '-' || h,
       CASE WHEN h %% 2 = 0 THEN 'zone-a' ELSE 'zone-b' END, 65536, now()
  FROM fleet_customer c CROSS JOIN generate_series(1, %(hosts_per_customer)s) h;

INSERT INTO fleet_agent (customer_id, host_id, name, role, unit_name, state_dir, version, status,
                         secret_prefix, secret_digest, last_heartbeat_at, registered_at)
SELECT h.customer_id, h.id, h.hostname || '-' || a,
       (ARRAY['coder','coder','reviewer','tester','indexer'])[1 + (h.id + a) %% 5],
       'agentina@' || a, '/srv/' || a,
       CASE WHEN (h.id + a) %% 3 = 0 THEN %(v18)s ELSE %(v110)s END, 'online',
       'agtn_agt_bench', md5(h.id || '-' || a) || md5(a || '-' || h.id),
       now() - interval '20 seconds', now() - interval '2 days'
  FROM fleet_host h CROSS JOIN generate_series(1, 4) a;

INSERT INTO fleet_job (customer_id, role, payload, priority, status, agent_id, attempts,
                       queued_at, started_at, finished_at, error, idempotency_key)
SELECT a.customer_id, a.role, '{"repo": "bench/repo", "task": "t"}'::jsonb, 0,
       CASE WHEN j <= 2 THEN 'queued' WHEN j = 3 THEN 'running' ELSE 'succeeded' END,
       CASE WHEN j <= 2 THEN NULL ELSE a.id END,
       CASE WHEN j <= 2 THEN 0 ELSE 1 END,
       now() - (j * interval '7 minutes') - interval '30 seconds',
       CASE WHEN j <= 2 THEN NULL ELSE now() - (j * interval '7 minutes') END,
       CASE WHEN j <= 3 THEN NULL
            ELSE now() - (j * interval '7 minutes') + interval '5 minutes' END,
       '', ''
  FROM fleet_agent a CROSS JOIN generate_series(1, %(jobs_per_agent)s) j;
UPDATE fleet_job SET lease_expires_at = now() + interval '5 minutes' WHERE status = 'running';
ANALYZE;
"""


def _timed(fn: Callable[[], Any], reset: Callable[[], None], runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        reset()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class Command(BaseCommand):
    help = "Time the stale sweep and the snapshot over a large seeded fleet (PostgreSQL only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agents", type=int, default=100_000)
        parser.add_argument("--jobs", type=int, default=1_000_000)

    def handle(self, *args: Any, agents: int, jobs: int, **options: Any) -> None:
        if connection.vendor != "postgresql" or not connection.settings_dict["NAME"].endswith(
            "_bench"
        ):
            raise CommandError("bench_beat runs on a PostgreSQL database named *_bench only.")
        from fleet.versions import SemVer

        if not Agent.objects.exists():
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(
                    SEED_SQL,
                    {
                        "customers": max(1, agents // 100),
                        "hosts_per_customer": 25,
                        "jobs_per_agent": max(1, jobs // agents),
                        "v110": SemVer("1.10.0").db_value,
                        "v18": SemVer("1.8.0").db_value,
                    },
                )
            self.stdout.write(f"seeded in {time.perf_counter() - started:.1f} s")
        n_agents, n_jobs = Agent.objects.count(), connection.cursor()
        n_jobs.execute("SELECT count(*) FROM fleet_job")
        self.stdout.write(f"fleet: {n_agents} agents, {n_jobs.fetchone()[0]} jobs")

        snapshots = fleet_snapshots_take()
        stale_ids = list(Agent.objects.values_list("pk", flat=True)[::20])

        def steady() -> None:
            SweepState.objects.update_or_create(
                name=STALE_SWEEP,
                defaults={
                    "last_run_at": timezone.now() - timedelta(seconds=30),
                    "grace_until": None,
                },
            )
            Agent.objects.filter(status="offline").update(
                status="online", last_heartbeat_at=timezone.now()
            )
            Anomaly.objects.filter(kind="agent_offline").delete()
            AuditEvent.objects.filter(action="agent.offline").delete()

        def with_stale() -> None:
            steady()
            Agent.objects.filter(pk__in=stale_ids).update(
                last_heartbeat_at=timezone.now() - timedelta(minutes=10)
            )

        rows = [
            ("sweep, nobody stale", _timed(agents_mark_stale, steady)),
            (f"sweep, {len(stale_ids)} agents go offline", _timed(agents_mark_stale, with_stale)),
            ("snapshot (every customer)", _timed(fleet_snapshots_take, steady)),
            ("detections (on that snapshot)", _timed(lambda: fleet_detect(snapshots), steady)),
        ]
        self.stdout.write(f"{'operation':<38} {'run 1':>8} {'run 2':>8} {'run 3':>8} {'median':>8}")
        for name, times in rows:
            cells = " ".join(f"{t:>7.3f}s" for t in times)
            self.stdout.write(f"{name:<38} {cells} {statistics.median(times):>7.3f}s")

"""The fleet-scale benchmark (`make bench`), on PostgreSQL only.

Seeds 100,000 agents (100 per customer, 4 per host) with real secrets and 1,000,000 jobs
by set-based SQL, starts the real app under gunicorn (2 sync workers, the Redis presence
buffer on), drives it from loopback with wrk, and prints one table: a no-op endpoint,
the heartbeat and the claim (requests/s, p50/p99, ratio to the no-op, SQL statements a
request), then the stale sweep, the snapshot and the presence flush. Then a second
table: a year in service of one customer with 100,000 agents seeded on top (year.py),
every portal page and admin changelist timed, every Celery task run, and the retention
run over the year's backlog (pages.py). Runs only against a database whose name ends in
"_bench" (`make bench` makes one), never real data.

A script beside the product, not part of it: `python scripts/bench/bench.py [--only load
| --only year] [--agents N] [--jobs N] [--runs N] [--seconds S] [--connections C]
[--audit-events N] [--page-requests N] [--page-budget S]`, with the settings in the
environment (`make bench` sets them; `make bench-pages` is `--only year`)."""

# ruff: noqa: E402  (Django is set up before the product's modules are imported)
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# What the tasks run here queue (alert sends, bulk actions) goes to a broker folder of the
# bench's own, never to a worker of the project's.
os.environ.setdefault("CELERY_BROKER_DIR", tempfile.mkdtemp(prefix="agentina-bench-broker-"))
django.setup()

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from fleet.models import Agent, Anomaly, AuditEvent, SweepState
from fleet.secrets import SecretKind, secret_mint
from fleet.selectors import agent_for_secret
from fleet.services.detections import fleet_detect
from fleet.services.presence import PENDING, presence_flush
from fleet.services.snapshots import fleet_snapshots_take
from fleet.services.sweeps import STALE_SWEEP, agents_mark_stale
from fleet.versions import SemVer

SCRIPTS = Path(settings.BASE_DIR) / "scripts" / "bench"
WORKERS = 2

SEED_SQL = """
INSERT INTO fleet_customer (name, slug, contact_email, notes, created_at)
SELECT 'Bench ' || c, 'bench-' || c, '', '', now() FROM generate_series(1, %(customers)s) c;

INSERT INTO fleet_license (customer_id, plan, max_agents, max_concurrent_tasks_per_agent,
                           valid_from, suspended, suspended_reason, channel, is_current, created_at)
SELECT id, 'scale', 1000, 100, now() - interval '1 day', false, '', 'stable', true, now()
  FROM fleet_customer;

INSERT INTO fleet_release (version, channel, published_at, notes, yanked, yanked_reason)
VALUES (%(v110)s, 'stable', now(), '', false, ''), (%(v18)s, 'stable', now(), '', false, '');

INSERT INTO fleet_host (customer_id, machine_id, hostname, zone, memory_mb, created_at)
SELECT c.id, 'm-' || c.id || '-' || h, 'host-' || c.id || '-' || h,
       CASE WHEN h %% 2 = 0 THEN 'zone-a' ELSE 'zone-b' END, 65536, now()
  FROM fleet_customer c CROSS JOIN generate_series(1, %(hosts_per_customer)s) h;

INSERT INTO fleet_agent (customer_id, host_id, name, role, unit_name, state_dir, version, status,
                         secret_prefix, secret_digest, install_key_digest, last_heartbeat_at,
                         registered_at)
SELECT h.customer_id, h.id, h.hostname || '-' || a,
       (ARRAY['coder','coder','reviewer','tester','indexer'])[1 + (h.id + a) %% 5],
       'agentina@' || a, '/srv/' || a,
       CASE WHEN (h.id + a) %% 3 = 0 THEN %(v18)s ELSE %(v110)s END, 'online',
       'agtn_agt_bench', md5(h.id || '-' || a) || md5(a || '-' || h.id), '',
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
"""


_SET_SECRETS = """
UPDATE fleet_agent AS a SET secret_digest = v.digest, secret_prefix = v.prefix
  FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, digest, prefix)
 WHERE a.id = v.id
"""


def _timed(fn: Callable[[], Any], reset: Callable[[], None], runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        reset()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


@dataclass(frozen=True)
class Load:
    """One wrk run against one path."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    method: str = "GET"
    body: str | None = None
    authenticated: bool = False


ENDPOINTS = [
    Endpoint("no-op (GET /health)", "/api/v1/health"),
    Endpoint(
        "heartbeat",
        "/api/v1/agents/heartbeat",
        "POST",
        # BENCH_HEARTBEAT_BODY measures another body ("{version}" is the agent's).
        os.environ.get(
            "BENCH_HEARTBEAT_BODY", '{"version": "{version}", "running_job_ids": [], "load": 0.5}'
        ),
        authenticated=True,
    ),
    Endpoint("claim", "/api/v1/jobs/claim", "POST", authenticated=True),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BenchRefused(SystemExit):
    """The benchmark will not run here (the message says why)."""


class Bench:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def run(self) -> None:
        options = self.options
        load, year = options["only"] in (None, "load"), options["only"] in (None, "year")
        if connection.vendor != "postgresql" or not connection.settings_dict["NAME"].endswith(
            "_bench"
        ):
            raise BenchRefused("bench runs on a PostgreSQL database named *_bench only.")
        if load and not shutil.which("wrk"):
            raise BenchRefused("bench drives the app with wrk: apt-get install wrk")
        if not settings.PRESENCE_BUFFER_URL:
            raise BenchRefused("Set PRESENCE_BUFFER_URL to a Redis database (make bench does).")
        self._seed(options["agents"], options["jobs"])
        if load:
            workdir = Path(tempfile.mkdtemp(prefix="agentina-bench-"))
            secrets_file = self._secrets(workdir)
            loads, statements, rss = self._drive(secrets_file, workdir)
            beat = [self._cold_lookups(secrets_file), *self._beat()]
            self._report(loads, statements, rss, beat)
        if year:
            from pages import YearBench  # (imports the product: after django.setup)

            YearBench(options, self.say).run()

    def say(self, line: str) -> None:
        print(line, flush=True)

    def _seed(self, agents: int, jobs: int) -> None:
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
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")  # as autovacuum would have by now
            self.say(f"seeded in {time.perf_counter() - started:.1f} s")

    def _secrets(self, workdir: Path) -> Path:
        # Real secrets for every agent (the seed's digests match none), shown to wrk only.
        fleet = list(Agent.objects.order_by("pk").values_list("pk", "version"))
        ids = [pk for pk, _ in fleet]
        minted = [secret_mint(SecretKind.AGENT_SECRET) for _ in ids]
        with connection.cursor() as cursor:
            cursor.execute(
                _SET_SECRETS,
                [ids, [m.digest for m in minted], [m.display_prefix for m in minted]],
            )
            cursor.execute("SELECT count(*) FROM fleet_job")
            n_jobs = cursor.fetchone()[0]
        secrets_file = workdir / "secrets.txt"
        secrets_file.write_text(
            "".join(
                f"{m.plaintext} {version}\n" for m, (_, version) in zip(minted, fleet, strict=True)
            )
        )
        self.say(f"fleet: {len(ids)} agents with secrets, {n_jobs} jobs")
        return secrets_file

    def _drive(
        self, secrets_file: Path, workdir: Path
    ) -> tuple[dict[str, list[Load]], dict[str, float], list[int]]:
        port = _free_port()
        stats_dir = workdir / "stats"
        stats_dir.mkdir()
        env = {**os.environ, "BENCH_STATS_DIR": str(stats_dir)}
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "config.wsgi",
                "--config",
                str(SCRIPTS / "gunicorn_conf.py"),
                "--workers",
                str(WORKERS),
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ],
            cwd=settings.BASE_DIR,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            self._wait_until_up(base)
            loads: dict[str, list[Load]] = {e.name: [] for e in ENDPOINTS}
            for endpoint in ENDPOINTS:  # warm each path (and each worker's agent cache)
                self._wrk(base, endpoint, secrets_file, seconds=5)
            for run in range(self.options["runs"]):
                for endpoint in ENDPOINTS:
                    load = self._wrk(base, endpoint, secrets_file, self.options["seconds"])
                    loads[endpoint.name].append(load)
                    self.say(
                        f"run {run + 1} {endpoint.name:<22} {load.per_second:>8.0f} req/s"
                        f"  p50 {load.p50_ms:.1f} ms  p99 {load.p99_ms:.1f} ms"
                        f"  non-2xx {load.non_2xx}"
                    )
            rss = self._worker_rss(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
        return loads, self._statements(stats_dir), rss

    def _wait_until_up(self, base: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise BenchRefused("gunicorn did not answer within 60 s")

    def _wrk(self, base: str, endpoint: Endpoint, secrets_file: Path, seconds: int) -> Load:
        env = {
            **os.environ,
            "BENCH_METHOD": endpoint.method,
            "BENCH_BODY": endpoint.body or "",
            "BENCH_SECRETS": str(secrets_file) if endpoint.authenticated else "",
        }
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{self.options['connections']}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(SCRIPTS / "wrk.lua"),
                base + endpoint.path,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("BENCH "))
        raw = json.loads(line.removeprefix("BENCH "))
        return Load(
            requests=raw["requests"],
            seconds=raw["duration_us"] / 1e6,
            p50_ms=raw["p50_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            non_2xx=raw["non_2xx"],
            socket_errors=raw["socket_errors"],
        )

    def _worker_rss(self, master: int) -> list[int]:
        """Resident memory of each worker, in MB (what its agent cache costs shows here)."""
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [
            int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            >> 20
            for pid in children
        ]

    def _statements(self, stats_dir: Path) -> dict[str, float]:
        requests: dict[str, int] = {}
        statements: dict[str, int] = {}
        for dump in stats_dir.glob("*.json"):
            data = json.loads(dump.read_text())
            for path, n in data["requests"].items():
                requests[path] = requests.get(path, 0) + n
            for path, n in data["statements"].items():
                statements[path] = statements.get(path, 0) + n
        return {
            e.name: statements.get(e.path, 0) / requests[e.path]
            for e in ENDPOINTS
            if requests.get(e.path)
        }

    def _cold_lookups(self, secrets_file: Path) -> tuple[str, list[float]]:
        """What a heartbeat from an agent the process does not know yet adds: one SELECT."""
        sample = [line.split()[0] for line in secrets_file.read_text().splitlines()[:500]]
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            for secret in sample:
                agent_for_secret(secret)
            runs.append((time.perf_counter() - start) / len(sample))
        return ("agent lookup, not cached (each)", runs)

    def _beat(self) -> list[tuple[str, list[float]]]:
        flush = _timed(presence_flush, lambda: None, runs=1)
        # What each flush meets in service: 10 s of heartbeats of a fleet beating every
        # ~45 s (and what the sweep's own flush meets at most).
        fleet = list(Agent.objects.values_list("pk", flat=True))
        per_flush = len(fleet) * settings.PRESENCE_FLUSH_SECONDS // 45

        def buffer_ten_seconds() -> None:
            at = timezone.now().timestamp()
            sample = fleet[:: max(1, len(fleet) // per_flush)][:per_flush]
            redis.Redis.from_url(settings.PRESENCE_BUFFER_URL).hset(
                PENDING, mapping={str(pk): f"{at} 0.5 0" for pk in sample}
            )

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
            presence_flush()

        def with_stale() -> None:
            steady()
            Agent.objects.filter(pk__in=stale_ids).update(
                last_heartbeat_at=timezone.now() - timedelta(minutes=10)
            )

        return [
            ("presence flush (all the load left)", flush),
            (
                f"presence flush ({per_flush} agents, 10 s)",
                _timed(presence_flush, buffer_ten_seconds),
            ),
            ("sweep, nobody stale", _timed(agents_mark_stale, steady)),
            (f"sweep, {len(stale_ids)} agents go offline", _timed(agents_mark_stale, with_stale)),
            ("snapshot (every customer)", _timed(fleet_snapshots_take, steady)),
            ("detections (on that snapshot)", _timed(lambda: fleet_detect(snapshots), steady)),
        ]

    def _report(
        self,
        loads: dict[str, list[Load]],
        statements: dict[str, float],
        rss: list[int],
        beat: list[tuple[str, list[float]]],
    ) -> None:
        runs = self.options["runs"]
        noop = statistics.median(x.per_second for x in loads[ENDPOINTS[0].name])
        self.say("")
        self.say(
            f"{'path':<22} {'req/s (median)':>14} {'runs':>20} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'÷ no-op':>8} {'SQL/req':>8} {'non-2xx':>8}"
        )
        self.say(
            "(SQL/req: statements the app sent, per request, polls included; a claim on "
            "PostgreSQL is one call of fleet_claim_job, which runs three)"
        )
        for endpoint in ENDPOINTS:
            done = loads[endpoint.name]
            rate = statistics.median(x.per_second for x in done)
            each = "/".join(f"{x.per_second:.0f}" for x in done)
            self.say(
                f"{endpoint.name:<22} {rate:>14.0f} {each:>20} "
                f"{statistics.median(x.p50_ms for x in done):>7.1f} "
                f"{statistics.median(x.p99_ms for x in done):>7.1f} {rate / noop:>8.2f} "
                f"{statements.get(endpoint.name, 0):>8.2f} "
                f"{sum(x.non_2xx + x.socket_errors for x in done):>8}"
            )
        self.say(
            f"({WORKERS} gunicorn sync workers, wrk -t1 -c{self.options['connections']}, "
            f"{self.options['seconds']} s a run, {runs} runs; worker memory {rss} MB)"
        )
        self._check_claims()
        self.say("")
        header = " ".join(f"{'run ' + str(n + 1):>8}" for n in range(3))
        self.say(f"{'beat task':<38} {header} {'median':>8}")
        for name, times in beat:
            cells = " ".join(f"{t:>7.4f}s" for t in times)
            self.say(f"{name:<38} {cells:<29} {statistics.median(times):>7.4f}s")

    def _check_claims(self) -> None:
        """No job held twice, no agent over its cap, after every claim the load made."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM (SELECT agent_id FROM fleet_job WHERE status = 'running' "
                "GROUP BY agent_id HAVING count(*) > 100) AS over"
            )
            over_cap = cursor.fetchone()[0]
            cursor.execute(
                "SELECT count(*), count(DISTINCT target_id) FROM fleet_auditevent "
                "WHERE action = 'job.claim'"
            )
            claims, distinct_jobs = cursor.fetchone()
        self.say(
            f"claims: {claims} handed out, {claims - distinct_jobs} of a job already held, "
            f"{over_cap} agent(s) over the cap"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="Length of each wrk run.")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--only",
        choices=["load", "year"],
        help="load: the first table only (wrk); year: the second only (pages, tasks, prune).",
    )
    parser.add_argument("--year-agents", type=int, default=100_000)
    parser.add_argument("--year-jobs", type=int, default=1_000_000)
    parser.add_argument("--audit-events", type=int, default=10_000_000)
    parser.add_argument("--page-requests", type=int, default=20, help="Requests a page.")
    parser.add_argument(
        "--page-budget", type=float, default=30, help="Seconds a page may take (then >= 5)."
    )
    parser.add_argument("--prune-runs", type=int, default=20, help="At most this many.")
    Bench(vars(parser.parse_args(argv))).run()


if __name__ == "__main__":
    main()

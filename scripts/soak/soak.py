"""The soak (`make soak`), on PostgreSQL and Redis: the whole Control Plane under 1,000
simulated agents for 10 minutes, through one Redis kill, one PostgreSQL restart and one
worker kill, judged by four numbers that must each be 0:

- false offline agents: agents the server marked offline (an `agent.offline` audit event)
  while their simulator thread was alive and heartbeating;
- jobs run more than once: executions per job id, counted by the agents' executors (the
  server's attempts and claims are printed beside);
- 5xx answers outside the fault windows, as the agents' and the workload's clients saw them
  (a window runs from a fault's start to its heal plus a recovery margin);
- snapshot minutes missing: minutes of the soak without a FleetSnapshot row for its
  customer, and minutes rebuilt after a gap (`backfilled`) that no fault window explains
  (beat missed them on its own); rebuilt minutes inside a window count as there.

What runs: gunicorn (3 workers), 2 Celery workers and 1 beat, on PostgreSQL through a TCP
proxy in this process (tests/faults.py) and on a redis-server of the soak's own (broker,
cache and presence buffer); the agents are the reference agent's code in threads, in a few
simulator processes (soak_agents.py); a thread here submits a steady workload through the
customer API. The PostgreSQL restart is simulated at the network: the server is shared
with other people's test runs, so instead of restarting it the proxy drops every
connection and refuses new ones for the outage, which is what the app sees of a restart.

A script beside the product, not part of it: `python scripts/soak/soak.py [--minutes N]
[--agents N] [--simulators N] [--jobs-per-minute N] ...`, with the settings in the
environment (`make soak` sets them). Runs only on a PostgreSQL database named *_soak.
Logs, agent state and results go to var/soak/<time>/. Exits 1 unless all four are 0."""

# ruff: noqa: E402  (Django is set up before the product's modules are imported)
from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import django

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, QuerySet
from soak_observe import Observations, ObservedTransport
from soak_report import (
    Fault,
    Verdict,
    ceil_minute,
    clock,
    executed_more_than_once,
    floor_minute,
    longest_silence,
    missing_minutes,
    split_by_windows,
    unexplained_backfills,
    unfinished_tasks,
    utc,
)

from agentina.client import ApiError, Client, HttpxTransport, Unreachable
from agentina.simulate import ROLES, Fleet
from fleet.choices import AgentStatus, AuditAction, JobStatus
from fleet.models import Agent, AuditEvent, Customer, FleetSnapshot, Job, License
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import Actor
from fleet.services.customers import customer_create
from fleet.services.licenses import license_create
from fleet.services.releases import release_publish
from tests.faults import TcpProxy

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
SOAK = Actor(label="soak")
AGENT_VERSION = "1.9.3"  # what the simulated agents run, published as the latest release
WEB_WORKERS = 3
GRACE_SECONDS = 25  # for a child told to stop, before it is killed
PROGRESS_SECONDS = 30
KILL_WAIT = 60  # seconds the worker kill waits for worker2 to take a task to interrupt
TASK_TO_INTERRUPT = re.compile(
    r"Task (fleet\.take_snapshots|fleet\.mark_stale_agents)\[\S+\] received"
)

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_the_soak() -> None:
    """In each child, before it runs: SIGTERM it if the soak itself dies (even by SIGKILL),
    so no redis-server, gunicorn or worker outlives it on a shared machine."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class SoakRefused(SystemExit):
    """The soak will not run here, or could not go on (the message says why)."""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the soak as Ctrl-C does: everything cleaned up


def _by_status(rows: QuerySet[Any]) -> Counter[str]:
    """Rows by status (no default ordering, which would split the groups)."""
    return Counter(
        dict(rows.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))
    )


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_address(url: str, host: str, port: int) -> str:
    """`url` pointing at host:port instead, credentials and the rest kept."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Options:
    minutes: float
    agents: int
    simulators: int
    jobs_per_minute: int
    redis_down: float
    database_down: float
    worker_down: float
    margin: float
    ramp: float


@dataclass
class Planned:
    """A fault to make `at` seconds into the soak (or up to `late` seconds after, when it
    waits for its moment) and to heal `down` seconds after it was made."""

    name: str
    at: float
    down: float
    make: Callable[[], None]
    heal: Callable[[], None]
    late: float = 0
    made: bool = False


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    expected_down: bool = False  # killed on purpose: its exit is no failure


class Soak:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.workdir = ROOT / "var" / "soak" / datetime.now().strftime("%Y%m%d-%H%M%S")
        self.env: dict[str, str] = {}  # the app processes': PostgreSQL through the proxy
        self.redis_port = self.web_port = 0
        self.server = self.api_key = ""
        self.customer: Customer
        self.children: dict[str, Child] = {}
        self.exited: set[str] = set()  # children whose exit was noticed
        self.unexpected_exits: list[str] = []
        self.timeline: list[tuple[float, str]] = []
        self.faults: dict[str, Fault] = {}
        self.seen = Observations()  # the workload's client
        self.workload_stop = threading.Event()
        self.submitted = self.refused = 0
        self.zero = time.time()  # the soak's start, once the agents are all running
        self.end = 0.0  # when the workload stopped
        self.proxy: TcpProxy | None = None
        self.cpu: dict[str, float] = {}

    # --- the run ------------------------------------------------------------------------

    def run(self) -> int:
        self._check()
        try:
            self._start_services()
            self._enroll()
            self._start_agents()
            self._soak()
            return self._finish()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop this
            self._stop_everything()

    def say(self, line: str) -> None:
        print(line, flush=True)

    def note(self, text: str) -> None:
        """A line of the timeline, printed as it happens."""
        now = time.time()
        self.timeline.append((now, text))
        self.say(f"{clock(now, self.zero)}  {text}")

    def _check(self) -> None:
        if connection.vendor != "postgresql" or not connection.settings_dict["NAME"].endswith(
            "_soak"
        ):
            raise SoakRefused("soak runs on a PostgreSQL database named *_soak only.")
        if not shutil.which("redis-server"):
            raise SoakRefused("soak runs its own redis-server: apt-get install redis-server")
        if settings.SECURE_SSL_REDIRECT:
            raise SoakRefused("Set SECURE_SSL_REDIRECT=false: the agents talk plain HTTP.")
        urls = [settings.CELERY_BROKER_URL, settings.CACHE_URL, settings.PRESENCE_BUFFER_URL]
        addresses = {(urlsplit(u).scheme, urlsplit(u).hostname, urlsplit(u).port) for u in urls}
        if len(addresses) != 1:
            raise SoakRefused(
                "CELERY_BROKER_URL, CACHE_URL and PRESENCE_BUFFER_URL must all point at the "
                f"soak's own redis-server (one host and port): {urls}"
            )
        ((scheme, host, port),) = addresses
        if scheme != "redis" or host not in ("127.0.0.1", "localhost") or port is None:
            raise SoakRefused(f"The soak's Redis must be redis://127.0.0.1:<port>/n: {urls[0]}")
        if not _port_free(port):
            raise SoakRefused(
                f"Port {port} is taken: the soak starts (and kills) a redis-server of its own "
                "there, never a shared one. Stop what listens there or pick another port."
            )
        self.redis_port = port
        # Each fault, from its earliest start to its latest heal, then the end of the soak.
        bounds = [t for f in self._plan() for t in (f.at, f.at + f.late + f.down)]
        bounds.append(self.options.minutes * 60)
        if any(b <= a + self.options.margin for a, b in itertools.pairwise(bounds)):
            raise SoakRefused("The faults overlap at this length: give more --minutes.")

    # --- services -----------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Child:
        """A child in its own session (Ctrl-C reaches only the soak), output to its log."""
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_the_soak,  # one prctl call, nothing that takes a lock
            )
        child = Child(name, proc)
        self.children[name] = child
        return child

    def _start_services(self) -> None:
        self.workdir.mkdir(parents=True)
        db = connection.settings_dict
        self.proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
        self.env = {
            **os.environ,
            "DATABASE_URL": _with_address(os.environ["DATABASE_URL"], "127.0.0.1", self.proxy.port),
            "CELERY_BEAT_SCHEDULE_FILENAME": str(self.workdir / "celerybeat-schedule"),
            "PYTHONUNBUFFERED": "1",
        }
        self._start_redis()
        self._seed()
        self.web_port = _free_port()
        self.server = f"http://127.0.0.1:{self.web_port}"
        self._spawn("web", self._web_command())
        for n in (1, 2):
            self._spawn(f"worker{n}", self._worker_command(n))
        self._spawn("beat", [str(BIN / "celery"), "-A", "config", "beat", "--loglevel", "INFO"])
        self._wait_for_web()
        self.say(
            f"services up in {self.workdir.relative_to(ROOT)}/: gunicorn ({WEB_WORKERS} workers) "
            f"on :{self.web_port}, 2 Celery workers, 1 beat; redis-server on "
            f":{self.redis_port}; PostgreSQL {db['NAME']} through a TCP proxy on "
            f":{self.proxy.port}"
        )

    def _web_command(self) -> list[str]:
        return [
            str(BIN / "gunicorn"),
            "config.wsgi",
            "--workers",
            str(WEB_WORKERS),
            "--bind",
            f"127.0.0.1:{self.web_port}",
            "--timeout",
            "60",
            "--access-logfile",
            str(self.workdir / "web-access.log"),
            "--access-logformat",
            "%(s)s %(m)s %(U)s",
        ]

    def _worker_command(self, n: int) -> list[str]:
        return [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--hostname",
            f"worker{n}@soak",
            "--concurrency",
            "2",
        ]

    def _start_redis(self) -> None:
        self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
        )
        client = redis.Redis(port=self.redis_port, socket_connect_timeout=0.5)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.1)
        raise SoakRefused(f"redis-server did not answer on :{self.redis_port}")

    def _wait_for_web(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.server}/api/v1/health", timeout=2):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.3)
        raise SoakRefused(f"gunicorn did not answer within 60 s; see {self.workdir}/web.log")

    def _seed(self) -> None:
        """The soak's customer: a license with a seat for every agent, the agents' version
        as the latest release, and an API key for the workload."""
        self.customer = customer_create(name="Soak Fleet", slug="soak", actor=SOAK)
        license_create(
            license=License(
                customer=self.customer,
                plan="soak",
                max_agents=self.options.agents,
                max_concurrent_tasks_per_agent=2,
            ),
            actor=SOAK,
        )
        release_publish(version=AGENT_VERSION, actor=SOAK)
        _, self.api_key = api_key_mint(customer=self.customer, name="soak", actor=SOAK)

    # --- agents -------------------------------------------------------------------------

    def _enroll(self) -> None:
        """Mint and activate every agent through the API with the simulator's own
        Fleet.enroll, then share their state dirs out among the simulator processes."""
        started = time.monotonic()
        every = self.workdir / "agents" / "all"
        fleet = Fleet(
            server=self.server,
            api_key=self.api_key,
            state_root=every,
            version=AGENT_VERSION,
            log=self.say,
        )
        fleet.enroll(self.options.agents)
        fleet.halt()  # nothing was started: this closes their connections
        self.say(
            f"{self.options.agents} agents activated through the API in "
            f"{time.monotonic() - started:.0f} s"
        )
        dirs = sorted(every.glob("agent-*"), key=lambda p: int(p.name.removeprefix("agent-")))
        for n, path in enumerate(dirs):
            root = self.workdir / "agents" / f"sim{n % self.options.simulators + 1}"
            root.mkdir(exist_ok=True)
            path.rename(root / path.name)

    def _start_agents(self) -> None:
        env = {**self.env, "SOAK_API_KEY": self.api_key}
        for n in range(1, self.options.simulators + 1):
            self._spawn(
                f"sim{n}",
                [
                    sys.executable,
                    str(HERE / "soak_agents.py"),
                    "--server",
                    self.server,
                    "--state-root",
                    str(self.workdir / "agents" / f"sim{n}"),
                    "--out",
                    str(self.workdir / f"sim{n}.json"),
                    "--ramp",
                    str(self.options.ramp),
                ],
                env,
            )
        deadline = time.monotonic() + 600
        pending = {f"sim{n}" for n in range(1, self.options.simulators + 1)}
        while pending:
            for name in list(pending):
                ready = self.workdir / f"{name}.ready"
                if ready.exists():
                    pending.discard(name)
                    state = json.loads(ready.read_text())
                    self.say(f"{name}: {state['beating']} of {state['agents']} agents heartbeating")
                elif self.children[name].proc.poll() is not None:
                    raise SoakRefused(
                        f"{name} exited while starting; see {self.workdir}/{name}.log"
                    )
            if time.monotonic() > deadline:
                raise SoakRefused(f"{sorted(pending)} did not start their agents in 10 minutes")
            time.sleep(1)

    # --- the soak itself ----------------------------------------------------------------

    def _plan(self) -> list[Planned]:
        """The faults at fixed shares of the soak (20%, 45%, 70%), so a longer soak spreads
        them out; each is healed its outage after it was made."""
        length, o = self.options.minutes * 60, self.options
        return [
            Planned("redis", 0.20 * length, o.redis_down, self._kill_redis, self._restart_redis),
            Planned(
                "postgres",
                0.45 * length,
                o.database_down,
                self._cut_database,
                self._heal_database,
            ),
            Planned(
                "worker",
                0.70 * length,
                o.worker_down,
                self._kill_worker,
                self._restart_worker,
                late=KILL_WAIT,
            ),
        ]

    def _soak(self) -> None:
        o = self.options
        self.zero = time.time()
        self.note(
            f"soak starts: {o.agents} agents heartbeating in {o.simulators} simulator "
            f"processes, {o.jobs_per_minute} jobs/min submitted, {o.minutes:g} min"
        )
        workload = threading.Thread(target=self._workload, name="workload", daemon=True)
        workload.start()
        plan = self._plan()
        end = self.zero + o.minutes * 60
        next_progress = self.zero + PROGRESS_SECONDS
        while time.time() < end:
            for step in plan:
                fault = self.faults.get(step.name)
                if not step.made and time.time() >= self.zero + step.at:
                    step.made = True
                    step.make()
                elif fault and fault.healed is None and time.time() >= fault.started + step.down:
                    step.heal()
            if time.time() >= next_progress:
                self._progress()
                next_progress += PROGRESS_SECONDS
            self._check_children()
            time.sleep(0.5)
        self.workload_stop.set()
        workload.join(timeout=60)
        self.end = time.time()
        self.note(f"soak ends: workload stopped after {self.submitted} jobs; agents keep running")

    def _workload(self) -> None:
        """A steady trickle of jobs for every role through the customer API, well below
        what the fleet can run (each agent takes up to 2 jobs a heartbeat)."""
        customer = Client(
            self.server, self.api_key, transport=ObservedTransport(HttpxTransport(), self.seen)
        )
        fleet = Fleet(self.server, self.api_key, self.workdir / "agents", _customer=customer)
        interval = 60 / self.options.jobs_per_minute
        next_at, n = time.monotonic(), 0
        while not self.workload_stop.is_set():
            try:
                fleet.submit(1, role=ROLES[n % len(ROLES)])
                self.submitted += 1
            except (ApiError, Unreachable):
                self.refused += 1  # its 5xx answers are counted by the transport
            n += 1
            next_at = max(next_at + interval, time.monotonic())  # late: no burst to catch up
            self.workload_stop.wait(next_at - time.monotonic())
        customer.close()

    def _progress(self) -> None:
        agents = _by_status(Agent.objects.filter(customer=self.customer))
        jobs = _by_status(Job.objects.filter(customer=self.customer))
        errors = self.seen.summary()["server_errors"]
        for stats in self.workdir.glob("sim*.stats"):
            errors += json.loads(stats.read_text())["server_errors"]
        faults = ", ".join(
            f"{f.name} {'healed' if f.healed else 'ACTIVE'}" for f in self.faults.values()
        )
        self.say(
            f"{clock(time.time(), self.zero)}  agents online {agents[AgentStatus.ONLINE]}/"
            f"{sum(agents.values())} (offline {agents[AgentStatus.OFFLINE]})"
            f" · jobs done {jobs[JobStatus.SUCCEEDED]} (queued {jobs[JobStatus.QUEUED]}, "
            f"running {jobs[JobStatus.RUNNING]}, failed {jobs[JobStatus.FAILED]})"
            f" · 5xx seen {errors} · faults: {faults or 'none yet'}"
        )

    def _check_children(self) -> None:
        for child in self.children.values():
            code = child.proc.poll()
            if code is not None and not child.expected_down and child.name not in self.exited:
                self.exited.add(child.name)
                self.unexpected_exits.append(f"{child.name} (exit {code})")
                self.note(f"{child.name} EXITED on its own (exit {code}); see {child.name}.log")

    # --- the faults ---------------------------------------------------------------------

    def _kill_redis(self) -> None:
        redis_server = self.children["redis"]
        redis_server.expected_down = True
        self.faults["redis"] = Fault("redis kill", time.time())
        os.kill(redis_server.proc.pid, signal.SIGKILL)
        redis_server.proc.wait()
        self.note(
            f"FAULT redis kill: SIGKILL redis-server :{self.redis_port} (broker, cache and "
            f"presence buffer), down {self.options.redis_down:g} s"
        )

    def _restart_redis(self) -> None:
        self._start_redis()
        self.faults["redis"].healed = time.time()
        self.note(f"heal: redis-server started again on :{self.redis_port}, empty (no persistence)")

    def _cut_database(self) -> None:
        assert self.proxy is not None
        self.faults["postgres"] = Fault("postgres restart", time.time())
        self.proxy.cut()
        self.note(
            "FAULT postgres restart (simulated at the network: the shared server must not be "
            "restarted): every app connection dropped, new ones refused, for "
            f"{self.options.database_down:g} s"
        )

    def _heal_database(self) -> None:
        assert self.proxy is not None
        self.proxy.heal()
        self.faults["postgres"].healed = time.time()
        self.note("heal: postgres accepts connections again")

    def _kill_worker(self) -> None:
        """Arm the kill: a thread SIGKILLs worker2 the moment it takes a snapshot or a sweep
        (each runs for tens of milliseconds), so the kill lands mid-task, or after
        KILL_WAIT seconds whatever it is doing."""
        threading.Thread(target=self._kill_worker_mid_task, name="worker-kill", daemon=True).start()

    def _kill_worker_mid_task(self) -> None:
        worker = self.children["worker2"]
        log = self.workdir / "worker2.log"
        deadline = time.monotonic() + KILL_WAIT
        with open(log, errors="replace") as lines:
            lines.seek(0, os.SEEK_END)
            since, taken = "", None
            while taken is None and time.monotonic() < deadline:
                since += lines.read()
                taken = TASK_TO_INTERRUPT.search(since)
                time.sleep(0.002)
        worker.expected_down = True
        os.killpg(worker.proc.pid, signal.SIGKILL)  # the worker and its pool, as an OOM kill
        self.faults["worker"] = Fault("worker kill", time.time())
        worker.proc.wait()
        held = unfinished_tasks(log.read_text(errors="replace"))
        self.note(
            "FAULT worker kill: SIGKILL worker2 and its pool processes"
            + (f" as it took {taken[1]}" if taken else f" ({KILL_WAIT} s without a task)")
            + f"; it held {', '.join(held) or 'no task'}; restarted in "
            f"{self.options.worker_down:g} s (as a supervisor would)"
        )

    def _restart_worker(self) -> None:
        self._spawn("worker2", self._worker_command(2))
        self.faults["worker"].healed = time.time()
        self.note("heal: worker2 started again")

    # --- the result ---------------------------------------------------------------------

    def _finish(self) -> int:
        """Let beat take the snapshot of the soak's last minute (rebuilding any it missed),
        read what the server recorded, stop the agents, and judge."""
        last_minute = floor_minute(utc(self.end))
        deadline = time.monotonic() + 2 * settings.SNAPSHOT_SECONDS + 30
        while (
            time.monotonic() < deadline
            and not FleetSnapshot.objects.filter(
                customer=self.customer, taken_at__gte=last_minute
            ).exists()
        ):
            self._check_children()
            time.sleep(2)
        measured = time.time()
        server = self._server_record(measured)
        self.cpu = self._cpu_seconds()
        self.note("stopping the agents (each finishes and reports what it holds)")
        for n in range(1, self.options.simulators + 1):
            self._stop(self.children[f"sim{n}"], grace=120)
        server["jobs"] = _by_status(Job.objects.filter(customer=self.customer))
        agents_side = self._agents_record()
        return self._report(server, agents_side, measured)

    def _cpu_seconds(self) -> dict[str, float]:
        """CPU time each child (with its own processes: gunicorn's and Celery's workers) and
        this process used so far, from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        by_group: defaultdict[int, float] = defaultdict(float)  # by process group
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # gone meanwhile
            by_group[int(fields[2])] += (int(fields[11]) + int(fields[12])) / tick
        used = {name: by_group[c.proc.pid] for name, c in self.children.items()}
        used["soak"] = time.process_time()
        return used

    def _server_record(self, measured: float) -> dict[str, Any]:
        offline = list(
            AuditEvent.objects.filter(
                customer=self.customer,
                action=AuditAction.AGENT_OFFLINE,
                at__gte=utc(self.zero),
                at__lte=utc(measured),
            ).values_list("target_id", "at")
        )
        jobs = Job.objects.filter(customer=self.customer)
        claims = Counter(
            AuditEvent.objects.filter(
                customer=self.customer, action=AuditAction.JOB_CLAIM
            ).values_list("target_id", flat=True)
        )
        first, last = ceil_minute(utc(self.zero)), floor_minute(utc(self.end))
        snapshots = dict(
            FleetSnapshot.objects.filter(
                customer=self.customer, taken_at__gte=first, taken_at__lte=last
            ).values_list("taken_at", "backfilled")
        )
        agents = Agent.objects.filter(customer=self.customer)
        return {
            "offline": [(int(agent), at.timestamp()) for agent, at in offline],
            "offline_since_soak": agents.filter(offline_since__gte=utc(self.zero)).count(),
            "offline_now": agents.exclude(status=AgentStatus.ONLINE).count(),
            "jobs": _by_status(jobs),
            "attempts_over_one": jobs.filter(attempts__gt=1).count(),
            "claimed_twice": sum(1 for n in claims.values() if n > 1),
            "lease_expired": AuditEvent.objects.filter(
                customer=self.customer, action=AuditAction.JOB_LEASE_EXPIRED
            ).count(),
            "snapshots": snapshots,
            "first_minute": first,
            "last_minute": last,
        }

    def _agents_record(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"agents": [], "executions": [], "statuses": Counter()}
        merged["server_errors"] = list(self.seen.server_errors)
        merged["unreachable"] = list(self.seen.unreachable)
        merged["statuses"].update(self.seen.statuses)
        for n in range(1, self.options.simulators + 1):
            path = self.workdir / f"sim{n}.json"
            if not path.exists():
                raise SoakRefused(f"sim{n} wrote no results; see {self.workdir}/sim{n}.log")
            data = json.loads(path.read_text())
            for key in ("agents", "executions", "server_errors", "unreachable"):
                merged[key] += data[key]
            merged["statuses"].update(data["statuses"])
        return merged

    def _server_side_errors(self) -> int:
        """5xx answers gunicorn logged, a cross-check of the clients' count (its log has
        whole seconds only, too coarse to place them in or out of a window)."""
        log = self.workdir / "web-access.log"
        statuses = (line.partition(" ")[0] for line in log.read_text().splitlines())
        return sum(1 for status in statuses if status.isdigit() and int(status) >= 500)

    def _report(self, server: dict[str, Any], agents: dict[str, Any], measured: float) -> int:
        o = self.options
        windows = {name: fault.window(o.margin, measured) for name, fault in self.faults.items()}
        alive = {a["id"] for a in agents["agents"] if a["alive"]}
        offline_agents = {agent for agent, _ in server["offline"]}
        false_offline = offline_agents & alive
        twice = executed_more_than_once(job for job, _, _ in agents["executions"])
        error_times = [at for at, _, _ in agents["server_errors"]]
        inside, outside = split_by_windows(error_times, list(windows.values()))
        snapshots: dict[datetime, bool] = server["snapshots"]
        missing = missing_minutes(snapshots, server["first_minute"], server["last_minute"])
        rebuilt = [minute for minute, backfilled in snapshots.items() if backfilled]
        missing += unexplained_backfills(rebuilt, list(windows.values()))
        verdict = Verdict(
            false_offline=len(false_offline),
            run_more_than_once=len(twice),
            server_errors_outside=len(outside),
            snapshot_minutes_missing=len(missing),
        )
        silences = sorted(
            (longest_silence(a["ok"], self.zero, self.end), a["id"]) for a in agents["agents"]
        )
        longest, quietest = silences[-1] if silences else (0.0, 0)
        jobs: Counter[str] = server["jobs"]
        by_window = ", ".join(
            f"{name} {sum(1 for t in error_times if w[0] <= t <= w[1])}"
            for name, w in windows.items()
        )
        statuses: Counter[str] = agents["statuses"]
        answers = sum(statuses.values())
        classes: Counter[str] = Counter()
        for key, n in statuses.items():
            classes[f"{key.rsplit(' ', 1)[1][0]}xx"] += n
        notes = {
            "false offline agents": (
                f"{len(offline_agents)} agent(s) marked offline (audit), "
                f"{server['offline_since_soak']} with offline_since in the soak, "
                f"{server['offline_now']} not online at the end; "
                f"{len(agents['agents']) - len(alive)} simulator thread(s) died"
            ),
            "jobs run more than once": (
                f"{len(agents['executions'])} executions; server: "
                f"{server['attempts_over_one']} job(s) with attempts > 1, "
                f"{server['claimed_twice']} claimed twice, {server['lease_expired']} lease(s) "
                "expired"
            ),
            "5xx answers outside the fault windows": (
                f"{len(inside)} inside ({by_window}); gunicorn logged "
                f"{self._server_side_errors()} 5xx in all"
            ),
            "snapshot minutes missing": (
                f"{server['first_minute']:%H:%M} to {server['last_minute']:%H:%M} UTC: "
                f"{len(snapshots)} present, {sum(snapshots.values())} of them backfilled"
            ),
        }
        self.say("")
        self.say(
            f"soak: {o.agents} agents for {o.minutes:g} min on {WEB_WORKERS} gunicorn workers, "
            "2 Celery workers and 1 beat (PostgreSQL via a TCP proxy, a private redis-server)"
        )
        self.say("")
        for line in verdict.table(notes):
            self.say(line)
        self.say("")
        self.say(
            f"agents: {len(agents['agents'])} ran, {len(alive)} threads alive at the end; "
            f"longest silence between answered heartbeats {longest:.0f} s (agent {quietest}); "
            f"{sum(len(a['failed']) for a in agents['agents'])} heartbeat(s) failed after "
            "the client's retries"
        )
        self.say(
            f"jobs: {self.submitted} submitted ({self.refused} refused after retries); "
            f"{jobs[JobStatus.SUCCEEDED]} succeeded, {jobs[JobStatus.FAILED]} failed, "
            f"{jobs[JobStatus.QUEUED]} queued and {jobs[JobStatus.RUNNING]} running once the "
            "agents had stopped"
        )
        self.say(
            f"http: {answers} answers to the agents and the workload: "
            + ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
            + f"; {len(agents['unreachable'])} network failure(s)"
        )
        self.say(
            "cpu seconds: " + ", ".join(f"{name} {used:.0f}" for name, used in self.cpu.items())
        )
        if outside:
            self.say("5xx outside the fault windows (the first 20):")
            late = [e for e in sorted(agents["server_errors"]) if e[0] in set(outside)]
            for at, status, where in late[:20]:
                self.say(f"  {clock(at, self.zero)}  {status} {where}")
        if false_offline:
            self.say(f"false offline agents: {sorted(false_offline)[:20]}")
        if twice:
            self.say(f"jobs run more than once (job: executions): {dict(list(twice.items())[:20])}")
        if missing:
            self.say("snapshot minutes missing: " + ", ".join(f"{m:%H:%M}" for m in missing))
        if self.unexpected_exits:
            self.say(f"processes that exited on their own: {', '.join(self.unexpected_exits)}")
        self.say("")
        self.say(
            f"fault timeline (t+ from the start; a window runs from the fault to its heal "
            f"+ {o.margin:g} s)"
        )
        for at, text in self.timeline:
            self.say(f"  {clock(at, self.zero)}  {text}")
        for name, (start, stop) in windows.items():
            self.say(f"  window {name}: {clock(start, self.zero)} to {clock(stop, self.zero)}")
        self.say(f"logs and results: {self.workdir.relative_to(ROOT)}/")
        return 0 if verdict.passed and not self.unexpected_exits else 1

    # --- stopping -----------------------------------------------------------------------

    def _stop(self, child: Child, grace: float = GRACE_SECONDS) -> None:
        """One SIGTERM to the child (a worker's warm shutdown), then its whole group killed
        if it is still running after `grace`."""
        child.expected_down = True
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.say(f"{child.name} did not stop in {grace:g} s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, signal.SIGKILL)  # what is left of its group
        child.proc.wait()

    def _stop_everything(self) -> None:
        """The agents first (they report what they hold), then web, workers and beat,
        Redis last."""
        self.workload_stop.set()
        children = list(self.children.values())
        for child in sorted(
            children, key=lambda c: (not c.name.startswith("sim"), c.name == "redis")
        ):
            self._stop(child)
        if self.proxy is not None:
            self.proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument(
        "--simulators", type=int, default=2, help="Processes the agents' threads share."
    )
    parser.add_argument("--jobs-per-minute", type=int, default=300)
    parser.add_argument("--redis-down", type=float, default=60, help="Seconds Redis stays dead.")
    parser.add_argument(
        "--database-down", type=float, default=25, help="Seconds PostgreSQL stays away."
    )
    parser.add_argument(
        "--worker-down", type=float, default=30, help="Seconds before the killed worker restarts."
    )
    parser.add_argument(
        "--margin", type=float, default=15, help="Seconds after a heal still in its window."
    )
    parser.add_argument("--ramp", type=float, default=30, help="Seconds to start the agents.")
    options = Options(**vars(parser.parse_args(argv)))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return Soak(options).run()
    except KeyboardInterrupt:
        print("soak interrupted; everything it started is stopped", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())

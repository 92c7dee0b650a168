"""The second table of `make bench`: a year in service at 100,000 agents (year.py seeds it).
Times every portal page as the big customer's owner and every admin changelist as staff
(in-process, Django's test Client, one request at a time: the server's time without the
network, with the SQL statements each request sent), then every Celery task in
fleet/tasks.py, then the retention run (`fleet.roll_up_and_prune`) over the year's
backlog until it is complete, with each table's rows before and after.

Used by bench.py (`--only year`); not part of the product."""

import http.server
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Task
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from year import SLUG, YearSize, heartbeats_fresh, year_seed, year_users

from fleet import tasks
from fleet.choices import AlertEventType, BulkActionKind
from fleet.models import (
    AlertDelivery,
    AlertEvent,
    BulkAction,
    Customer,
    Job,
    Rollout,
    SweepState,
)
from fleet.services.alerts import alert_channel_create
from fleet.services.audit import Actor
from fleet.services.bulk import bulk_action_start
from fleet.services.presence import presence_flush
from fleet.services.snapshots import fleet_snapshots_take
from fleet.services.sweeps import STALE_SWEEP

PAGE_GOAL_MS = 300.0
TASK_GOAL_MS = 1000.0

# The tables a year fills, counted before and after the retention run.
COUNTED = [
    "fleet_agent",
    "fleet_job",
    "fleet_auditevent",
    "fleet_fleetsnapshot",
    "fleet_fleetrollup",
    "fleet_anomaly",
    "fleet_rollout",
    "fleet_rollouttarget",
    "fleet_activationtoken",
    "fleet_alertevent",
    "fleet_alertdelivery",
    "fleet_bulkaction",
]


@dataclass(frozen=True)
class Page:
    name: str
    url: str
    staff: bool = False  # the admin's staff user; else the customer's owner
    htmx: bool = False  # a poll's request (the partial the page swaps in)


@dataclass
class PageTime:
    page: Page
    status: int
    ms: list[float] = field(default_factory=list)
    statements: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.ms) if self.ms else float("nan")

    @property
    def p95(self) -> float:
        """The nearest-rank 95th percentile (of 20 requests, the 19th fastest)."""
        if not self.ms:
            return float("nan")
        ranked = sorted(self.ms)
        return ranked[max(0, -(-95 * len(ranked) // 100) - 1)]


@dataclass
class TaskTime:
    name: str
    ms: list[float]
    result: str
    goal: bool = True  # judged against TASK_GOAL_MS (a whole bulk action is not)


def year_pages(customer: Customer) -> list[Page]:
    """Every portal page a member reads (with the variants the year makes costly) and
    every changelist of fleet/admin/, unfiltered and filtered to the customer."""
    recent = (
        Job.objects.filter(customer=customer, status="succeeded")
        .order_by("-finished_at")
        .values_list("pk", "agent_id")
        .first()
    )
    job_id, agent_id = recent if recent else (0, 0)
    rollout = Rollout.objects.filter(customer=customer).order_by("-created_at").first()
    bulk = BulkAction.objects.filter(customer=customer).order_by("-total", "-pk").first()
    portal = [
        ("dashboard", "/portal/"),
        ("dashboard, 30 days", "/portal/?range=30d"),
        ("dashboard, 12 months", "/portal/?range=1y"),
        ("agents", "/portal/agents/"),
        ("agents, offline", "/portal/agents/?status=offline"),
        ("agents, label gpu=a100", "/portal/agents/?label=gpu%3Da100"),
        ("agents, last page", "/portal/agents/?page=99999"),
        ("agent detail", f"/portal/agents/{agent_id}/"),
        ("hosts", "/portal/hosts/"),
        ("jobs", "/portal/jobs/"),
        ("jobs, failed", "/portal/jobs/?status=failed"),
        ("job detail", f"/portal/jobs/{job_id}/"),
        ("anomalies (open)", "/portal/anomalies/"),
        ("anomalies, resolved", "/portal/anomalies/?state=resolved"),
        ("upgrades", "/portal/upgrades/"),
        ("upgrade detail", f"/portal/upgrades/{rollout.pk if rollout else 0}/"),
        ("tokens", "/portal/tokens/"),
        ("plan", "/portal/plan/"),
        ("plan, sized", "/portal/plan/?repo_loc=2000000"),
        ("keys", "/portal/keys/"),
        ("activity", "/portal/activity/"),
        ("activity, machine events", "/portal/activity/?machine=1"),
        ("alerts", "/portal/alerts/"),
        ("settings", "/portal/settings/"),
        ("members", "/portal/members/"),
        ("two-factor settings", "/portal/two-factor/"),
        ("bulk detail", f"/portal/agents/bulk/{bulk.pk if bulk else 0}/"),
    ]
    polls = [
        ("dashboard (poll)", "/portal/"),
        ("agents (poll)", "/portal/agents/"),
        ("jobs (poll)", "/portal/jobs/"),
    ]
    pages = [Page(f"portal: {name}", url) for name, url in portal]
    pages += [Page(f"portal: {name}", url, htmx=True) for name, url in polls]
    for model, model_admin in admin.site._registry.items():
        if not type(model_admin).__module__.startswith("fleet.admin"):
            continue
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        pages.append(Page(f"admin: {opts.verbose_name_plural}", url, staff=True))
        if "customer" in model_admin.list_filter:
            pages.append(
                Page(
                    f"admin: {opts.verbose_name_plural}, {customer.slug}",
                    f"{url}?customer__id__exact={customer.pk}",
                    staff=True,
                )
            )
    return pages


def pages_time(
    pages: list[Page],
    owner: User,
    staff: User,
    *,
    requests: int,
    budget_seconds: float,
    say: Callable[[str], None],
) -> list[PageTime]:
    """Each page once to warm it (templates, caches), then `requests` times, or fewer (at
    least 5) once a page has spent `budget_seconds`."""
    clients = {}
    for user in (owner, staff):
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        if user.is_staff:
            _second_factor_passed(client, user)
        clients[user.is_staff] = client
    timed = []
    for page in pages:
        client = clients[page.staff]
        headers = {"HX-Request": "true"} if page.htmx else {}
        timed_page = PageTime(page, client.get(page.url, headers=headers).status_code)
        if timed_page.status != 200:
            say(f"  {page.name}: HTTP {timed_page.status} (not timed)")
            timed.append(timed_page)
            continue
        heartbeats_fresh()  # every live agent online, however long the pages before took
        spent = 0.0
        for n in range(requests):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(page.url, headers=headers)
                elapsed = time.perf_counter() - started
            timed_page.ms.append(elapsed * 1000)
            timed_page.statements.append(len(queries.captured_queries))
            timed_page.status = max(timed_page.status, response.status_code)
            spent += elapsed
            if spent > budget_seconds and n + 1 >= 5:
                break
        say(
            f"  {page.name:<44} {len(timed_page.ms):>3}x  median {timed_page.median:>8.1f} ms"
            f"  p95 {timed_page.p95:>8.1f} ms  {statistics.median(timed_page.statements):>5.0f} SQL"
        )
        timed.append(timed_page)
    return timed


def _second_factor_passed(client: Client, user: User) -> None:
    """Staff sign in with an authenticator app (STAFF_REQUIRE_2FA): give the staff user
    one and mark the session as past its code, as the code page does. (Nothing to do
    where django-otp is not installed.)"""
    try:
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice
    except ImportError:
        return
    from portal.second_factor import SESSION_PENDING

    device, _ = TOTPDevice.objects.get_or_create(user=user, name="bench", confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.pop(SESSION_PENDING, None)  # a second run finds the device: its code was given
    session.save()


def _claimable(task: Task) -> None:
    """Let a periodic task claim its run again (the bench runs it back to back)."""
    SweepState.objects.filter(name=SweepState.beat_name(task.name)).delete()


def _steady_sweep() -> None:
    """The stale sweep as in service: its last run 30 s ago (no gap, so no grace), and
    every live agent heard within the window."""
    SweepState.objects.update_or_create(
        name=STALE_SWEEP,
        defaults={
            "last_run_at": timezone.now() - timedelta(seconds=30),
            "grace_until": None,
            "presence_intact": True,
        },
    )
    heartbeats_fresh()


def _run(task: Task, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = task.apply(args=args, throw=True).get()
    return (time.perf_counter() - started) * 1000, result


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver on loopback that takes every alert (202)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def tasks_time(
    customer: Customer, owner: User, say: Callable[[str], None], runs: int = 3
) -> list[TaskTime]:
    """Every task of fleet/tasks.py but the retention run, `runs` times back to back (the
    periodic ones claiming their run each time); the first run of a sweep meets what the
    year left for it (agents due for cleanup, tokens past expiry), the later ones the
    steady state."""
    heartbeats_fresh()
    # Not timed: beat's minutes up to now (the pages took a while), and the presence
    # buffer's mark that a sweep in service has set (without it a sweep grants grace).
    fleet_snapshots_take()
    presence_flush(for_sweep=True)
    periodic: list[tuple[Task, Callable[[], None]]] = [
        (tasks.flush_presence, lambda: None),
        (tasks.mark_stale_agents, _steady_sweep),
        (tasks.take_snapshots, heartbeats_fresh),
        (tasks.advance_rollouts, lambda: None),
        (tasks.send_due_alerts, lambda: None),
        (tasks.alert_licenses, lambda: None),
        (tasks.clean_up_stale_agents, heartbeats_fresh),
        (tasks.anomalies_daily_digest, lambda: None),
        (tasks.expire_tokens, lambda: None),
    ]
    timed = []
    for task, prepare in periodic:
        times, results = [], []
        for _ in range(runs):
            _claimable(task)
            prepare()
            ms, result = _run(task)
            times.append(ms)
            results.append(result)
        timed.append(TaskTime(task.name, times, _brief(results[0])))
        say(f"  {task.name:<34} {' '.join(f'{t:>9.1f}' for t in times)} ms  {_brief(results[0])}")
    timed.append(_deliver_alert(customer, owner, runs))
    say(f"  {timed[-1].name:<34} {' '.join(f'{t:>9.1f}' for t in timed[-1].ms)} ms")
    timed.append(_bulk_action(customer, owner))
    say(f"  {timed[-1].name:<34} {timed[-1].ms[0]:>9.1f} ms  {timed[-1].result}")
    return timed


def _brief(result: Any) -> str:
    if isinstance(result, dict):
        shown = {k: v for k, v in result.items() if v not in (0, False, None, {})}
        return ", ".join(f"{k}={v}" for k, v in shown.items())[:60] or "nothing to do"
    return str(result)[:60]


def _deliver_alert(customer: Customer, owner: User, runs: int) -> TaskTime:
    """One alert each run to a webhook receiver on loopback: the send's own cost (the
    channel allows a private address for the bench only)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with override_settings(ALERT_ALLOW_PRIVATE_NETWORKS=True):
            channel, _ = alert_channel_create(
                customer=customer,
                kind="webhook",
                url=f"http://127.0.0.1:{server.server_address[1]}/alerts",
                name="bench receiver",
                actor=Actor(user=owner, label=owner.username),
            )
            times, outcome = [], ""
            for n in range(runs):
                now = timezone.now()
                event = AlertEvent.objects.create(
                    customer=customer,
                    type=AlertEventType.ALERT_TEST,
                    dedup_key=f"bench-receiver:{now.timestamp()}:{n}",
                )
                delivery = AlertDelivery.objects.create(
                    customer=customer,
                    event=event,
                    channel=channel,
                    retry_until=now + timedelta(days=1),
                )
                ms, outcome = _run(tasks.deliver_alert, delivery.pk)
                times.append(ms)
    finally:
        server.shutdown()
    return TaskTime("fleet.deliver_alert", times, outcome)


def _bulk_action(customer: Customer, owner: User) -> TaskTime:
    """A label on every agent of the fleet, as the Agents page asks for it, run whole."""
    action = bulk_action_start(
        customer=customer,
        kind=BulkActionKind.LABEL,
        filters={},
        params={"labels": {"bench": "year"}},
        actor=Actor(user=owner, label=owner.username),
    )
    ms, _ = _run(tasks.run_bulk_action, action.pk)
    chunks = max(1, -(-action.total // 500))
    return TaskTime(
        "fleet.run_bulk_action",
        [ms],
        f"{action.total} agents, {chunks} chunks, {ms / chunks:.0f} ms a chunk",
        goal=False,
    )


def row_counts() -> dict[str, tuple[int, int]]:
    """Each counted table's rows and its size on disk (MB, indexes included)."""
    counts = {}
    with connection.cursor() as cursor:
        for table in COUNTED:
            cursor.execute(  # (the table names are COUNTED's)
                f"SELECT count(*), pg_total_relation_size('{table}') / 1048576 FROM {table}"  # noqa: S608
            )
            counts[table] = cursor.fetchone()
    return counts


@dataclass
class Prune:
    runs: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(ms for ms, _ in self.runs) / 1000

    @property
    def complete(self) -> bool:
        return bool(self.runs) and bool(self.runs[-1][1].get("complete"))


def prune_until_complete(say: Callable[[str], None], max_runs: int) -> Prune:
    """`fleet.roll_up_and_prune` again and again, as its hourly beat entry would, until a
    run finishes within its budget."""
    prune = Prune()
    while len(prune.runs) < max_runs:
        _claimable(tasks.roll_up_and_prune)
        ms, result = _run(tasks.roll_up_and_prune)
        prune.runs.append((ms, result))
        say(f"  prune run {len(prune.runs)}: {ms / 1000:.1f} s  {_brief(result)}")
        if result.get("complete"):
            break
    return prune


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def report(
    say: Callable[[str], None],
    *,
    header: str,
    pages: list[PageTime],
    pages_after: list[PageTime],
    pages_note: str,
    beat: list[TaskTime],
    prune: Prune,
    before: dict[str, tuple[int, int]],
    after: dict[str, tuple[int, int]],
) -> None:
    say("")
    say(header)
    say(
        f"{'page':<46} {'n':>3} {'median ms':>10} {'p95 ms':>8} {'SQL/req':>8} "
        f"{'HTTP':>5} {'< 300 ms':>8}  {'after: median':>13} {'p95':>7} {'< 300 ms':>8}"
    )
    again = {timed.page.name: timed for timed in pages_after}
    for timed in pages:
        later = again.get(timed.page.name)
        later_cells = (
            f"{later.median:>13.1f} {later.p95:>7.1f} {_mark(later.p95 < PAGE_GOAL_MS):>8}"
            if later and later.ms
            else f"{'-':>13} {'-':>7} {'-':>8}"
        )
        if not timed.ms:
            say(
                f"{timed.page.name:<46} {'-':>3} {'-':>10} {'-':>8} {'-':>8} {timed.status:>5} "
                f"{'✗':>8}  {later_cells}"
            )
            continue
        say(
            f"{timed.page.name:<46} {len(timed.ms):>3} {timed.median:>10.1f} {timed.p95:>8.1f} "
            f"{statistics.median(timed.statements):>8.0f} {timed.status:>5} "
            f"{_mark(timed.p95 < PAGE_GOAL_MS and timed.status == 200):>8}  {later_cells}"
        )
    say(pages_note)
    say("")
    header_runs = " ".join(f"{'run ' + str(n + 1):>9}" for n in range(3))
    say(f"{'beat task':<34} {header_runs} {'median':>9}  {'< 1 s':>5}  first run did")
    for task in beat:
        cells = " ".join(f"{ms:>9.1f}" for ms in task.ms) + " " * 10 * (3 - len(task.ms))
        mark = _mark(max(task.ms) < TASK_GOAL_MS) if task.goal else "n/a"
        say(f"{task.name:<34} {cells} {statistics.median(task.ms):>9.1f}  {mark:>5}  {task.result}")
    say("(ms a run; ✓ when every run is under 1 s)")
    say("")
    state = "complete" if prune.complete else "NOT complete"
    say(
        f"fleet.roll_up_and_prune over the year's backlog: {len(prune.runs)} run(s), "
        f"{prune.seconds:.1f} s in all, {state}"
    )
    for n, (ms, result) in enumerate(prune.runs, 1):
        say(f"  run {n}: {ms / 1000:>7.1f} s  {_brief_prune(result)}")
    say("")
    say(f"{'table':<24} {'rows before':>13} {'rows after':>13} {'MB before':>10} {'MB after':>9}")
    for table in COUNTED:
        (rows_b, mb_b), (rows_a, mb_a) = before[table], after[table]
        say(f"{table:<24} {rows_b:>13,} {rows_a:>13,} {mb_b:>10,} {mb_a:>9,}")


def _brief_prune(result: dict[str, Any]) -> str:
    rolled = f"{result.get('hours', 0)} hour and {result.get('days', 0)} day rollups"
    pruned = ", ".join(
        f"{n:,} {name}"
        for name, n in result.items()
        if name not in ("hours", "days", "complete") and n
    )
    return f"{rolled}; pruned {pruned or 'nothing'}"


class YearBench:
    """Seed the year (unless it is there), then pages, tasks and the retention run; print
    the second table."""

    def __init__(self, options: dict[str, Any], say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say

    def run(self) -> None:
        options, say = self.options, self.say
        # The tasks log each run at INFO; the table says what they did.
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("kombu").setLevel(logging.ERROR)  # the filesystem broker's host
        size = YearSize(
            agents=options["year_agents"],
            jobs=options["year_jobs"],
            audit_events=options["audit_events"],
        )
        say("")
        say(f"a year in service: seeding {SLUG} (load average {load_average()})")
        seeded = year_seed(size, say)
        customer = Customer.objects.get(slug=SLUG)
        owner, staff = year_users(customer)
        loads = [load_average()]
        say(f"timing pages ({options['page_requests']} requests each)")
        timed = pages_time(
            year_pages(customer),
            owner,
            staff,
            requests=options["page_requests"],
            budget_seconds=options["page_budget"],
            say=say,
        )
        loads.append(load_average())
        say("running every task of fleet/tasks.py")
        beat = tasks_time(customer, owner, say)
        before = row_counts()
        counts = dict(zip(("agents", "jobs", "audit"), _customer_rows(customer), strict=True))
        say("running the retention run until it is complete")
        prune = prune_until_complete(say, options["prune_runs"])
        after = row_counts()
        loads.append(load_average())
        again = max(5, options["page_requests"] // 4)
        say(f"timing pages again after the retention run ({again} requests each)")
        timed_after = pages_time(
            year_pages(customer),
            owner,
            staff,
            requests=again,
            budget_seconds=options["page_budget"] / 2,
            say=say,
        )
        loads.append(load_average())
        report(
            say,
            header=(
                f"a year in service: {SLUG}, {counts['agents']:,} agents, {counts['jobs']:,} "
                f"jobs, {counts['audit']:,} audit events, {size.minutes:,} minute snapshots "
                f"(before the prune); "
                + (f"seeded in {seeded:.0f} s" if seeded else "seeded by an earlier run")
            ),
            pages=timed,
            pages_note=(
                "(in-process: Django's test Client, DEBUG=false, one request at a time after "
                "one to warm up; ms is the Client's call: middleware, view, templates, no "
                f"network; n: requests timed, fewer than {options['page_requests']} once a "
                f"page spent {options['page_budget']:.0f} s; SQL/req: the median statements "
                "a request; ✓: p95 under 300 ms)\n"
                f"after: the same pages after the retention run, {again} requests each (the "
                "year as it stands in service once retention has caught up)\n"
                f"(load average 1/5/15 min: {loads[0]} before the pages, {loads[1]} after, "
                f"{loads[2]} after the retention run, {loads[3]} at the end; "
                f"{os.cpu_count()} cores)"
            ),
            pages_after=timed_after,
            beat=beat,
            prune=prune,
            before=before,
            after=after,
        )


def _customer_rows(customer: Customer) -> tuple[int, int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM fleet_agent WHERE customer_id = %s AND "
            "status <> 'decommissioned'), (SELECT count(*) FROM fleet_job WHERE customer_id = %s),"
            " (SELECT count(*) FROM fleet_auditevent WHERE customer_id = %s)",
            [customer.pk] * 3,
        )
        return cursor.fetchone()

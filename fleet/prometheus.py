"""The Prometheus exporter at /metrics: a customer's fleet numbers for its API key, every
customer's (each series labelled with its slug) for the staff token METRICS_TOKEN.

The numbers are read set-based, grouped by customer, in the same few statements for one
customer or for all of them, whatever the number of agents and jobs; they use the
definitions fleet_metrics and role_numbers use (heard_q for online, holding_seat for the
fleet, the snapshot's wait window), and a test holds the two to the same answers.
prometheus_client renders them, into a registry made for the one request."""

import hashlib
import hmac
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet import policy
from fleet.api.auth import key_read
from fleet.choices import AgentRole, AgentStatus, Channel, JobCancelReason, JobStatus
from fleet.errors import (
    FleetError,
    ServiceUnavailable,
    Unauthorized,
    database_fault_is_transient,
)
from fleet.models import Agent, Anomaly, Customer, Job, License
from fleet.models.agents import SEAT_HOLDING, heard_q, presence_sql
from fleet.models.jobs import FINISHED_JOB_STATUSES, OPEN_JOB
from fleet.selectors import minor_floor, release_latest
from fleet.selectors.waits import wait_percentiles
from fleet.versions import SemVer

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
# Seat-holding statuses in the lifecycle's order, each exported even at zero so a series
# does not vanish when the last agent leaves it.
STATUSES = [s for s in AgentStatus.values if s in SEAT_HOLDING]


# --- the numbers -------------------------------------------------------------------------


@dataclass
class RoleScrape:
    """One role of one customer's fleet, now."""

    agents: int = 0
    online: int = 0
    queued: int = 0
    running: int = 0
    oldest_wait_seconds: float = 0.0  # 0 when nothing waits
    wait_p50_seconds: float | None = None  # None: no job started or waiting in the window
    wait_p95_seconds: float | None = None
    cost_usd_last_hour: float = 0.0  # of its jobs finished in the last hour
    tokens_last_hour: int = 0


@dataclass
class FleetScrape:
    """One customer's numbers, as the exporter shows them."""

    customer: str  # the slug, every series' `customer` label
    latest_version: SemVer | None = None
    agents_by_status: Counter[str] = field(default_factory=Counter)
    agents_by_version: Counter[str] = field(default_factory=Counter)
    agents_online: int = 0
    agents_not_on_latest: int = 0
    agents_minor_behind: int = 0
    jobs_completed_last_hour: int = 0
    jobs_failed_last_hour: int = 0
    jobs_timed_out_last_hour: int = 0
    anomalies_unresolved: int = 0
    roles: dict[str, RoleScrape] = field(
        default_factory=lambda: {role: RoleScrape() for role in AgentRole.values}
    )

    @property
    def agents_active(self) -> int:
        return sum(self.agents_by_status.values())

    @property
    def online_ratio(self) -> float | None:
        return self.agents_online / self.agents_active if self.agents_active else None


def fleet_scrape(customer: Customer | None, *, now: datetime | None = None) -> list[FleetScrape]:
    """The exporter's numbers: `customer`'s, or every customer's (None, staff), by slug.
    Six statements for one customer on PostgreSQL, seven or eight for all of them (SQLite
    one more, for the waits), whatever the number of customers, agents and jobs."""
    now = now or timezone.now()
    if customer is not None:
        slugs = {customer.pk: customer.slug}
        scope = Q(customer_id=customer.pk)
    else:
        slugs = dict(Customer.objects.order_by("slug").values_list("pk", "slug"))
        scope = Q()
    scrapes = {pk: FleetScrape(customer=slug) for pk, slug in slugs.items()}

    # Version skew: against the latest release of each customer's channel.
    channels = dict(
        License.objects.filter(scope, is_current=True).values_list("customer_id", "channel")
    )
    latest = {
        channel: release_latest(channel)
        for channel in {channels.get(pk, Channel.STABLE) for pk in scrapes}
    }
    for pk, numbers in scrapes.items():
        release = latest[channels.get(pk, Channel.STABLE)]
        numbers.latest_version = release.version if release else None

    online = heard_q(now)
    agents = (
        Agent.objects.filter(scope)
        .holding_seat()
        .annotate(shown_status=presence_sql(now))
        .values("customer_id", "role", "version", "shown_status")
        .annotate(n=Count("pk"), online=Count("pk", filter=online))
        .order_by()
    )
    for row in agents:
        scrape = scrapes.get(row["customer_id"])
        if scrape is None:  # a customer created since the list was read
            continue
        n, version = row["n"], row["version"]
        scrape.agents_by_status[row["shown_status"]] += n
        scrape.agents_by_version[str(version)] += n
        scrape.agents_online += row["online"]
        role = scrape.roles.setdefault(row["role"], RoleScrape())
        role.agents += n
        role.online += row["online"]
        if scrape.latest_version is not None:
            if version != scrape.latest_version:
                scrape.agents_not_on_latest += n
            if version < minor_floor(scrape.latest_version):
                scrape.agents_minor_behind += n

    recent = Q(finished_at__gt=now - HOUR)
    jobs = (
        # Open jobs, and those finished within the hour: (customer, status, finished_at)
        # is indexed, so a customer's old history is not read.
        Job.objects.filter(scope)
        .filter(OPEN_JOB | Q(recent, status__in=FINISHED_JOB_STATUSES))
        .values("customer_id", "role")
        .annotate(
            completed=Count("pk", filter=recent & Q(status=JobStatus.SUCCEEDED)),
            failed=Count("pk", filter=recent & Q(status=JobStatus.FAILED)),
            timed_out=Count(
                "pk",
                filter=recent
                & Q(status=JobStatus.CANCELLED, stop_reason=JobCancelReason.TIMED_OUT),
            ),
            queued=Count("pk", filter=Q(status=JobStatus.QUEUED)),
            running=Count("pk", filter=Q(status=JobStatus.RUNNING)),
            oldest=Min("queued_at", filter=Q(status=JobStatus.QUEUED)),
            cost=Sum("cost_usd", filter=recent),
            tokens=Sum("input_tokens", filter=recent) + Sum("output_tokens", filter=recent),
        )
        .order_by()
    )
    for row in jobs:
        scrape = scrapes.get(row["customer_id"])
        if scrape is None:
            continue
        scrape.jobs_completed_last_hour += row["completed"]
        scrape.jobs_failed_last_hour += row["failed"]
        scrape.jobs_timed_out_last_hour += row["timed_out"]
        role = scrape.roles.setdefault(row["role"], RoleScrape())
        role.queued, role.running = row["queued"], row["running"]
        role.cost_usd_last_hour = float(row["cost"] or 0)
        role.tokens_last_hour = int(row["tokens"] or 0)
        if row["oldest"] is not None:
            role.oldest_wait_seconds = max((now - row["oldest"]).total_seconds(), 0.0)

    for (pk, role_name), (p50, p95) in wait_percentiles(
        now - policy.WAIT_WINDOW, now, customers=list(scrapes), by_role=True
    ).items():
        if pk in scrapes:
            role = scrapes[pk].roles.setdefault(role_name, RoleScrape())
            role.wait_p50_seconds, role.wait_p95_seconds = p50, p95

    anomalies = (
        Anomaly.objects.filter(scope, resolved_at__isnull=True)
        .values("customer_id")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("customer_id", "n")
    )
    for pk, n in anomalies:
        if pk in scrapes:
            scrapes[pk].anomalies_unresolved = n
    return list(scrapes.values())


# --- the exposition ----------------------------------------------------------------------


class FleetCollector(Collector):
    """Turns fleet_scrape's numbers into metric families; reads nothing itself."""

    def __init__(self, scrapes: list[FleetScrape]) -> None:
        self.scrapes = scrapes

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(
                f"agentina_{name}", documentation, labels=["customer", *labels]
            )

        agents = gauge(
            "agents",
            "Agents holding a seat, by status as every page shows it: one not heard from "
            "within the online window counts offline, whatever its status column says.",
            ("status",),
        )
        online = gauge(
            "agents_online",
            "Agents heard from within the online window (AGENT_ONLINE_WINDOW_SECONDS), "
            "whatever their status: the online ratio's numerator.",
        )
        ratio = gauge(
            "agents_online_ratio",
            "Online agents over agents holding a seat (healthy above 0.95); absent without agents.",
        )
        by_version = gauge(
            "agents_by_version", "Agents holding a seat, by the version they run.", ("version",)
        )
        behind = gauge(
            "agents_not_on_latest",
            "Version skew: agents not on the latest release of their customer's channel.",
        )
        minor_behind = gauge(
            "agents_minor_behind",
            "Agents more than one minor version behind the latest release: plan an upgrade.",
        )
        completed = gauge(
            "jobs_completed_last_hour", "Throughput: jobs that succeeded in the last hour."
        )
        failed = gauge("jobs_failed_last_hour", "Jobs that failed in the last hour.")
        timed_out = gauge(
            "jobs_timed_out_last_hour",
            "Jobs stopped in the last hour for running past their max runtime.",
        )
        anomalies = gauge("anomalies_unresolved", "Unresolved findings (anomalies); aim for 0.")
        role_agents = gauge("role_agents", "Agents of a role holding a seat.", ("role",))
        role_online = gauge(
            "role_agents_online",
            "Agents of a role heard from within the online window.",
            ("role",),
        )
        queued = gauge(
            "jobs_queued", "Queue depth: jobs of a role waiting for an agent.", ("role",)
        )
        running = gauge("jobs_running", "Jobs of a role running now.", ("role",))
        oldest = gauge(
            "jobs_oldest_wait_seconds",
            "How long the oldest waiting job of a role has waited; 0 when none waits.",
            ("role",),
        )
        wait_help = (
            "of the waits of a role's jobs started in the last 5 minutes (queued to "
            "started) and of those still queued (queued to now); absent without any."
        )
        p50 = gauge("jobs_wait_p50_seconds", f"Median {wait_help}", ("role",))
        p95 = gauge("jobs_wait_p95_seconds", f"95th percentile {wait_help}", ("role",))
        cost = gauge(
            "role_cost_usd_last_hour",
            "What a role's jobs finished in the last hour cost (USD, as their agents reported).",
            ("role",),
        )
        tokens = gauge(
            "role_tokens_last_hour",
            "Tokens (in and out) of a role's jobs finished in the last hour.",
            ("role",),
        )

        for s in self.scrapes:
            c = s.customer
            for status in STATUSES:
                agents.add_metric([c, status], s.agents_by_status[status])
            online.add_metric([c], s.agents_online)
            if s.online_ratio is not None:
                ratio.add_metric([c], s.online_ratio)
            for version, n in sorted(s.agents_by_version.items(), key=lambda v: SemVer(v[0])):
                by_version.add_metric([c, version], n)
            behind.add_metric([c], s.agents_not_on_latest)
            minor_behind.add_metric([c], s.agents_minor_behind)
            completed.add_metric([c], s.jobs_completed_last_hour)
            failed.add_metric([c], s.jobs_failed_last_hour)
            timed_out.add_metric([c], s.jobs_timed_out_last_hour)
            anomalies.add_metric([c], s.anomalies_unresolved)
            for name, role in s.roles.items():
                role_agents.add_metric([c, name], role.agents)
                role_online.add_metric([c, name], role.online)
                queued.add_metric([c, name], role.queued)
                running.add_metric([c, name], role.running)
                oldest.add_metric([c, name], role.oldest_wait_seconds)
                cost.add_metric([c, name], role.cost_usd_last_hour)
                tokens.add_metric([c, name], role.tokens_last_hour)
                if role.wait_p50_seconds is not None and role.wait_p95_seconds is not None:
                    p50.add_metric([c, name], role.wait_p50_seconds)
                    p95.add_metric([c, name], role.wait_p95_seconds)
        yield from (agents, online, ratio, by_version, behind, minor_behind)
        yield from (completed, failed, timed_out, anomalies)
        yield from (role_agents, role_online, queued, running, oldest, p50, p95, cost, tokens)


# --- the view ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scraper:
    """Who scrapes: one customer, by one of its API keys, or staff (customer None)."""

    customer: Customer | None


def _digest(text: str) -> bytes:
    # Any text the header or the environment holds encodes; equal lengths compare in
    # constant time.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def metrics_scraper(request: HttpRequest) -> Scraper | None:
    """The scraper a bearer credential names: the staff token (METRICS_TOKEN; empty turns
    it off), compared in constant time, or a customer API key with the `read` scope
    (authenticated as the customer API does: an expired key or one without the scope
    raises its FleetError). None for anything else."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    staff_token = settings.METRICS_TOKEN
    if staff_token and hmac.compare_digest(_digest(credential), _digest(staff_token)):
        return Scraper(customer=None)
    key = key_read.authenticate(request, credential)
    return Scraper(customer=key.customer) if key is not None else None


def _error(exc: FleetError) -> JsonResponse:
    response = JsonResponse(exc.as_body(), status=exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="agentina-metrics"'
    return response


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """GET /metrics in the Prometheus text format, for a customer API key or the staff
    token; 401 with WWW-Authenticate otherwise (an expired key too), 403 for a key without
    the `read` scope, 503 while the database is away."""
    try:
        scraper = metrics_scraper(request)
        if scraper is None:
            return _error(Unauthorized("Missing, malformed, revoked or unknown credentials."))
        scrapes = fleet_scrape(scraper.customer)
    except FleetError as exc:
        return _error(exc)
    except DatabaseError as exc:
        if not database_fault_is_transient(exc):
            raise
        logger.warning("database unavailable on GET /metrics: %s", type(exc).__name__)
        unavailable = ServiceUnavailable()
        response = _error(unavailable)
        response["Retry-After"] = str(unavailable.retry_after)
        return response
    registry = CollectorRegistry()
    registry.register(FleetCollector(scrapes))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

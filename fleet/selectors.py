"""Every shared read. Portal and API reads take the customer, so tenancy is in the query."""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Avg, Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from fleet.choices import (
    AgentStatus,
    Channel,
    JobStatus,
    RolloutState,
    RolloutTargetState,
    TokenStatus,
)
from fleet.errors import NotFound
from fleet.models import (
    ActivationToken,
    Agent,
    Anomaly,
    AuditEvent,
    Customer,
    CustomerApiKey,
    FleetSnapshot,
    Host,
    Job,
    License,
    Membership,
    Release,
    Rollout,
    RolloutTarget,
)
from fleet.models.agents import SEAT_HOLDING
from fleet.secrets import SecretKind, secret_digest, secret_is_well_formed, secret_matches
from fleet.versions import SemVer


def customer_active_agent_count(customer: Customer | int) -> int:
    """Agents holding a seat: every agent not decommissioned."""
    return Agent.objects.for_customer(customer).holding_seat().count()


def license_current(customer: Customer | int) -> License | None:
    return License.objects.filter(customer=customer, is_current=True).first()


@dataclass(frozen=True)
class Seats:
    license: License | None
    max_agents: int
    used: int
    outstanding_tokens: int

    @property
    def free(self) -> int:
        return max(0, self.max_agents - self.used)

    def as_dict(self) -> dict[str, int]:
        return {
            "max_agents": self.max_agents,
            "used": self.used,
            "free": self.free,
            "outstanding_tokens": self.outstanding_tokens,
        }


def license_seats(customer: Customer | int) -> Seats:
    license = license_current(customer)
    outstanding = ActivationToken.objects.filter(
        customer=customer, status=TokenStatus.OUTSTANDING, expires_at__gt=timezone.now()
    ).count()
    return Seats(
        license=license,
        max_agents=license.max_agents if license else 0,
        used=customer_active_agent_count(customer),
        outstanding_tokens=outstanding,
    )


def _latest_releases(channels: list[Channel]) -> QuerySet[Release]:
    return Release.objects.filter(channel__in=channels, yanked=False).order_by("-version")


def release_latest(channel: str = Channel.STABLE) -> Release | None:
    """The newest non-yanked release a channel sees; beta also sees stable releases."""
    channels = [Channel.STABLE, Channel.BETA] if channel == Channel.BETA else [Channel.STABLE]
    return _latest_releases(channels).first()


def agents_with_facts() -> QuerySet[Agent]:
    """Agents that may authenticate, each with what its hot paths need: its license
    channel and job cap, the latest release of each channel, and the upgrade a rollout
    has told it to apply now (if any)."""
    current = License.objects.filter(customer=OuterRef("customer_id"), is_current=True)
    order = RolloutTarget.objects.filter(
        agent=OuterRef("pk"),
        state=RolloutTargetState.OFFERED,
        rollout__state__in=[RolloutState.CANARY, RolloutState.ROLLING],
    )
    return Agent.objects.holding_seat().annotate(
        license_channel=Subquery(current.values("channel")[:1]),
        license_max_concurrent=Subquery(current.values("max_concurrent_tasks_per_agent")[:1]),
        latest_stable=Subquery(_latest_releases([Channel.STABLE]).values("version")[:1]),
        latest_any=Subquery(_latest_releases([Channel.STABLE, Channel.BETA]).values("version")[:1]),
        upgrade_rollout_id=Subquery(order.values("rollout_id")[:1]),
        upgrade_version=Subquery(order.values("rollout__release__version")[:1]),
        on_yanked=Exists(Release.objects.filter(version=OuterRef("version"), yanked=True)),
    )


def agent_for_secret(secret: str) -> Agent | None:
    """The agent a secret belongs to, with its facts (`agents_with_facts`), in one SELECT."""
    if not secret_is_well_formed(secret, SecretKind.AGENT_SECRET):
        return None
    agent = agents_with_facts().filter(secret_digest=secret_digest(secret)).first()
    # The lookup is by digest; the comparison itself is constant-time.
    return agent if agent and secret_matches(secret, agent.secret_digest) else None


def agent_latest_release(agent: Agent) -> SemVer | None:
    """The release the agent should be on, from the annotations of `agent_for_secret`.
    (An agent on a yanked release newer than this one is told to move to it too.)"""
    beta = getattr(agent, "license_channel", None) == Channel.BETA
    return getattr(agent, "latest_any" if beta else "latest_stable", None)


@dataclass(frozen=True)
class UpgradeOrder:
    version: SemVer
    rollout_id: int


def agent_upgrade_order(agent: Agent) -> UpgradeOrder | None:
    """The version a rollout tells the agent to apply now, from `agent_for_secret`."""
    version = getattr(agent, "upgrade_version", None)
    if version is None:
        return None
    return UpgradeOrder(version=version, rollout_id=agent.upgrade_rollout_id)  # type: ignore[attr-defined]


def agent_job_cap(agent: Agent) -> int:
    """max_concurrent_tasks_per_agent of the agent's license (0 without one), from the
    annotations of `agent_for_secret`."""
    return getattr(agent, "license_max_concurrent", None) or 0


def api_key_for_secret(secret: str) -> CustomerApiKey | None:
    if not secret_is_well_formed(secret, SecretKind.API_KEY):
        return None
    key = (
        CustomerApiKey.objects.select_related("customer")
        .filter(digest=secret_digest(secret), revoked_at__isnull=True)
        .first()
    )
    return key if key and secret_matches(secret, key.digest) else None


def membership_list(user: User | AnonymousUser) -> QuerySet[Membership]:
    if not user.is_authenticated:
        return Membership.objects.none()
    return Membership.objects.filter(user=user).select_related("customer")


def job_get(customer: Customer | int, job_id: int) -> Job:
    """A job of this customer; another customer's job is as missing as a deleted one."""
    job = Job.objects.filter(customer=customer, pk=job_id).first()
    if job is None:
        raise NotFound("No such job.")
    return job


def token_get(customer: Customer | int, token_id: int) -> ActivationToken:
    token = ActivationToken.objects.filter(customer=customer, pk=token_id).first()
    if token is None:
        raise NotFound("No such activation token.")
    return token


def token_list(customer: Customer | int, status: str | None = None) -> QuerySet[ActivationToken]:
    """Tokens by their effective status: an outstanding token past its expiry is expired,
    whether or not the daily expiry has run yet."""
    tokens = ActivationToken.objects.filter(customer=customer).select_related(
        "agent", "agent__host"
    )
    now = timezone.now()
    if status == TokenStatus.OUTSTANDING:
        return tokens.filter(status=status, expires_at__gt=now)
    if status == TokenStatus.EXPIRED:
        return tokens.filter(
            Q(status=status) | Q(status=TokenStatus.OUTSTANDING, expires_at__lte=now)
        )
    return tokens.filter(status=status) if status else tokens


BASELINE_DAYS = 7


def throughput_baselines(now: datetime, customer: Customer | int | None = None) -> dict[int, float]:
    """By customer: the average of jobs completed in the hour up to this time of day on
    the previous days (from the minute snapshots)."""
    windows = Q()
    for day in range(1, BASELINE_DAYS + 1):
        at = now - timedelta(days=day)
        windows |= Q(
            taken_at__gte=at - timedelta(minutes=2), taken_at__lte=at + timedelta(minutes=2)
        )
    snapshots = FleetSnapshot.objects.filter(windows)
    if customer is not None:
        snapshots = snapshots.filter(customer=customer)
    return dict(
        snapshots.values("customer_id")
        .annotate(avg=Avg("jobs_completed_last_hour"))
        .order_by()
        .values_list("customer_id", "avg")
    )


@dataclass(frozen=True)
class FleetMetrics:
    """The four numbers operators watch: counts live, rates from the latest snapshot."""

    at: datetime
    agents_active: int
    agents_online: int
    online_ratio: float | None
    jobs_completed_last_hour: int
    jobs_completed_previous_hour: int
    queue_depth: int
    jobs_running: int
    anomalies_unresolved: int
    latest_version: str | None
    agents_not_on_latest: int
    agents_minor_behind: int
    throughput_baseline: float | None = None  # same hour on the previous days
    idle_ratio: float | None = None
    wait_p50_seconds: float | None = None
    wait_p95_seconds: float | None = None
    snapshot_at: datetime | None = None

    @property
    def throughput_trend(self) -> float | None:
        """Last hour's completions against the baseline (the same hour on previous days),
        or against the hour before when there is no baseline yet; 1.0 is steady."""
        reference = self.throughput_baseline or self.jobs_completed_previous_hour
        return self.jobs_completed_last_hour / reference if reference else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput_trend": self.throughput_trend}


def minor_floor(latest: SemVer) -> SemVer:
    """The lowest version that is at most one minor behind `latest`."""
    return SemVer(f"{latest.major}.{max(latest.minor - 1, 0)}.0-0")


def fleet_metrics(customer: Customer | int | None, *, now: datetime | None = None) -> FleetMetrics:
    """Seven queries whatever the fleet's size. `customer=None` is every fleet together
    (staff's view), measured against the stable channel, without snapshot rates."""
    now = now or timezone.now()
    scope = Q(customer=customer) if customer is not None else Q()
    license = license_current(customer) if customer is not None else None
    latest = release_latest(license.channel if license else Channel.STABLE)
    latest_version = latest.version if latest else None
    version_counts: dict[str, Any] = {}
    if latest_version is not None:
        version_counts = {
            "behind": Count("pk", filter=~Q(version=latest_version)),
            "minor_behind": Count("pk", filter=Q(version__lt=minor_floor(latest_version))),
        }
    agents = (
        Agent.objects.filter(scope)
        .holding_seat()
        .aggregate(
            active=Count("pk"),
            online=Count("pk", filter=Q(last_heartbeat_at__gte=now - settings.AGENT_ONLINE_WINDOW)),
            **version_counts,
        )
    )
    hour = timedelta(hours=1)
    jobs = Job.objects.filter(scope).aggregate(
        last_hour=Count("pk", filter=Q(status=JobStatus.SUCCEEDED, finished_at__gt=now - hour)),
        previous_hour=Count(
            "pk",
            filter=Q(
                status=JobStatus.SUCCEEDED,
                finished_at__gt=now - 2 * hour,
                finished_at__lte=now - hour,
            ),
        ),
        queued=Count("pk", filter=Q(status=JobStatus.QUEUED)),
        running=Count("pk", filter=Q(status=JobStatus.RUNNING)),
    )
    anomalies = Anomaly.objects.filter(scope, resolved_at__isnull=True).count()
    snapshot = (
        FleetSnapshot.objects.filter(customer=customer).order_by("-taken_at").first()
        if customer is not None
        else None
    )
    baseline = (
        throughput_baselines(now, customer).get(
            customer if isinstance(customer, int) else customer.pk
        )
        if customer is not None
        else None
    )
    return FleetMetrics(
        at=now,
        agents_active=agents["active"],
        agents_online=agents["online"],
        online_ratio=agents["online"] / agents["active"] if agents["active"] else None,
        jobs_completed_last_hour=jobs["last_hour"],
        jobs_completed_previous_hour=jobs["previous_hour"],
        queue_depth=jobs["queued"],
        jobs_running=jobs["running"],
        anomalies_unresolved=anomalies,
        latest_version=str(latest_version) if latest_version else None,
        agents_not_on_latest=agents.get("behind", 0),
        agents_minor_behind=agents.get("minor_behind", 0),
        throughput_baseline=baseline,
        idle_ratio=snapshot.idle_ratio if snapshot else None,
        wait_p50_seconds=snapshot.wait_p50_seconds if snapshot else None,
        wait_p95_seconds=snapshot.wait_p95_seconds if snapshot else None,
        snapshot_at=snapshot.taken_at if snapshot else None,
    )


@dataclass(frozen=True)
class Advice:
    verdict: str  # add_agent, add_work, sized_right or no_data
    headline: str
    reasons: list[str]


ADVICE_WINDOW = timedelta(minutes=15)


def fleet_advice(customer: Customer | int, *, now: datetime | None = None) -> Advice:
    """When to add the next agent and when not to, from the last 15 minutes of snapshots:
    add one when the queue holds steady, idle is under the target and every online agent
    runs its license's maximum of concurrent tasks (so jobs wait); add work instead when
    idle is over the target. Three queries."""
    now = now or timezone.now()
    recent = list(
        FleetSnapshot.objects.filter(customer=customer, taken_at__gt=now - ADVICE_WINDOW).order_by(
            "taken_at"
        )
    )
    if not recent:
        return Advice("no_data", "Advice appears once beat has taken a few snapshots.", [])
    last = recent[-1]
    target = settings.IDLE_TARGET
    if last.idle_ratio is not None and last.idle_ratio > target:
        return Advice(
            "add_work",
            "Add work, not agents.",
            [
                f"{last.idle_ratio:.0%} of online agent time was idle over the last hour "
                f"(above {target:.0%}): the fleet can take more jobs as it is."
            ],
        )
    license = license_current(customer)
    cap = license.max_concurrent_tasks_per_agent if license else 1
    steady = (
        len(recent) >= 5
        and all(s.queue_depth > 0 for s in recent)
        and (last.queue_depth >= 0.8 * recent[0].queue_depth)
    )
    at_cap = last.agents_online > 0 and last.jobs_running >= last.agents_online * cap
    if steady and at_cap:
        waiting = (
            Job.objects.filter(customer=customer, status=JobStatus.QUEUED)
            .values("role")
            .annotate(n=Count("pk"))
            .order_by("-n")
            .first()
        )
        role = waiting["role"] if waiting else "coder"
        wait = f", p95 wait {last.wait_p95_seconds:.0f} s" if last.wait_p95_seconds else ""
        return Advice(
            "add_agent",
            f"Add an agent: a {role}.",
            [
                f"{last.queue_depth} jobs have waited for {len(recent)} minutes{wait}.",
                f"Every online agent runs its {cap} concurrent task(s) and idle is "
                f"{(last.idle_ratio or 0):.0%}.",
                f"Most waiting jobs are for {role}s.",
            ],
        )
    return Advice("sized_right", "The fleet is sized for its work.", [])


# Repo size (lines of code) → agents per role, (min, max), from the product's sizing table.
SIZING = [
    (50_000, {"coder": (1, 2), "reviewer": (1, 1), "tester": (1, 1), "indexer": (1, 1)}),
    (500_000, {"coder": (3, 5), "reviewer": (1, 2), "tester": (1, 2), "indexer": (1, 1)}),
    (None, {"coder": (5, 15), "reviewer": (2, 3), "tester": (2, 4), "indexer": (1, 1)}),
]


@dataclass(frozen=True)
class SizingRow:
    role: str
    recommended_min: int
    recommended_max: int
    current: int

    @property
    def verdict(self) -> str:
        if self.current < self.recommended_min:
            return f"add {self.recommended_min - self.current}"
        if self.current > self.recommended_max:
            return f"{self.current - self.recommended_max} more than needed"
        return "ok"


def fleet_sizing(customer: Customer | int, repo_loc: int) -> list[SizingRow]:
    """The sizing table's row for a repository of `repo_loc` lines against the fleet."""
    table = next(roles for limit, roles in SIZING if limit is None or repo_loc < limit)
    current = dict(
        Agent.objects.for_customer(customer)
        .holding_seat()
        .values("role")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("role", "n")
    )
    return [SizingRow(role, lo, hi, current.get(role, 0)) for role, (lo, hi) in table.items()]


# --- the portal's lists and objects (all scoped by customer) -----------------------------


def agent_get(customer: Customer | int, agent_id: int) -> Agent:
    agent = Agent.objects.select_related("host").filter(customer=customer, pk=agent_id).first()
    if agent is None:
        raise NotFound("No such agent.")
    return agent


def agent_search(customer: Customer | int, filters: dict[str, str]) -> QuerySet[Agent]:
    """The portal's agent list: filter by status, role, version, host and zone, search by
    name, unit, hostname or machine id."""
    agents = Agent.objects.for_customer(customer).select_related("host")
    if filters.get("status"):
        agents = agents.filter(status=filters["status"])
    else:
        agents = agents.holding_seat()
    for key, lookup in (("role", "role"), ("host", "host__hostname"), ("zone", "host__zone")):
        if filters.get(key):
            agents = agents.filter(**{lookup: filters[key]})
    if filters.get("version"):
        try:
            agents = agents.filter(version=SemVer(filters["version"]))
        except ValueError:
            agents = agents.none()
    if filters.get("q"):
        q = filters["q"]
        agents = agents.filter(
            Q(name__icontains=q)
            | Q(unit_name__icontains=q)
            | Q(host__hostname__icontains=q)
            | Q(host__machine_id__icontains=q)
        )
    return agents.order_by("status", "name")


def agent_filter_choices(customer: Customer | int) -> dict[str, list[str]]:
    """Distinct versions, hosts and zones for the filter menus (three small queries)."""
    active = Agent.objects.for_customer(customer).holding_seat()
    versions = sorted({SemVer(str(v)) for v in active.values_list("version", flat=True)})
    return {
        "versions": [str(v) for v in versions],
        "hosts": sorted(set(active.values_list("host__hostname", flat=True))),
        "zones": sorted(set(active.values_list("host__zone", flat=True)) - {""}),
    }


def host_list(customer: Customer | int) -> QuerySet[Host]:
    """Hosts with their agents counted by role, for the zone mix and memory budget."""
    active = Q(agents__status__in=SEAT_HOLDING)
    return (
        Host.objects.filter(customer=customer)
        .annotate(
            n_agents=Count("agents", filter=active),
            n_testers=Count("agents", filter=active & Q(agents__role="tester")),
            n_online=Count("agents", filter=active & Q(agents__status=AgentStatus.ONLINE)),
        )
        .order_by("zone", "hostname")
    )


def job_list(customer: Customer | int, status: str) -> QuerySet[Job]:
    jobs = Job.objects.filter(customer=customer).select_related("agent")
    if status == "finished":
        return jobs.filter(
            status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
        ).order_by("-finished_at", "-pk")
    if status == JobStatus.RUNNING:
        return jobs.filter(status=JobStatus.RUNNING).order_by("started_at")
    return jobs.filter(status=JobStatus.QUEUED).order_by("-priority", "queued_at")


def job_counts(customer: Customer | int) -> dict[str, int]:
    row = Job.objects.filter(customer=customer).aggregate(
        queued=Count("pk", filter=Q(status=JobStatus.QUEUED)),
        running=Count("pk", filter=Q(status=JobStatus.RUNNING)),
        finished=Count(
            "pk", filter=Q(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
        ),
    )
    return dict(row)


def anomaly_list(customer: Customer | int, state: str = "open") -> QuerySet[Anomaly]:
    anomalies = Anomaly.objects.filter(customer=customer).select_related("agent", "resolved_by")
    if state == "resolved":
        return anomalies.filter(resolved_at__isnull=False).order_by("-resolved_at")
    if state == "all":
        return anomalies.order_by(F("resolved_at").desc(nulls_first=True), "-last_seen")
    return anomalies.filter(resolved_at__isnull=True).order_by("-last_seen")


def anomaly_get(customer: Customer | int, anomaly_id: int) -> Anomaly:
    anomaly = Anomaly.objects.filter(customer=customer, pk=anomaly_id).first()
    if anomaly is None:
        raise NotFound("No such anomaly.")
    return anomaly


def rollout_list(customer: Customer | int) -> QuerySet[Rollout]:
    return (
        Rollout.objects.filter(customer=customer)
        .select_related("release", "canary_agent")
        .annotate(
            n_targets=Count("targets", filter=~Q(targets__state=RolloutTargetState.EXCLUDED)),
            n_done=Count("targets", filter=Q(targets__state=RolloutTargetState.SUCCEEDED)),
        )
        .order_by("-created_at")
    )


def rollout_get(customer: Customer | int, rollout_id: int) -> Rollout:
    rollout = rollout_list(customer).filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound("No such rollout.")
    return rollout


@dataclass(frozen=True)
class BatchProgress:
    number: int | None  # None: excluded; 0: the canary
    total: int
    counts: dict[str, int]

    @property
    def label(self) -> str:
        if self.number is None:
            return "Excluded"
        return "Canary" if self.number == 0 else f"Batch {self.number}"

    @property
    def succeeded(self) -> int:
        return self.counts.get(RolloutTargetState.SUCCEEDED, 0)


def rollout_batches(rollout: Rollout) -> list[BatchProgress]:
    """Per batch: how many agents, and how many in each state (one query)."""
    rows = (
        RolloutTarget.objects.filter(rollout=rollout)
        .values("batch", "state")
        .annotate(n=Count("pk"))
        .order_by(F("batch").asc(nulls_last=True))
    )
    batches: dict[int | None, dict[str, int]] = {}
    for row in rows:
        batches.setdefault(row["batch"], {})[row["state"]] = row["n"]
    return [BatchProgress(n, sum(c.values()), c) for n, c in batches.items()]


def upgrade_history(agent: Agent) -> QuerySet[RolloutTarget]:
    return (
        RolloutTarget.objects.filter(agent=agent)
        .select_related("rollout__release")
        .order_by("-rollout__created_at")
    )


def api_key_list(customer: Customer | int) -> QuerySet[CustomerApiKey]:
    return CustomerApiKey.objects.filter(customer=customer).select_related("created_by")


def api_key_get(customer: Customer | int, key_id: int) -> CustomerApiKey:
    key = CustomerApiKey.objects.filter(customer=customer, pk=key_id).first()
    if key is None:
        raise NotFound("No such API key.")
    return key


def audit_list(customer: Customer | int) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(customer=customer).order_by("-at", "-id")


def snapshot_series(customer: Customer | int, *, hours: int = 24) -> list[FleetSnapshot]:
    """The customer's snapshots of the last `hours`, oldest first (for charts)."""
    since = timezone.now() - timedelta(hours=hours)
    return list(
        FleetSnapshot.objects.filter(customer=customer, taken_at__gte=since).order_by("taken_at")
    )

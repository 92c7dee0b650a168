"""Every shared read. Portal and API reads take the customer, so tenancy is in the query."""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Avg, Count, Exists, OuterRef, Q, QuerySet, Subquery
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
    Customer,
    CustomerApiKey,
    FleetSnapshot,
    Job,
    License,
    Membership,
    Release,
    RolloutTarget,
)
from fleet.secrets import SecretKind, secret_digest, secret_is_well_formed, secret_matches
from fleet.versions import SemVer


def customer_active_agent_count(customer: Customer | int) -> int:
    """Agents holding a seat: every agent not decommissioned."""
    return (
        Agent.objects.filter(customer=customer).exclude(status=AgentStatus.DECOMMISSIONED).count()
    )


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


def agent_for_secret(secret: str) -> Agent | None:
    """The agent a secret belongs to, with what its hot paths need, in one SELECT: its
    license channel and job cap, the latest release of each channel, and the upgrade a
    rollout has told it to apply now (if any)."""
    if not secret_is_well_formed(secret, SecretKind.AGENT_SECRET):
        return None
    current = License.objects.filter(customer=OuterRef("customer_id"), is_current=True)
    order = RolloutTarget.objects.filter(
        agent=OuterRef("pk"),
        state=RolloutTargetState.OFFERED,
        rollout__state__in=[RolloutState.CANARY, RolloutState.ROLLING],
    )
    agent = (
        Agent.objects.filter(secret_digest=secret_digest(secret))
        .exclude(status=AgentStatus.DECOMMISSIONED)
        .annotate(
            license_channel=Subquery(current.values("channel")[:1]),
            license_max_concurrent=Subquery(current.values("max_concurrent_tasks_per_agent")[:1]),
            latest_stable=Subquery(_latest_releases([Channel.STABLE]).values("version")[:1]),
            latest_any=Subquery(
                _latest_releases([Channel.STABLE, Channel.BETA]).values("version")[:1]
            ),
            upgrade_rollout_id=Subquery(order.values("rollout_id")[:1]),
            upgrade_version=Subquery(order.values("rollout__release__version")[:1]),
            on_yanked=Exists(Release.objects.filter(version=OuterRef("version"), yanked=True)),
        )
        .first()
    )
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


def agent_list(customer: Customer) -> QuerySet[Agent]:
    return Agent.objects.filter(customer=customer).select_related("host").order_by("status", "name")


def agent_status_counts(customer: Customer) -> dict[str, int]:
    """Agents by status in one query, every status present."""
    row = Agent.objects.filter(customer=customer).aggregate(
        **{status: Count("pk", filter=Q(status=status)) for status in AgentStatus.values}
    )
    return {status: row[status] for status in AgentStatus.values}


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
        .exclude(status=AgentStatus.DECOMMISSIONED)
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
        Agent.objects.filter(customer=customer)
        .exclude(status=AgentStatus.DECOMMISSIONED)
        .values("role")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("role", "n")
    )
    return [SizingRow(role, lo, hi, current.get(role, 0)) for role, (lo, hi) in table.items()]

"""Detections run after each minute snapshot. Each finding has a stable kind and a
fingerprint that names its customer (and agent or host), so repeats fold into one open
anomaly, and a finding whose condition cleared is resolved by the next run."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from fleet import policy
from fleet.choices import AgentRole, AnomalyKind, AnomalySeverity, JobStatus
from fleet.models import FleetSnapshot, Host, Job
from fleet.models.agents import SEAT_HOLDING
from fleet.selectors import throughput_baselines
from fleet.services.anomalies import Finding, anomalies_record, anomalies_resolve
from fleet.services.audit import SYSTEM

DETECTED_KINDS = [
    AnomalyKind.LOW_ONLINE_RATIO,
    AnomalyKind.THROUGHPUT_DROP,
    AnomalyKind.JOB_FAILURES,
    AnomalyKind.VERSION_SKEW,
    AnomalyKind.ANTI_PATTERN,
]


def host_memory_budget_mb(agents: int, testers: int) -> int:
    """The memory a host's agents want: the rule the host anti-pattern and the portal share."""
    return agents * policy.IDLE_AGENT_MB + testers * policy.TESTER_WORKLOAD_MB


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def fleet_detect(snapshots: list[FleetSnapshot], *, now: datetime | None = None) -> list[Finding]:
    """Find what is wrong now, record it (folding repeats), and resolve what cleared."""
    now = now or timezone.now()
    findings: list[Finding] = []
    baselines = throughput_baselines(now)
    hour_ago = dict(
        FleetSnapshot.objects.filter(
            taken_at__gte=now - timedelta(minutes=62), taken_at__lte=now - timedelta(minutes=58)
        ).values_list("customer_id", "queue_depth")
    )
    for snap in snapshots:
        c = snap.customer_id
        if snap.online_ratio is not None and snap.online_ratio < policy.ONLINE_RATIO_TARGET:
            findings.append(
                Finding(
                    c,
                    AnomalyKind.LOW_ONLINE_RATIO,
                    f"low_online_ratio:c{c}",
                    f"Only {snap.agents_online} of {snap.agents_total} agents are online "
                    f"({_pct(snap.online_ratio)}; the target is above "
                    f"{_pct(policy.ONLINE_RATIO_TARGET)}).",
                )
            )
        baseline = baselines.get(c)
        steady = snap.queue_depth > 0 and hour_ago.get(c, 0) > 0
        if (
            baseline is not None
            and baseline >= policy.THROUGHPUT_BASELINE_MIN
            and steady
            and snap.jobs_completed_last_hour < baseline * (1 - settings.THROUGHPUT_DROP_FRACTION)
        ):
            findings.append(
                Finding(
                    c,
                    AnomalyKind.THROUGHPUT_DROP,
                    f"throughput_drop:c{c}",
                    f"{snap.jobs_completed_last_hour} jobs completed in the last hour against "
                    f"{baseline:.0f} at this time on the previous days, while "
                    f"{snap.queue_depth} jobs wait: throughput dropped "
                    f"{_pct(1 - snap.jobs_completed_last_hour / baseline)}.",
                    severity=AnomalySeverity.CRITICAL,
                )
            )
        if snap.agents_minor_behind:
            findings.append(
                Finding(
                    c,
                    AnomalyKind.VERSION_SKEW,
                    f"version_skew:c{c}",
                    f"{snap.agents_minor_behind} agent(s) are more than one minor version behind "
                    "the latest release: plan an upgrade.",
                )
            )
        roles = snap.agents_by_role
        if roles.get(AgentRole.CODER) and not roles.get(AgentRole.INDEXER):
            findings.append(
                Finding(
                    c,
                    AnomalyKind.ANTI_PATTERN,
                    f"anti_pattern:no_indexer:c{c}",
                    "The fleet has coders but no indexer: coders re-read the repository on every "
                    "job. Add one indexer.",
                    severity=AnomalySeverity.INFO,
                )
            )
    findings += _failing_agents(now) + _one_zone_fleets() + _overcommitted_hosts()
    anomalies_record(findings, now=now, actor=SYSTEM)
    anomalies_resolve(
        where=Q(kind__in=DETECTED_KINDS) & ~Q(fingerprint__in=[f.fingerprint for f in findings]),
        note="The condition cleared.",
        now=now,
        actor=SYSTEM,
    )
    return findings


def _failing_agents(now: datetime) -> list[Finding]:
    hour_ago = now - timedelta(hours=1)
    failed = Q(status=JobStatus.FAILED, finished_at__gt=hour_ago)
    # A retryable failure sends the job back to the queue, still naming the agent that failed.
    retried = Q(status=JobStatus.QUEUED, queued_at__gt=hour_ago) & ~Q(error="")
    rows = (
        Job.objects.filter(failed | retried, agent_id__isnull=False)
        .values("agent_id", "customer_id", "agent__name")
        .annotate(n=Count("pk"))
        .filter(n__gte=policy.JOB_FAILURES_PER_HOUR)
        .order_by()
    )
    return [
        Finding(
            r["customer_id"],
            AnomalyKind.JOB_FAILURES,
            f"job_failures:a{r['agent_id']}",
            f"{r['agent__name']} failed {r['n']} jobs in the last hour.",
            agent_id=r["agent_id"],
        )
        for r in rows
    ]


def _one_zone_fleets() -> list[Finding]:
    rows = (
        Host.objects.filter(agents__status__in=SEAT_HOLDING)
        .exclude(zone="")  # a host that reported no zone says nothing about the spread
        .values("customer_id")
        .annotate(hosts=Count("pk", distinct=True), zones=Count("zone", distinct=True))
        .filter(hosts__gte=2, zones=1)
        .order_by()
    )
    return [
        Finding(
            r["customer_id"],
            AnomalyKind.ANTI_PATTERN,
            f"anti_pattern:one_zone:c{r['customer_id']}",
            f"All {r['hosts']} hosts run in one zone: one zone outage stops the whole fleet. "
            "Spread hosts across zones.",
        )
        for r in rows
    ]


def _overcommitted_hosts() -> list[Finding]:
    active = Q(agents__status__in=SEAT_HOLDING)
    rows = (
        Host.objects.filter(memory_mb__isnull=False)
        .annotate(
            n=Count("agents", filter=active),
            testers=Count("agents", filter=active & Q(agents__role=AgentRole.TESTER)),
        )
        .values_list("pk", "customer_id", "hostname", "memory_mb", "n", "testers")
    )
    findings = []
    for pk, customer_id, hostname, memory, n, testers in rows:
        need = host_memory_budget_mb(n, testers)
        if n and memory is not None and need > memory:  # (the query keeps known memory)
            findings.append(
                Finding(
                    customer_id,
                    AnomalyKind.ANTI_PATTERN,
                    f"anti_pattern:memory:h{pk}",
                    f"{hostname} runs {n} agents ({testers} testers) wanting at least {need} MB; "
                    f"it has {memory} MB. Move agents or add memory.",
                )
            )
    return findings

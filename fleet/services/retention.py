"""Retention as policy: what is kept how long (RETAIN_* settings, the README's table), and
the prune that enforces it. Each table is pruned in chunks of CHUNK rows by primary key,
each chunk its own short transaction, so no lock is held for long and the hot paths never
wait; a run stops at its time budget and the next one goes on.

Nothing is pruned before it is folded: minute snapshots only up to the newest rolled-up
hour, hours only up to the newest rolled-up day, and jobs' counts live on in the hourly
rollups, which are made within the hour (fleet/services/rollups.py)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from fleet.choices import (
    BulkActionState,
    RolloutState,
    RollupResolution,
    TokenStatus,
)
from fleet.models import (
    ActivationToken,
    AlertEvent,
    Anomaly,
    AuditEvent,
    BulkAction,
    FleetRollup,
    FleetSnapshot,
    Job,
    Rollout,
)
from fleet.models.jobs import FINISHED_JOB_STATUSES
from fleet.selectors.audit import MACHINE_ACTIONS
from fleet.services.rollups import rollup_newest

CHUNK = 5000
BUDGET_SECONDS = 600.0  # one run's share; a backlog (a year, at first) takes a few runs


@dataclass(frozen=True)
class Kept:
    """One retention rule: the rows of `model` that `past(cutoff)` selects are past their
    period (`name` and `period` say which for the README and the logs). `chunk` rows go
    in one transaction (fewer for rows that take many with them)."""

    name: str
    model: type[models.Model]
    period: Callable[[], timedelta]
    past: Callable[[datetime], Q]
    chunk: int = CHUNK


def _folded(field: str, resolution: str, cutoff: datetime) -> Q:
    """Rows older than the cutoff, but never past what the coarser rollup holds yet."""
    newest = rollup_newest(resolution)
    if newest is None:
        return Q(pk__in=[])  # nothing rolled up yet: nothing goes
    return Q(**{f"{field}__lt": min(cutoff, newest)})


def _days(setting: str) -> Callable[[], timedelta]:
    return lambda: timedelta(days=getattr(settings, setting))


RULES: list[Kept] = [
    Kept(
        "minute snapshots",
        FleetSnapshot,
        lambda: timedelta(hours=settings.RETAIN_MINUTE_SNAPSHOTS_HOURS),
        lambda cutoff: _folded("taken_at", RollupResolution.HOUR, cutoff),
    ),
    Kept(
        "hourly rollups",
        FleetRollup,
        _days("RETAIN_HOURLY_ROLLUPS_DAYS"),
        lambda cutoff: (
            Q(resolution=RollupResolution.HOUR)
            & _folded("period_start", RollupResolution.DAY, cutoff)
        ),
    ),
    Kept(
        "finished jobs",
        Job,
        _days("RETAIN_JOBS_DAYS"),
        lambda cutoff: Q(finished_at__lt=cutoff, status__in=FINISHED_JOB_STATUSES),
    ),
    Kept(
        "claims and completions in the audit log",
        AuditEvent,
        _days("RETAIN_JOBS_DAYS"),
        lambda cutoff: Q(at__lt=cutoff, action__in=MACHINE_ACTIONS),
    ),
    Kept("audit events", AuditEvent, _days("RETAIN_AUDIT_DAYS"), lambda c: Q(at__lt=c)),
    Kept(
        "resolved findings",
        Anomaly,
        _days("RETAIN_ANOMALIES_DAYS"),
        lambda cutoff: Q(resolved_at__lt=cutoff),
    ),
    Kept(
        "alerts and their deliveries",
        AlertEvent,
        _days("RETAIN_ALERTS_DAYS"),
        # Deliveries are retried for a day at most (retry_until): weeks later all are final.
        lambda cutoff: Q(created_at__lt=cutoff),
    ),
    Kept(
        "unredeemed tokens",
        ActivationToken,
        _days("RETAIN_TOKENS_DAYS"),
        lambda cutoff: Q(
            status__in=[TokenStatus.EXPIRED, TokenStatus.REVOKED, TokenStatus.OUTSTANDING],
            expires_at__lt=cutoff,
        ),
    ),
    Kept(
        "finished bulk actions",
        BulkAction,
        _days("RETAIN_JOBS_DAYS"),
        lambda cutoff: Q(state=BulkActionState.DONE, finished_at__lt=cutoff),
    ),
    Kept(
        "finished upgrade waves",
        Rollout,
        _days("RETAIN_AUDIT_DAYS"),
        lambda cutoff: Q(
            state__in=[RolloutState.COMPLETED, RolloutState.ABORTED], finished_at__lt=cutoff
        ),
        chunk=10,  # each takes its targets, up to one a fleet's agent
    ),
]


@dataclass
class Pruned:
    deleted: dict[str, int] = field(default_factory=dict)
    complete: bool = True  # False: the budget ran out; the next run goes on


def retention_prune(
    *,
    now: datetime | None = None,
    budget_seconds: float = BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Pruned:
    """Delete what every rule says is past its period, chunk by chunk."""
    now = now or timezone.now()
    deadline = clock() + budget_seconds
    pruned = Pruned()
    for rule in RULES:
        where = rule.past(now - rule.period())
        total = 0
        while True:
            if clock() >= deadline:
                pruned.complete = False
                break
            ids = list(
                rule.model._default_manager.filter(where)
                .order_by()
                .values_list("pk", flat=True)[: rule.chunk]
            )
            if not ids:
                break
            with transaction.atomic():
                rule.model._default_manager.filter(pk__in=ids).delete()
            total += len(ids)
        pruned.deleted[rule.name] = total
        if not pruned.complete:
            break
    return pruned

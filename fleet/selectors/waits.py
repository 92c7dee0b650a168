"""Queue waits, one definition for the minute snapshot and the Prometheus exporter: the
waits of jobs started since `since` (queued -> started) and of jobs still queued (queued ->
now), so a stalled queue shows long waits instead of no number at all; p50 and p95 cut the
same way on both databases (percentile_cont's linear interpolation)."""

import statistics
from collections import defaultdict
from collections.abc import Hashable, Iterable
from datetime import datetime
from typing import Any

from django.db import connection

from fleet.choices import JobStatus
from fleet.models import Job

_WAITS_POSTGRES = """
SELECT {keys},
       percentile_cont(0.5) WITHIN GROUP (ORDER BY wait),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY wait)
  FROM (SELECT {keys}, EXTRACT(EPOCH FROM started_at - queued_at) AS wait
          FROM fleet_job WHERE started_at >= %s{scope}
        UNION ALL
        SELECT {keys}, EXTRACT(EPOCH FROM %s - queued_at)
          FROM fleet_job WHERE status = %s{scope}) AS waits
 GROUP BY {keys}
"""


def wait_percentiles(
    since: datetime, now: datetime, *, customers: list[int] | None = None, by_role: bool = False
) -> dict[Any, tuple[float, float]]:
    """By customer id (or by (customer id, role) with `by_role`): (p50, p95) in seconds,
    for every customer or those listed. Groups without a wait are left out."""
    keys = ["customer_id", "role"] if by_role else ["customer_id"]
    if connection.vendor == "postgresql":
        scope = " AND customer_id = ANY(%s)" if customers is not None else ""
        sql = _WAITS_POSTGRES.format(keys=", ".join(keys), scope=scope)
        scoped = [customers] if customers is not None else []
        with connection.cursor() as cursor:
            cursor.execute(sql, [since, *scoped, now, JobStatus.QUEUED, *scoped])
            return {
                (row[0] if not by_role else (row[0], row[1])): (float(row[-2]), float(row[-1]))
                for row in cursor.fetchall()
            }
    # SQLite (the embedded default) has no percentile function: two queries, cut here.
    jobs = Job.objects.all() if customers is None else Job.objects.filter(customer_id__in=customers)
    waits: dict[Hashable, list[float]] = defaultdict(list)
    started = jobs.filter(started_at__gte=since).values_list(*keys, "queued_at", "started_at")
    for *key, queued_at, started_at in started:
        waits[_key(key)].append((started_at - queued_at).total_seconds())
    for *key, queued_at in jobs.filter(status=JobStatus.QUEUED).values_list(*keys, "queued_at"):
        waits[_key(key)].append((now - queued_at).total_seconds())
    return {key: _cut(values) for key, values in waits.items()}


def _key(parts: Iterable[Hashable]) -> Hashable:
    parts = tuple(parts)
    return parts[0] if len(parts) == 1 else parts


def _cut(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94]

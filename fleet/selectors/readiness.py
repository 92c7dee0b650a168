"""Whether this process can serve, and how fresh the background work is: what /ready
answers for a load balancer and a person."""

import time
from dataclasses import dataclass
from datetime import datetime

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from fleet.models import SweepState

STALE_SWEEP_TASK = "fleet.mark_stale_agents"  # its last run says beat and a worker are alive
PING_TIMEOUT = 0.5  # seconds a dependency may take to answer before it counts as down


@dataclass(frozen=True)
class Check:
    ok: bool | None  # None: not configured here
    detail: str
    ms: float | None = None


@dataclass(frozen=True)
class Readiness:
    ready: bool  # the database answers: requests can be served
    degraded: bool  # something optional (Redis, beat, the workers) is away or late
    checks: dict[str, Check]


def _database() -> Check:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return Check(False, f"unreachable: {type(exc).__name__}")
    return Check(True, connection.vendor, round((time.perf_counter() - started) * 1000, 1))


def _redis(url: str, what: str) -> Check:
    if not url.startswith(("redis://", "rediss://")):
        return Check(None, f"{what}: not Redis here")
    started = time.perf_counter()
    try:
        redis.Redis.from_url(
            url, socket_timeout=PING_TIMEOUT, socket_connect_timeout=PING_TIMEOUT
        ).ping()
    except redis.RedisError as exc:
        return Check(False, f"{what}: unreachable ({type(exc).__name__})")
    return Check(True, what, round((time.perf_counter() - started) * 1000, 1))


def _periodic(now: datetime) -> Check:
    """Beat schedules the stale sweep every STALE_SWEEP_SECONDS and a worker runs it: its
    last run says both are alive. Late past three periods is a problem."""
    try:
        last = (
            SweepState.objects.filter(name=SweepState.beat_name(STALE_SWEEP_TASK))
            .values_list("last_run_at", flat=True)
            .first()
        )
    except DatabaseError:
        return Check(None, "unknown: the database is unreachable")
    if last is None:
        return Check(False, "beat and the workers have never run the stale sweep")
    age = (now - last).total_seconds()
    late = age > 3 * settings.STALE_SWEEP_SECONDS
    return Check(not late, f"stale sweep last ran {age:.0f} s ago{' (late)' if late else ''}")


def readiness(*, now: datetime | None = None) -> Readiness:
    now = now or timezone.now()
    checks = {
        "database": _database(),
        "broker": _redis(settings.CELERY_BROKER_URL, "Celery broker"),
        "cache": _redis(settings.CACHE_URL, "throttle cache"),
        "presence_buffer": _redis(settings.PRESENCE_BUFFER_URL, "presence buffer"),
    }
    checks["beat_and_workers"] = _periodic(now) if checks["database"].ok else Check(None, "")
    ready = bool(checks["database"].ok)
    degraded = any(c.ok is False for name, c in checks.items() if name != "database")
    return Readiness(ready=ready, degraded=degraded, checks=checks)

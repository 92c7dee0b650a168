"""Agents' last-seen times, buffered in Redis and written to the database in bulk.

A steady heartbeat changes nothing but the time, load and clock offset. With
PRESENCE_BUFFER_URL set, each web process collects those in memory and a thread of its
own sends them to one Redis hash every PRESENCE_BATCH_SECONDS (one HSET for the lot);
`presence_flush` writes the hash to the database with one UPDATE per chunk, every
PRESENCE_FLUSH_SECONDS and before every stale sweep and snapshot, so they count from
exact times. Without a buffer, or while Redis is unreachable, heartbeats write the
database themselves (and a batch Redis refused goes to the database): slower, not lost.

Redis may lose what it holds (a restart without persistence). A flush that cannot reach
Redis, or finds its marker key gone, says so (`complete=False`), and the stale sweep then
waits one online window before marking anyone offline: by then every live agent has
beaten again, into the database or the buffer. It waits once per loss: while Redis stays
unreachable, heartbeats go to the database and silent agents go offline as usual.
"""

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Case, F, Q, Value, When

from fleet.models import Agent
from fleet.models.agents import SEAT_HOLDING
from fleet.services.activity import ActivityReport

logger = logging.getLogger(__name__)

PENDING = "agentina:presence:pending"
FLUSHING = "agentina:presence:flushing"  # what a flush is writing (kept if it fails)
MARKER = "agentina:presence:intact"  # gone: Redis lost the buffer
FLUSH_LOCK = "agentina:presence:flush-lock"
FLUSH_LOCK_SECONDS = 60  # a flush of 100,000 agents takes about 2 s
CHUNK = 5000
RETRY_AFTER = 5.0  # seconds heartbeats skip an unreachable Redis before trying again


@dataclass
class _Batch:
    """This process's heartbeats not yet in Redis, by agent id."""

    entries: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sender_pid: int | None = None  # the process whose thread sends (none after a fork)
    unreachable_until: float = 0.0


_batch = _Batch()


@dataclass(frozen=True)
class PresenceFlush:
    written: int  # agents whose last-seen moved forward
    complete: bool  # False: heartbeats may have been lost with Redis; hold off marking


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def _buffer() -> redis.Redis | None:
    url = settings.PRESENCE_BUFFER_URL
    return _client(url) if url else None


def presence_buffer(
    *,
    agent_id: int,
    at: datetime,
    load: float | None,
    offset: int | None,
    activity: ActivityReport | None = None,
) -> bool:
    """Take a steady heartbeat into the batch; False when there is no buffer or Redis was
    just found unreachable (the caller then writes the database). The activity it reports
    rides along (the detail last: it may hold spaces): the flush writes the newest."""
    if _buffer() is None or time.monotonic() < _batch.unreachable_until:
        return False
    value = f"{at.timestamp()} {'' if load is None else load} {'' if offset is None else offset}"
    if activity is not None:
        value += f" {activity.activity} {activity.provider} {activity.detail}"
    with _batch.lock:
        _batch.entries[str(agent_id)] = value
        if _batch.sender_pid != os.getpid():
            _batch.sender_pid = os.getpid()
            threading.Thread(target=_send_forever, name="presence-sender", daemon=True).start()
    return True


def presence_send() -> int:
    """Send this process's batch to Redis now; if Redis refuses it, write it to the
    database. Returns how many agents it carried."""
    with _batch.lock:
        entries, _batch.entries = _batch.entries, {}
    client = _buffer()
    if not entries or client is None:
        return len(entries)
    try:
        client.hset(PENDING, mapping=entries)  # type: ignore[arg-type]
    except redis.RedisError as exc:
        _batch.unreachable_until = time.monotonic() + RETRY_AFTER
        logger.warning("presence buffer unreachable, heartbeats write the database: %s", exc)
        rows = sorted(
            (_parse(agent_id, value) for agent_id, value in entries.items()),
            key=lambda row: row[0],
        )
        for start in range(0, len(rows), CHUNK):
            with transaction.atomic():
                _write(rows[start : start + CHUNK])
    return len(entries)


def presence_reset() -> None:
    """Drop the unsent batch and forget an outage (tests)."""
    with _batch.lock:
        _batch.entries = {}
    _batch.unreachable_until = 0.0


def _send_forever() -> None:
    while True:
        time.sleep(settings.PRESENCE_BATCH_SECONDS)
        try:
            presence_send()
        except Exception:  # the database is down too: the batch is lost; keep going
            logger.exception("presence batch lost")
        finally:
            close_old_connections()


atexit.register(presence_send)  # a worker that stops sends what it holds


def presence_flush(*, for_sweep: bool = False) -> PresenceFlush:
    """Write buffered heartbeats to the database. Flushes run one at a time (a lock in
    Redis): two at once could each see the other's rename, or delete a batch the other
    had just taken, and a sweep would then believe the buffer lost or miss heartbeats.

    Only the sweep's own flush (`for_sweep`) declares the buffer whole again after a loss:
    were any flush to, the one that noticed first (the flush task, a snapshot) would hide
    the loss from the sweep, which then grants no grace for the heartbeats it lost."""
    client = _buffer()
    if client is None:
        return PresenceFlush(0, complete=True)
    presence_send()  # this process's own batch first
    try:
        with client.lock(
            FLUSH_LOCK, timeout=FLUSH_LOCK_SECONDS, blocking_timeout=FLUSH_LOCK_SECONDS
        ):
            return _flush(client, for_sweep=for_sweep)
    except redis.exceptions.LockError as exc:
        logger.warning("presence flush: another flush held the lock too long: %s", exc)
        return PresenceFlush(0, complete=False)
    except redis.RedisError as exc:
        logger.warning("presence buffer unreachable, nothing flushed: %s", exc)
        return PresenceFlush(0, complete=False)


def _flush(client: redis.Redis, *, for_sweep: bool) -> PresenceFlush:
    try:
        intact = bool(client.exists(MARKER))
        if not client.exists(FLUSHING) and client.exists(PENDING):
            client.renamenx(PENDING, FLUSHING)
        entries = client.hgetall(FLUSHING)
    except redis.RedisError as exc:
        logger.warning("presence buffer unreachable, nothing flushed: %s", exc)
        return PresenceFlush(0, complete=False)
    rows = [_parse(agent_id, value) for agent_id, value in entries.items()]
    written = 0
    for start in range(0, len(rows), CHUNK):
        with transaction.atomic():
            written += _write(rows[start : start + CHUNK])
    try:
        client.delete(FLUSHING)
        if for_sweep:
            client.set(MARKER, "1")
    except redis.RedisError as exc:  # written already; the next flush rewrites harmlessly
        logger.warning("presence buffer unreachable after a flush: %s", exc)
        return PresenceFlush(written, complete=False)
    return PresenceFlush(written, complete=intact)


_Row = tuple[int, datetime, float | None, int | None, str | None, str, str]


def _parse(agent_id: bytes | str, value: bytes | str) -> _Row:
    text = value.decode() if isinstance(value, bytes) else value
    at, load, offset, *rest = text.split(" ", 5)
    activity, provider, detail = [*rest, "", "", ""][:3] if rest else (None, "", "")
    return (
        int(agent_id),
        datetime.fromtimestamp(float(at), tz=UTC),
        float(load) if load else None,
        int(offset) if offset else None,
        activity or None,
        provider,
        detail,
    )


# Only agents that still hold a seat: a decommissioned agent's last heartbeats, buffered
# before it was retired, leave its record as the decommission left it.
_UPDATE_PG = """
UPDATE fleet_agent AS a
   SET last_heartbeat_at = v.at, load = v.load, clock_offset_seconds = v.off,
       activity_since = CASE WHEN v.act IS NULL OR v.act = a.activity
                             THEN a.activity_since ELSE v.at END,
       activity = COALESCE(v.act, a.activity),
       activity_provider = CASE WHEN v.act IS NULL THEN a.activity_provider ELSE v.prov END,
       activity_detail = CASE WHEN v.act IS NULL THEN a.activity_detail ELSE v.det END
  FROM unnest(%s::bigint[], %s::timestamptz[], %s::float8[], %s::int[], %s::text[],
              %s::text[], %s::text[]) AS v(id, at, load, off, act, prov, det)
 WHERE a.id = v.id AND (a.last_heartbeat_at IS NULL OR a.last_heartbeat_at < v.at)
   AND a.status = ANY(%s::text[])
"""


def _write(rows: list[_Row]) -> int:
    """One statement for the chunk on PostgreSQL; a statement per agent elsewhere."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            columns = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(_UPDATE_PG, [*columns, sorted(s.value for s in SEAT_HOLDING)])
            return cursor.rowcount
    return sum(
        Agent.objects.holding_seat()
        .filter(Q(last_heartbeat_at__isnull=True) | Q(last_heartbeat_at__lt=at), pk=agent_id)
        .update(
            last_heartbeat_at=at,
            load=load,
            clock_offset_seconds=offset,
            **(activity_columns(ActivityReport(act, prov, det), at) if act else {}),
        )
        for agent_id, at, load, offset, act, prov, det in rows
    )


def activity_columns(report: ActivityReport, now: datetime) -> dict[str, Any]:
    """The columns an UPDATE writes for a reported activity: `activity_since` moves only
    when the activity itself changes (one statement: it is an expression)."""
    return {
        **report.as_fields(),
        "activity_since": Case(
            When(activity=report.activity, then=F("activity_since")), default=Value(now)
        ),
    }

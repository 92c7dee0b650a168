"""What the agent hot paths know, kept in each web process so a steady heartbeat reads
nothing from the database.

An agent is kept as `agent_for_secret` loaded it (with its license channel and job cap,
the latest releases and its rollout order), by secret digest. Whatever changes those
facts calls `agent_facts_changed` in its transaction: the change is forgotten here at
once and written as an AgentFactsChange row that every other process reads within
AGENT_CACHE_POLL_SECONDS, so a revoked agent is refused everywhere within that. An entry
older than AGENT_CACHE_MAX_AGE_SECONDS is re-read anyway. The same poll refreshes the
queued-job counts heartbeats report and the fleet size the heartbeat interval follows.

Each request gets its own copy of the cached agent, so nothing a request does to it
leaks into the next one.

A poll that fails (the database unreachable, read-only, …) is logged once per outage and
tried again POLL_RETRY_SECONDS later; a kept agent is served meanwhile, so a steady
heartbeat needs no database. But only for AGENT_CACHE_STALE_LIMIT_SECONDS since the last
poll that worked: after that a kept agent may have been revoked without this process
knowing, and authentication answers 503 `service_unavailable` (with Retry-After) until a
poll works again.
"""

import copy
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseFault
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from fleet.choices import JobStatus
from fleet.errors import ServiceUnavailable
from fleet.models import Agent, AgentFactsChange, Job
from fleet.secrets import SecretKind, secret_digest, secret_is_well_formed

# A change row is read again by every poll for this long, so a transaction that commits
# late (its row carries the time it was written, not committed) is still seen.
LOOKBACK = timedelta(seconds=60)
QUEUED_COUNT_EVERY = 5.0  # seconds between counts of queued jobs (a scan of the queue)
FLEET_SIZE_EVERY = 30.0  # seconds between counts of the whole fleet
POLL_RETRY_SECONDS = 1.0  # after a failed poll, at most this long before the next try
logger = logging.getLogger(__name__)
_AGENTS_CHANGED = (
    "INSERT INTO fleet_agentfactschange (changed_at, agent_id) "
    "SELECT %s, id FROM fleet_agent WHERE id IN ({ids})"
)


@dataclass
class _Entry:
    agent: Agent
    loaded_at: float  # time.monotonic()


@dataclass
class _State:
    by_digest: dict[str, _Entry] = field(default_factory=dict)
    digest_of: dict[int, str] = field(default_factory=dict)
    seen_changes: dict[int, float] = field(default_factory=dict)  # change id → seen at
    polled_at: float = float("-inf")  # the last poll that worked
    poll_failing_since: float | None = None  # the first failed poll of an ongoing outage
    poll_retry_at: float = float("-inf")
    # Queued jobs by (customer, role): (required labels, how many) for each label set.
    queued: dict[tuple[int, str], list[tuple[tuple[tuple[str, str], ...], int]]] = field(
        default_factory=dict
    )
    queued_counted_at: float = float("-inf")
    fleet_size: int = 0
    fleet_counted_at: float = float("-inf")


_state = _State()
_poll_lock = threading.Lock()


def agent_cache_reset() -> None:
    """Forget everything (tests, and a process that forks)."""
    global _state
    _state = _State()


def agent_cached_for_secret(secret: str) -> Agent | None:
    """The agent a secret belongs to: from memory when known and fresh, else from one
    SELECT (`agent_for_secret`). A decommissioned agent or an old secret gives None."""
    from fleet.selectors import agent_for_secret

    if not secret_is_well_formed(secret, SecretKind.AGENT_SECRET):
        return None
    _poll_if_due()
    digest = secret_digest(secret)
    entry = _state.by_digest.get(digest)
    now = time.monotonic()
    if entry is not None and now - entry.loaded_at <= settings.AGENT_CACHE_MAX_AGE_SECONDS:
        _refuse_if_too_stale(now)
        return copy.copy(entry.agent)
    polled_at = _state.polled_at
    agent = agent_for_secret(secret)
    if agent is None:
        _forget_digest(digest)
    elif _state.polled_at == polled_at:
        # (Kept only if no poll ran meanwhile: it may have forgotten a change this
        # read came too early to see.)
        _remember(digest, copy.copy(agent), now)
    return agent


def agent_cache_warm() -> int:
    """Load every agent that may authenticate, in one query, so a process that has just
    started (after a deploy, say) does not meet the whole fleet with a SELECT each."""
    from fleet.selectors import agent_with_facts, agents_with_facts

    now = time.monotonic()
    _poll_if_due()
    loaded = 0
    for agent in agents_with_facts().order_by().iterator(chunk_size=5000):
        _remember(agent.secret_digest, agent_with_facts(agent), now)
        loaded += 1
    return loaded


def agent_facts_changed(
    *, agent_ids: Iterable[int] = (), customer_id: int | None = None, everyone: bool = False
) -> None:
    """Call inside the transaction that changes an agent's status or secret, a customer's
    license or rollouts, or the releases (`everyone`): every process re-reads what it
    kept about them."""
    now = timezone.now()
    ids = list(agent_ids)
    if ids:  # one statement however many (a mass offline passes thousands)
        at = AgentFactsChange._meta.get_field("changed_at").get_db_prep_value(now, connection)
        with connection.cursor() as cursor:
            cursor.execute(_AGENTS_CHANGED.format(ids=", ".join(["%s"] * len(ids))), [at, *ids])
    if customer_id is not None or everyone:
        AgentFactsChange.objects.create(changed_at=now, customer_id=customer_id)
    # Forgotten here at once (a rollback only costs a re-read); other processes (and this
    # one again, harmlessly) forget it when their poll reads the committed rows.
    _forget(ids, customer_id, everyone)


def jobs_pending(customer_id: int, role: str, labels: dict[str, str] | None = None) -> int:
    """Queued jobs an agent of this customer and role, with these labels, could claim (the
    jobs whose required labels it has), as of at most 5 s ago."""
    _poll_if_due()
    have = labels or {}
    return sum(
        n
        for required, n in _state.queued.get((customer_id, role), ())
        if all(have.get(key) == value for key, value in required)
    )


def fleet_size() -> int:
    """Agents holding a seat across every customer, counted at most every 30 s."""
    _poll_if_due()
    return _state.fleet_size


def _remember(digest: str, agent: Agent, now: float) -> None:
    if len(_state.by_digest) >= settings.AGENT_CACHE_MAX_ENTRIES:
        # Dicts keep insertion order: drop the oldest tenth rather than grow without end.
        for old in list(_state.by_digest)[: max(1, len(_state.by_digest) // 10)]:
            _forget_digest(old)
    previous = _state.digest_of.get(agent.pk)
    if previous is not None and previous != digest:
        _forget_digest(previous)
    _state.by_digest[digest] = _Entry(agent, now)
    _state.digest_of[agent.pk] = digest


def _forget_digest(digest: str) -> None:
    entry = _state.by_digest.pop(digest, None)
    if entry is not None and _state.digest_of.get(entry.agent.pk) == digest:
        del _state.digest_of[entry.agent.pk]


def _forget(agent_ids: Iterable[int], customer_id: int | None, everyone: bool) -> None:
    for pk in agent_ids:
        digest = _state.digest_of.get(pk)
        if digest is not None:
            _forget_digest(digest)
    if everyone:
        _state.by_digest.clear()
        _state.digest_of.clear()
    elif customer_id is not None:
        for digest, entry in list(_state.by_digest.items()):
            if entry.agent.customer_id == customer_id:
                _forget_digest(digest)


def _refuse_if_too_stale(now: float) -> None:
    """A kept agent is served while polls fail, but not for longer than
    AGENT_CACHE_STALE_LIMIT_SECONDS after the last poll that worked: it may have been
    revoked since, so the caller is told to come back (503) instead."""
    state = _state
    if state.poll_failing_since is None:
        return
    stale_for = now - state.polled_at
    if stale_for <= settings.AGENT_CACHE_STALE_LIMIT_SECONDS:
        return
    raise ServiceUnavailable(
        "The Control Plane cannot check for revoked agents right now (its database is "
        "unreachable); nothing was done. Retry.",
        retry_after=max(1, math.ceil(max(POLL_RETRY_SECONDS, settings.AGENT_CACHE_POLL_SECONDS))),
    )


def _poll_if_due() -> None:
    now = time.monotonic()
    if now - _state.polled_at < settings.AGENT_CACHE_POLL_SECONDS or now < _state.poll_retry_at:
        return
    if not _poll_lock.acquire(blocking=False):
        return  # another thread of this process is polling
    try:
        _poll(now)
    except DatabaseFault as exc:
        # Never fatal here: what is kept is served (within the stale limit) and the poll
        # is tried again shortly. Logged once an outage, not once a request.
        state = _state
        state.poll_retry_at = now + min(POLL_RETRY_SECONDS, settings.AGENT_CACHE_POLL_SECONDS)
        if state.poll_failing_since is None:
            state.poll_failing_since = now
            logger.warning(
                "agent cache: polling for changes failed (%s: %s); serving kept agents for "
                "up to %ss after the last poll, retrying",
                type(exc).__name__,
                exc,
                settings.AGENT_CACHE_STALE_LIMIT_SECONDS,
            )
    else:
        state = _state
        if state.poll_failing_since is not None:
            logger.warning(
                "agent cache: polling works again after %.1fs", now - state.poll_failing_since
            )
            state.poll_failing_since = None
    finally:
        _poll_lock.release()


def _queued_counts(jobs: Any, extra: list[str]) -> dict[tuple[int, str], Any]:
    """{(customer, role): n}, or with `extra` ["required_labels"], {(customer, role):
    [(label set, n), ...]}."""
    rows = (
        jobs.values("customer_id", "role", *extra)
        .annotate(n=Count("pk"))
        .values_list("customer_id", "role", *extra, "n")
        .order_by()
    )
    if not extra:
        return {(customer_id, role): n for customer_id, role, n in rows}
    counts: dict[tuple[int, str], Any] = {}
    for customer_id, role, required, n in rows:
        labels = tuple(sorted((required or {}).items()))
        counts.setdefault((customer_id, role), []).append((labels, n))
    return counts


def _poll(now: float) -> None:
    """One statement every AGENT_CACHE_POLL_SECONDS (forget what changed), one more every
    5 s (the queued-job counts) and every 30 s (the fleet's size)."""
    state = _state
    missed = now - state.polled_at > LOOKBACK.total_seconds() / 2
    changes = AgentFactsChange.objects.filter(changed_at__gt=timezone.now() - LOOKBACK).values_list(
        "pk", "agent_id", "customer_id"
    )
    for pk, agent_id, customer_id in changes:
        if pk in state.seen_changes:
            continue
        state.seen_changes[pk] = now
        _forget([agent_id] if agent_id else [], customer_id, not agent_id and not customer_id)
    horizon = now - 2 * LOOKBACK.total_seconds()
    state.seen_changes = {pk: at for pk, at in state.seen_changes.items() if at > horizon}
    if now - state.queued_counted_at >= QUEUED_COUNT_EVERY:
        # All queued jobs by (customer, role) from the claim's own index (no table read),
        # then the few that require labels, by label set, from their small index: what
        # is left of a role's count requires nothing.
        queued: dict[tuple[int, str], list[tuple[tuple[tuple[str, str], ...], int]]] = {}
        totals = _queued_counts(Job.objects.filter(status=JobStatus.QUEUED), [])
        labelled = _queued_counts(
            Job.objects.filter(status=JobStatus.QUEUED).exclude(required_labels={}),
            ["required_labels"],
        )
        for (customer_id, role), n in totals.items():
            sets = labelled.get((customer_id, role), [])
            plain = n - sum(count for _, count in sets)
            queued[(customer_id, role)] = [((), plain), *sets] if plain > 0 else sets
        state.queued = queued
        state.queued_counted_at = now
    if now - state.fleet_counted_at >= FLEET_SIZE_EVERY:
        state.fleet_size = Agent.objects.holding_seat().count()
        state.fleet_counted_at = now
    if missed:
        # No poll for so long (the database was away, or no agent request came) that a
        # change may have left the look-back window unseen: nothing kept is trusted (each
        # agent is read again once).
        _forget((), None, True)
    state.polled_at = now

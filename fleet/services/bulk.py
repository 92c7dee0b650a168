"""Actions on every agent matching the Agents page's filters, at fleet scale: the matching
agents are listed when the action is asked for, then a Celery task works through them in
chunks, each one transaction that moves its agents set-based (one conditional UPDATE, as
every status change is) and records how far it got. A worker killed mid-run loses at most
its chunk's transaction; beat's sweep hands a stalled action to a worker again and it goes
on from there. One audit row per action, with the count, when it completes."""

import json
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from fleet import policy
from fleet.agent_cache import agent_facts_changed
from fleet.choices import AgentStatus, AuditAction, BulkActionKind, BulkActionState, JobStatus
from fleet.errors import AgentStateConflict
from fleet.labels import labels_check
from fleet.models import Agent, BulkAction, Customer, Job, RolloutTarget
from fleet.models.agents import DECOMMISSION, PAUSE, RESUME
from fleet.selectors import agent_search
from fleet.services.anomalies import anomalies_resolve
from fleet.services.audit import Actor, audit_record
from fleet.services.jobs import jobs_requeue
from fleet.services.rollouts.reports import rollout_targets_exclude

CHUNK = 500  # agents one transaction moves
_PROGRESS = ["processed", "changed", "progressed_at", "state", "finished_at"]
STALLED_AFTER = timedelta(minutes=2)  # a running action this quiet is handed out again


@transaction.atomic
def bulk_action_start(
    *,
    customer: Customer,
    kind: str,
    filters: dict[str, str],
    params: dict[str, Any],
    actor: Actor,
) -> BulkAction:
    """List the agents `filters` match now (every page of them) and queue the action."""
    kind = BulkActionKind(kind)
    if kind == BulkActionKind.PAUSE:
        reason = str(params.get("reason", "")).replace("\x00", "").strip()
        if not reason:
            raise AgentStateConflict("Say why the agents are paused: the reason is audited.")
        params = {"reason": reason[: policy.AGENT_PAUSE_REASON_MAX]}
    elif kind == BulkActionKind.LABEL:
        labels = labels_check(params.get("labels") or {})
        if not labels:
            raise AgentStateConflict("Name the labels to add, e.g. pool=ci.")
        params = {"labels": labels}
    else:
        params = {}
    action = BulkAction.objects.create(
        customer=customer,
        kind=kind,
        filters={k: v for k, v in filters.items() if v and k != "sort"},
        params=params,
        created_by=actor.user,
        actor_label=actor.label,
    )
    action.total = _list_agents(action, agent_search(customer, filters))
    from fleet.tasks import run_bulk_action  # (tasks import the services)

    transaction.on_commit(lambda: run_bulk_action.delay(action.pk))
    return action


def bulk_action_step(action_id: int, *, chunk: int = CHUNK) -> bool:
    """Apply the action to its next chunk of agents and record the progress, in one
    transaction (the action's row locked, so two workers never take the same chunk).
    True when the action is done. The same few statements however big the chunk or the
    action: the chunk's ids are sliced out of the stored list by PostgreSQL (the list is
    never read whole nor written back), and each move is one set-based UPDATE."""
    with transaction.atomic():
        action = (
            BulkAction.objects.select_for_update().defer("agent_ids").filter(pk=action_id).first()
        )
        if action is None or action.state == BulkActionState.DONE:
            return True
        now = timezone.now()
        ids = _chunk_ids(action, chunk) if action.processed < action.total else []
        agents = Agent.objects.filter(customer_id=action.customer_id, pk__in=ids)
        action.changed += _apply(action, agents, ids, now) if ids else 0
        action.processed += len(ids)
        action.progressed_at = now
        action.state = BulkActionState.RUNNING
        if action.processed >= action.total or not ids:
            action.state, action.finished_at = BulkActionState.DONE, now
            audit_record(
                actor=Actor(user=action.created_by, label=action.actor_label),
                action=AuditAction.AGENTS_BULK,
                target=action,
                customer=action.customer_id,
                changes={
                    "action": [None, action.kind],
                    "agents": [None, action.changed],
                    "matched": [None, action.total],
                    "filters": [None, _filters_text(action.filters) or "all agents"],
                },
            )
        action.save(update_fields=_PROGRESS)
        return action.state == BulkActionState.DONE


def bulk_action_run(action_id: int) -> BulkAction:
    """Every remaining chunk (what the task runs)."""
    while not bulk_action_step(action_id):
        pass
    return BulkAction.objects.get(pk=action_id)


def bulk_actions_stalled(*, now: datetime | None = None) -> list[int]:
    """Actions not done whose last progress (or start) is STALLED_AFTER old: their worker
    stopped, or their message was lost. Beat queues them again."""
    cutoff = (now or timezone.now()) - STALLED_AFTER
    return list(
        BulkAction.objects.exclude(state=BulkActionState.DONE)
        .filter(Q(progressed_at__lt=cutoff) | Q(progressed_at__isnull=True, created_at__lt=cutoff))
        .values_list("pk", flat=True)
    )


def _filters_text(filters: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(filters.items()))


def _apply(action: BulkAction, agents: Any, ids: list[int], now: datetime) -> int:
    kind = action.kind
    if kind == BulkActionKind.LABEL:
        return _add_labels(action, ids)
    if kind == BulkActionKind.PAUSE:
        moved = agents.transition(PAUSE, paused_reason=action.params["reason"], paused_until=None)
    elif kind == BulkActionKind.RESUME:
        moved = agents.transition(RESUME, paused_reason="", paused_until=None)
    else:
        moved = agents.transition(DECOMMISSION, decommissioned_at=now)
        retired = list(
            Agent.objects.filter(pk__in=ids, status=AgentStatus.DECOMMISSIONED).values_list(
                "pk", flat=True
            )
        )
        jobs_requeue(Job.objects.filter(agent_id__in=retired, status=JobStatus.RUNNING), now=now)
        rollout_targets_exclude(
            RolloutTarget.objects.filter(agent_id__in=retired),
            detail="The agent was decommissioned.",
        )
        anomalies_resolve(
            where=Q(agent_id__in=retired),
            note="The agent was decommissioned.",
            now=now,
            actor=Actor(user=action.created_by, label=action.actor_label),
        )
    agent_facts_changed(agent_ids=ids)
    return moved


_LIST_AGENTS = """
UPDATE fleet_bulkaction SET agent_ids = m.ids, total = m.n
  FROM (SELECT coalesce(jsonb_agg(s.id ORDER BY s.id), '[]'::jsonb) AS ids, count(*) AS n
          FROM ({matching}) s(id)) m
 WHERE fleet_bulkaction.id = %s
RETURNING fleet_bulkaction.total
"""


def _list_agents(action: BulkAction, matching: Any) -> int:
    """Store the matching agents' ids, in id order, on the action: listed and written by
    PostgreSQL in one statement (100,000 ids never travel to Python and back)."""
    if connection.vendor != "postgresql":  # the embedded default: through Python
        ids = list(matching.order_by("pk").values_list("pk", flat=True))
        BulkAction.objects.filter(pk=action.pk).update(agent_ids=ids, total=len(ids))
        return len(ids)
    try:
        sql, params = matching.order_by().values_list("pk", flat=True).query.sql_with_params()
    except EmptyResultSet:  # a filter nothing can match (a version that is not one)
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_LIST_AGENTS.format(matching=sql), [*params, action.pk])
        (total,) = cursor.fetchone()
    return int(total)


def _chunk_ids(action: BulkAction, chunk: int) -> list[int]:
    """The ids at positions processed .. processed + chunk - 1 of the action's list, sliced
    by PostgreSQL (one JSONPath call: the stored list is read once, on the server)."""
    if connection.vendor != "postgresql":  # the embedded default: the list, sliced here
        stored = BulkAction.objects.values_list("agent_ids", flat=True).get(pk=action.pk)
        return [int(pk) for pk in stored[action.processed : action.processed + chunk]]
    last = action.processed + chunk - 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT jsonb_path_query_array(agent_ids, %s::jsonpath) "
            "FROM fleet_bulkaction WHERE id = %s",
            [f"$[{action.processed} to {last}]", action.pk],
        )
        (found,) = cursor.fetchone()
    return [int(pk) for pk in (json.loads(found) if isinstance(found, str) else found)]


_ADD_LABELS = """
UPDATE fleet_agent SET labels = labels || %(labels)s::jsonb
 WHERE customer_id = %(customer)s AND id = ANY(%(ids)s) AND status <> %(gone)s
   AND NOT labels @> %(labels)s::jsonb
   AND (SELECT count(*) FROM jsonb_object_keys(labels || %(labels)s::jsonb)) <= %(most)s
RETURNING id
"""


def _add_labels(action: BulkAction, ids: list[int]) -> int:
    """Each agent's labels with these added (a key it has takes the new value), as one
    UPDATE: the agents that already have them, or would pass LABELS_MAX, are left alone."""
    if connection.vendor != "postgresql":  # the embedded default: row by row
        return _add_labels_each(action, ids)
    with connection.cursor() as cursor:
        cursor.execute(
            _ADD_LABELS,
            {
                "labels": json.dumps(action.params["labels"]),
                "customer": action.customer_id,
                "ids": ids,
                "gone": AgentStatus.DECOMMISSIONED,
                "most": policy.LABELS_MAX,
            },
        )
        changed = [pk for (pk,) in cursor.fetchall()]
    agent_facts_changed(agent_ids=changed)
    return len(changed)


def _add_labels_each(action: BulkAction, ids: list[int]) -> int:
    """_add_labels where there is no jsonb (SQLite): the same rule, read and written here."""
    labels = action.params["labels"]
    rows = Agent.objects.filter(customer_id=action.customer_id, pk__in=ids).exclude(
        status=AgentStatus.DECOMMISSIONED
    )
    changed = []
    for agent in rows.only("pk", "labels"):
        merged = {**agent.labels, **labels}
        if len(merged) <= policy.LABELS_MAX and merged != agent.labels:
            agent.labels = dict(sorted(merged.items()))
            changed.append(agent)
    Agent.objects.bulk_update(changed, ["labels"])
    agent_facts_changed(agent_ids=[a.pk for a in changed])
    return len(changed)

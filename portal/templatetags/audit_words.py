"""Audit events in words: "ann revoked token agtn_act_ab12…", "coder-3 finished job #42",
and each change as "role: coder → reviewer" (empty ones left out). The raw row keeps
what the services wrote; this is the one place that says it for people."""

from collections.abc import Callable
from typing import Any, NamedTuple

from django import template
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from fleet.choices import AnomalyKind, AuditAction
from fleet.models import AuditEvent
from fleet.selectors import ActorKind, actor_kind
from portal.templatetags.timestamps import utc_text

register = template.Library()

A = AuditAction


class Wording(NamedTuple):
    """A sentence about {who} acted on {target}, and the changes it already says (so the
    details leave them out)."""

    sentence: str
    says: frozenset[str] = frozenset()


STATUS = frozenset({"status"})

WORDINGS: dict[str, Wording] = {
    A.AGENT_ACTIVATE: Wording("{target} activated"),
    A.AGENT_REACTIVATE: Wording(
        "{target} recovered its lost activation", frozenset({"secret_prefix"})
    ),
    A.AGENT_ROTATE_SECRET: Wording("{target} rotated its secret"),
    A.AGENT_HEARTBEAT_STATE: Wording("{target} reported a new state"),
    A.AGENT_OFFLINE: Wording("{target} went silent and was marked offline", STATUS),
    A.AGENT_DECOMMISSION: Wording("{who} decommissioned {target}", STATUS),
    A.AGENT_PAUSE: Wording("{who} paused {target}", STATUS),
    A.AGENT_DRAIN: Wording("{who} set {target} to drain, then pause", STATUS),
    A.AGENT_DRAINED: Wording("{target} finished its last running job and is paused", STATUS),
    A.AGENT_RESUME: Wording("{who} resumed {target}", STATUS),
    A.AGENT_LABELS: Wording("{who} changed the labels of {target}"),
    A.AGENTS_BULK: Wording("{who} ran one action on many agents: {target}"),
    A.AGENT_CLEAN_UP: Wording("{target} was cleaned up after days without a heartbeat", STATUS),
    A.AGENT_RESTORE: Wording("{who} restored {target} after its cleanup", STATUS),
    A.AGENT_UPGRADE_SUCCEEDED: Wording("{target} upgraded"),
    A.AGENT_UPGRADE_SMOKE_CHECK_FAILED: Wording(
        "{target} rolled its upgrade back: the smoke check failed"
    ),
    A.AGENT_UPGRADE_START_FAILED: Wording(
        "{target} rolled its upgrade back: the new version did not start"
    ),
    A.AGENT_UPGRADE_VERIFY_FAILED: Wording(
        "{target} refused a release: its checksum or signature did not verify"
    ),
    A.AGENT_UPDATE_PIN: Wording("{who} changed the update pin of {target}"),
    A.TOKEN_MINT: Wording("{who} minted {target}"),
    A.TOKEN_REVOKE: Wording("{who} revoked {target}", STATUS),
    A.TOKEN_EXPIRE: Wording("{target} expired unused", STATUS),
    A.TOKEN_REDEMPTION_REFUSED: Wording(
        "{who} presented {target} again and was refused: tokens are single-use",
        frozenset({"hostname"}),
    ),
    A.API_KEY_MINT: Wording("{who} minted {target}", frozenset({"name"})),
    A.API_KEY_REVOKE: Wording("{who} revoked {target}"),
    A.JOB_SUBMIT: Wording("{who} submitted {target}"),
    A.JOB_CLAIM: Wording("{who} claimed {target}", STATUS),
    A.JOB_SUCCEEDED: Wording("{who} finished {target}", STATUS),
    A.JOB_FAILED: Wording("{target} failed on {who}", STATUS),
    A.JOB_REQUEUED: Wording("{target} failed on {who} and went back to the queue", STATUS),
    A.JOB_CANCEL: Wording("{who} cancelled {target}", STATUS),
    A.JOB_CANCEL_REQUEST: Wording("{who} told {target} to stop", frozenset({"stop_requested"})),
    A.JOB_TIMED_OUT: Wording(
        "{target} ran past its max runtime and was told to stop", frozenset({"stop_requested"})
    ),
    A.JOB_STOPPED: Wording("{target} was stopped", STATUS),
    A.JOB_LEASE_EXPIRED: Wording(
        "{target}'s agent did not report back in time: the job went back to the queue, "
        "or failed after its last attempt",
        STATUS,
    ),
    A.JOB_OUTCOME: Wording("{who} reported a verdict on {target}"),
    A.GITHUB_SECRET_ROTATE: Wording(
        "{who} minted the webhook secret of the {target}", frozenset({"secret_prefix"})
    ),
    A.QUESTION_ASK: Wording("{who} asked a person: {target}", frozenset({"job", "text"})),
    A.QUESTION_ANSWER: Wording("{who} answered {target}"),
    A.QUESTION_ACK: Wording("{who} received the answer to {target}"),
    A.BUDGET_UPDATE: Wording("{who} changed the budget caps of {target}"),
    A.ANOMALY_OPEN: Wording("{who} opened a finding: {target}"),
    A.ANOMALY_RESOLVE: Wording("{who} resolved the finding: {target}"),
    A.ANOMALY_REOPEN: Wording("{who} reopened the finding: {target}"),
    A.CUSTOMER_CREATE: Wording("{who} created the customer {target}"),
    A.CUSTOMER_UPDATE: Wording("{who} updated the customer {target}"),
    A.MEMBERSHIP_CREATE: Wording("{who} added {target} as a member"),
    A.MEMBERSHIP_UPDATE: Wording("{who} changed the role of {target}"),
    A.MEMBERSHIP_REMOVE: Wording("{who} removed {target} from the members", frozenset({"user"})),
    A.MEMBERSHIP_INVITE: Wording("{who} invited {target}", frozenset({"email"})),
    A.MEMBERSHIP_INVITE_WITHDRAW: Wording(
        "{who} withdrew the invitation of {target}", frozenset({"email"})
    ),
    A.MEMBERSHIP_INVITE_ACCEPT: Wording("{who} accepted the invitation of {target}"),
    A.USER_TWO_FACTOR_ENABLE: Wording("{who} turned on two-factor sign-in"),
    A.USER_TWO_FACTOR_DISABLE: Wording("{who} turned off two-factor sign-in"),
    A.USER_RECOVERY_CODES: Wording("{who} replaced their recovery codes"),
    A.USER_RECOVERY_CODE_USED: Wording("{who} signed in with a recovery code"),
    A.USER_PASSWORD_RESET: Wording("{who} reset their password by email"),
    A.LICENSE_CREATE: Wording("{who} created {target}"),
    A.LICENSE_UPDATE: Wording("{who} updated {target}"),
    A.LICENSE_SUSPEND: Wording("{who} suspended {target}", frozenset({"suspended"})),
    A.LICENSE_RESUME: Wording("{who} resumed {target}", frozenset({"suspended"})),
    A.RELEASE_PUBLISH: Wording("{who} published {target}", frozenset({"version"})),
    A.RELEASE_UPDATE: Wording("{who} updated {target}"),
    A.RELEASE_YANK: Wording("{who} yanked {target}", frozenset({"yanked"})),
    A.ROLLOUT_START: Wording("{who} started {target}", frozenset({"release"})),
    A.ROLLOUT_BATCH: Wording("{target} moved on to its next batch"),
    A.ROLLOUT_PAUSE: Wording("{who} paused {target}"),
    A.ROLLOUT_RESUME: Wording("{who} resumed {target}"),
    A.ROLLOUT_FLOOR: Wording("{who} changed the online-ratio floor of {target}"),
    A.ROLLOUT_ABORT: Wording("{who} aborted {target}"),
    A.ROLLOUT_SKIP_SOAK: Wording("{who} skipped the rest of the soak of {target}"),
    A.ROLLOUT_RETRY_FAILED: Wording("{who} retried the failed agents of {target}"),
    A.ROLLOUT_COMPLETE: Wording("{target} completed"),
    A.ALERT_CHANNEL_CREATE: Wording("{who} added the alert channel {target}"),
    A.ALERT_CHANNEL_DELETE: Wording("{who} removed the alert channel {target}"),
    A.ALERT_CHANNEL_TEST: Wording("{who} sent a test alert to {target}"),
    A.ALERT_CHANNEL_DISABLE: Wording("{target} was disabled after 24 hours of failed deliveries"),
    A.ALERT_CHANNEL_ENABLE: Wording("{who} enabled the alert channel {target} again"),
    A.ALERT_REDELIVER: Wording("{who} sent {target} again by hand"),
}


# --- who -------------------------------------------------------------------------------


def actor_name(event: AuditEvent) -> str:
    """The actor as people call it: the username, the agent's name, "host build-9" (a
    machine presenting a token), "API key “ci”", or "Agentina" for the Control Plane."""
    kind, label = actor_kind(event), event.actor_label
    prefix, _, name = label.partition(":")
    if kind == ActorKind.AGENT:
        return name if prefix == "agent" else f"host {name}"
    if kind == ActorKind.API_KEY:
        return f"API key “{name}”"
    if kind == ActorKind.SYSTEM and label == "system":
        return "Agentina"
    return label


# --- what ------------------------------------------------------------------------------
# Each target type named from what the row kept (its repr is as the object read then,
# see each model's __str__), with the page that shows it where there is one.


def _url(name: str, target_id: str) -> str | None:
    return reverse(name, args=[int(target_id)]) if target_id.isdigit() else None


def _finding(event: AuditEvent) -> tuple[str, str | None]:
    message = getattr(event, "anomaly_message", None)
    if message:
        return Truncator(" ".join(message.split())).chars(120), reverse("portal:anomalies")
    kind = event.target_repr.partition(":")[0]  # fingerprints start with their kind
    return (AnomalyKind(kind).label if kind in AnomalyKind.values else "a finding"), None


def _rollout(event: AuditEvent) -> tuple[str, str | None]:
    version = event.target_repr.partition("→ ")[2].partition(" (")[0]
    name = f"the upgrade wave to {version}" if version else f"upgrade wave {event.target_id}"
    return name, _url("portal:upgrade_detail", event.target_id)


TARGETS: dict[str, Callable[[AuditEvent], tuple[str, str | None]]] = {
    "fleet.job": lambda e: (f"job #{e.target_id}", _url("portal:job_detail", e.target_id)),
    "fleet.agent": lambda e: (e.target_repr, _url("portal:agent_detail", e.target_id)),
    "fleet.activationtoken": lambda e: (f"token {e.target_repr.partition('…')[0]}…", None),
    "fleet.customerapikey": lambda e: (
        f"API key “{e.target_repr.rpartition(' (')[0] or e.target_repr}”",
        None,
    ),
    "fleet.anomaly": _finding,
    "fleet.rollout": _rollout,
    "fleet.release": lambda e: (f"release {e.target_repr.partition(' (')[0]}", None),
    "fleet.license": lambda e: ("the license", None),
    "fleet.membership": lambda e: (e.target_repr.partition(" @ ")[0], None),
    "fleet.invitation": lambda e: (e.target_repr, None),
    "fleet.customer": lambda e: (e.target_repr, None),
    "fleet.bulkaction": lambda e: (e.target_repr, _url("portal:bulk_detail", e.target_id)),
}


def target_name(event: AuditEvent) -> tuple[str, str | None]:
    """What the event acted on, in words, and the portal page that shows it (or None)."""
    name = TARGETS.get(event.target_type)
    return name(event) if name else (event.target_repr, None)


@register.simple_tag
def audit_sentence(event: AuditEvent) -> SafeString:
    """The event as a sentence, its target a link where the portal shows it."""
    text, url = target_name(event)
    target = format_html('<a href="{}">{}</a>', url, text) if url else text
    wording = WORDINGS.get(event.action)
    if wording is None:
        return format_html("{}: {} ({})", actor_name(event), event.get_action_display(), target)
    return format_html(wording.sentence, who=actor_name(event), target=target)


# --- how -------------------------------------------------------------------------------


def _value(value: Any) -> str:
    """A recorded value in words: yes/no, lists and gate numbers spelled out, a moment
    in UTC; None and "" as nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(filter(None, (_value(v) for v in value)))
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_value(v)}" for k, v in value.items())
    text = str(value)
    moment = parse_datetime(text) if "T" in text else None
    return utc_text(moment) if moment and moment.tzinfo else text


@register.simple_tag
def audit_changes(event: AuditEvent) -> list[str]:
    """Each change the sentence does not say: "role: coder → reviewer", "priority: 5",
    "token: was agtn_act_ab12"; a change with nothing on either side is left out. By
    name, so every database lists them alike (PostgreSQL's jsonb reorders keys)."""
    wording = WORDINGS.get(event.action, Wording(""))
    changes = event.changes if isinstance(event.changes, dict) else {}
    lines = []
    for key, change in sorted(changes.items()):
        if key in wording.says:
            continue
        old, new = change if isinstance(change, list) and len(change) == 2 else (None, change)
        old, new = _value(old), _value(new)
        label = key.replace("_", " ")
        if old and new:
            lines.append(f"{label}: {old} → {new}")
        elif new:
            lines.append(f"{label}: {new}")
        elif old:
            lines.append(f"{label}: was {old}")
    return [Truncator(line).chars(200) for line in lines]

"""Hosts and agents, and the agents' lifecycle: the one table of how an agent's status
may change, used by every write that changes it."""

from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from fleet.choices import PROVIDER_TROUBLE, AgentActivity, AgentRole, AgentStatus, Channel
from fleet.models.lifecycle import StatusQuerySet, Transition
from fleet.models.tenancy import Customer
from fleet.models.tokens import ActivationToken
from fleet.versions import SemVerField

if TYPE_CHECKING:
    from fleet.selectors.agents import AgentFacts


class Host(models.Model):
    """A customer machine; several agents may share it."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="hosts")
    machine_id = models.CharField(max_length=128)
    hostname = models.CharField(max_length=255)
    zone = models.CharField(max_length=64, blank=True, help_text="Availability zone or region.")
    memory_mb = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "machine_id"], name="host_unique_machine_per_customer"
            ),
        ]
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname


# --- the lifecycle ----------------------------------------------------------------------


ONLINE, OFFLINE = AgentStatus.ONLINE, AgentStatus.OFFLINE
UPGRADING, DECOMMISSIONED = AgentStatus.UPGRADING, AgentStatus.DECOMMISSIONED
PAUSED, DRAINING = AgentStatus.PAUSED, AgentStatus.DRAINING
CLEANED_UP = AgentStatus.CLEANED_UP

COME_BACK = Transition("come_back", frozenset({OFFLINE}), ONLINE, "the agent's heartbeat")
START_UPGRADE = Transition(
    "start_upgrade",
    frozenset({ONLINE, OFFLINE}),
    UPGRADING,
    "a heartbeat answered with a rollout's order (the agent drains)",
)
FINISH_UPGRADE = Transition(
    "finish_upgrade",
    frozenset({ONLINE, OFFLINE, UPGRADING}),
    ONLINE,
    "the agent's upgrade report (succeeded or rolled back)",
)
GO_SILENT = Transition(
    "go_silent",
    frozenset({ONLINE, UPGRADING}),
    OFFLINE,
    "beat's stale sweep: no heartbeat for AGENT_ONLINE_WINDOW_SECONDS",
)
PAUSE = Transition(
    "pause",
    frozenset({ONLINE, OFFLINE, DRAINING}),
    PAUSED,
    "an owner or admin (portal, customer API), staff in the admin: with a reason",
)
DRAIN = Transition(
    "drain",
    frozenset({ONLINE, OFFLINE}),
    DRAINING,
    "an owner or admin (portal, customer API), staff in the admin, when the agent runs jobs",
)
DRAINED = Transition(
    "drained",
    frozenset({DRAINING}),
    PAUSED,
    "its last running job finishing (its report, or beat's sweep)",
)
RESUME = Transition(
    "resume",
    frozenset({PAUSED, DRAINING}),
    ONLINE,
    "an owner or admin (portal, customer API), staff in the admin; beat when the pause's "
    "timeout passes",
)
CLEAN_UP = Transition(
    "clean_up",
    frozenset({OFFLINE, PAUSED, DRAINING}),
    CLEANED_UP,
    "beat's stale cleanup (opted in per customer): not heard from for the customer's days",
)
RESTORE = Transition(
    "restore",
    frozenset({CLEANED_UP}),
    OFFLINE,
    "an owner or admin undoing a cleanup within 7 days, while a seat is free",
)
DECOMMISSION = Transition(
    "decommission",
    frozenset({ONLINE, OFFLINE, UPGRADING, PAUSED, DRAINING, CLEANED_UP}),
    DECOMMISSIONED,
    "an owner or admin in the portal, staff in the admin; an ephemeral agent's end; beat, "
    "7 days after a cleanup",
)
# Every status change there is. Decommissioned is the end: nothing leaves it.
AGENT_TRANSITIONS = (
    COME_BACK,
    START_UPGRADE,
    FINISH_UPGRADE,
    GO_SILENT,
    PAUSE,
    DRAIN,
    DRAINED,
    RESUME,
    CLEAN_UP,
    RESTORE,
    DECOMMISSION,
)
# An agent in these holds a seat, counts in the fleet and may authenticate. A paused or
# draining agent heartbeats and finishes what it runs; only its claims get nothing.
SEAT_HOLDING = frozenset({ONLINE, OFFLINE, UPGRADING, PAUSED, DRAINING})
# Held by an operator: claims nothing, is not told to upgrade, is not marked offline by the
# sweep (its page shows it offline when silent, by `presence`).
HELD = frozenset({PAUSED, DRAINING})
# The only status in which an agent may claim a job.
MAY_CLAIM = ONLINE


def agent_status_after(*transitions: Transition) -> Case:
    """The status an UPDATE sets: the first of `transitions` the row's current status
    allows, else the status it has (so a heartbeat's UPDATE never moves a row anywhere
    the table does not allow)."""
    return Case(
        *[When(status__in=t.sources, then=Value(t.target)) for t in transitions],
        default=F("status"),
    )


def heard_q(now: datetime, *, via: str = "") -> Q:
    """Online, the one definition every number uses (dashboard, Agents, Plan, advice,
    gates, snapshots): heard from within AGENT_ONLINE_WINDOW of `now`, whatever the status
    column says until the next sweep. `via` reaches the agent through a relation."""
    return Q(**{f"{via}last_heartbeat_at__gte": now - settings.AGENT_ONLINE_WINDOW})


def presence_sql(now: datetime) -> Case:
    """Agent.presence in SQL, for agents holding a seat: the status column when the agent
    was heard within the online window, else offline (the sweep may not have said so yet)."""
    return Case(
        When(heard_q(now), then=F("status")),
        default=Value(AgentStatus.OFFLINE),
        output_field=models.CharField(),
    )


def silent_since_q(cutoff: datetime) -> Q:
    """Not heard from since `cutoff` (never heard: registered before it): what the stale
    cleanup takes, and what it announces."""
    return Q(last_heartbeat_at__lt=cutoff) | Q(
        last_heartbeat_at__isnull=True, registered_at__lt=cutoff
    )


class AgentQuerySet(StatusQuerySet["Agent"]):
    def holding_seat(self) -> "AgentQuerySet":
        """Agents that hold a seat of the license, count in the fleet and may authenticate:
        every one not decommissioned."""
        return self.filter(status__in=SEAT_HOLDING)

    def for_customer(self, customer: Customer | int) -> "AgentQuerySet":
        return self.filter(customer=customer)


class Agent(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="agents")
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="agents")
    activation_token = models.OneToOneField(
        ActivationToken,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="agent",
        help_text="The token this agent redeemed; the database allows one agent per token.",
    )
    name = models.CharField(max_length=128)
    role = models.CharField(max_length=16, choices=AgentRole.choices)
    unit_name = models.CharField(max_length=128, help_text="systemd unit, unique per host.")
    state_dir = models.CharField(max_length=255, help_text="State directory, unique per host.")
    version = SemVerField()
    status = models.CharField(
        max_length=16, choices=AgentStatus.choices, default=AgentStatus.ONLINE
    )
    secret_prefix = models.CharField(max_length=32)
    secret_digest = models.CharField(max_length=64, unique=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    leases_renewed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a heartbeat last extended this agent's job leases."
    )
    clock_offset_seconds = models.IntegerField(
        null=True, blank=True, help_text="Agent clock minus server clock at the last heartbeat."
    )
    load = models.FloatField(null=True, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    offline_since = models.DateTimeField(null=True, blank=True)
    decommissioned_at = models.DateTimeField(null=True, blank=True)
    # Defaults in the database too, so rows inserted by SQL (make bench, the soak) work.
    ephemeral = models.BooleanField(
        default=False,
        db_default=False,
        help_text="From an ephemeral token: decommissioned after its first job or a clean exit.",
    )
    labels = models.JSONField(
        default=dict,
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        help_text="key: value labels; a job requiring labels goes only to an agent that has them.",
    )
    cleaned_up_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the stale cleanup retired it: it may be restored for 7 days.",
    )
    paused_reason = models.CharField(
        max_length=500, blank=True, db_default="", help_text="Why an operator paused or drained it."
    )
    paused_until = models.DateTimeField(
        null=True, blank=True, help_text="Beat resumes a paused or draining agent after this."
    )
    install_key_digest = models.CharField(
        max_length=64,
        blank=True,
        help_text="Digest of the random key the agent kept in its state dir when it "
        "activated: the proof that lets only that agent recover a lost activation answer.",
    )
    update_channel = models.CharField(
        max_length=16,
        choices=Channel.choices,
        blank=True,
        db_default="",
        help_text="Pinned to this update channel; empty: its license's channel.",
    )
    pinned_version = SemVerField(
        null=True,
        blank=True,
        help_text="Pinned to exactly this release: update_available points at it (and "
        "nowhere newer) until the pin is lifted.",
    )
    # What the agent says it is doing (its heartbeat's `activity`), written by the UPDATE
    # a heartbeat makes anyway (or the presence flush): no statement of its own.
    activity = models.CharField(
        max_length=24, choices=AgentActivity.choices, blank=True, db_default=""
    )
    activity_detail = models.CharField(max_length=500, blank=True, db_default="")
    activity_provider = models.CharField(
        max_length=50, blank=True, db_default="", help_text="The model provider it blames."
    )
    activity_since = models.DateTimeField(
        null=True, blank=True, help_text="When it started reporting its current activity."
    )

    objects = AgentQuerySet.as_manager()
    # What the hot paths know besides the row (fleet.selectors.AgentFacts), when an agent
    # was loaded by its secret; not a column.
    facts: "AgentFacts | None" = None

    class Meta:
        constraints = [
            # Decommissioned exactly when decommissioned_at is set: no agent is ever back
            # online (or anywhere) with a decommission on its record.
            models.CheckConstraint(
                condition=Q(status=DECOMMISSIONED, decommissioned_at__isnull=False)
                | (~Q(status=DECOMMISSIONED) & Q(decommissioned_at__isnull=True)),
                name="agent_decommissioned_has_time",
            ),
            # A decommissioned agent frees its unit and state dir for a successor.
            models.UniqueConstraint(
                fields=["host", "unit_name"],
                condition=~models.Q(status=AgentStatus.DECOMMISSIONED),
                name="agent_unique_unit_per_host",
            ),
            models.UniqueConstraint(
                fields=["host", "state_dir"],
                condition=~models.Q(status=AgentStatus.DECOMMISSIONED),
                name="agent_unique_state_dir_per_host",
            ),
        ]
        indexes = [
            # last_heartbeat_at stays unindexed so a heartbeat's UPDATE can be a HOT update.
            models.Index(fields=["customer", "status"], name="agent_customer_status"),
            # Lists by status and name (the portal's per customer, the admin's by name
            # across them) read in order, never sorting a whole fleet; agents per release
            # count from an index.
            models.Index(fields=["customer", "status", "name", "id"], name="agent_customer_list"),
            models.Index(fields=["name"], name="agent_name"),
            models.Index(fields=["version", "status"], name="agent_version"),
            # Provider incidents: the few agents blaming a provider, by customer (activity
            # rarely changes, so heartbeats' UPDATEs stay HOT).
            models.Index(
                fields=["customer", "activity_provider"],
                condition=Q(activity__in=PROVIDER_TROUBLE),
                name="agent_provider_trouble",
            ),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def presence(self) -> str:
        """The status every page shows, by the one definition of online (heard_q): an
        agent not heard from within the online window is offline now, though the status
        column says so only after the next sweep."""
        if self.status in (DECOMMISSIONED, CLEANED_UP):
            return self.status
        return self.status if self.heard_since(timezone.now()) else AgentStatus.OFFLINE

    def heard_since(self, now: datetime) -> bool:
        """heard_q for an agent in hand: heard from within the online window of `now`."""
        window = settings.AGENT_ONLINE_WINDOW
        return self.last_heartbeat_at is not None and self.last_heartbeat_at >= now - window

    def get_presence_display(self) -> str:
        return AgentStatus(self.presence).label


class AgentFactsChange(models.Model):
    """A change to what web processes keep in memory about agents (fleet/agent_cache.py):
    written in the same transaction as the change, read by every process within
    AGENT_CACHE_POLL_SECONDS. An agent, every agent of a customer, or (both empty) every
    agent. Rows older than an hour are deleted by the stale sweep."""

    changed_at = models.DateTimeField(db_index=True)
    agent_id = models.BigIntegerField(null=True, blank=True)
    customer_id = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        scope = f"agent {self.agent_id}" if self.agent_id else f"customer {self.customer_id}"
        return f"{scope if self.agent_id or self.customer_id else 'all agents'} changed"

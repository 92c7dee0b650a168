"""Agents and hosts: the facts an agent's hot paths need, and the portal's agent pages."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from fleet import policy
from fleet.choices import (
    ADVANCING_ROLLOUT_STATES,
    AgentStatus,
    Channel,
    JobStatus,
    RolloutTargetState,
)
from fleet.errors import NotFound
from fleet.labels import labels_check
from fleet.models import (
    Agent,
    BudgetCap,
    BulkAction,
    Customer,
    Host,
    Job,
    License,
    Question,
    Release,
    RolloutTarget,
)
from fleet.models.agents import CLEAN_UP, SEAT_HOLDING, heard_q, silent_since_q
from fleet.paging import count_of
from fleet.secrets import SecretKind, secret_digest, secret_is_well_formed, secret_matches
from fleet.selectors.releases import releases_newest_first
from fleet.versions import SemVer

QS = TypeVar("QS", bound=QuerySet[Any])


def agents_with_facts() -> QuerySet[Agent]:
    """Agents that may authenticate, each with what its hot paths need: its license
    channel and job cap, the latest release of each channel, and the upgrade a rollout
    has told it to apply now (if any)."""
    current = License.objects.filter(customer=OuterRef("customer_id"), is_current=True)
    order = RolloutTarget.objects.filter(
        agent=OuterRef("pk"),
        state=RolloutTargetState.OFFERED,
        rollout__state__in=ADVANCING_ROLLOUT_STATES,
    )
    return Agent.objects.holding_seat().annotate(
        license_channel=Subquery(current.values("channel")[:1]),
        license_max_concurrent=Subquery(current.values("max_concurrent_tasks_per_agent")[:1]),
        latest_stable=Subquery(releases_newest_first([Channel.STABLE]).values("version")[:1]),
        latest_any=Subquery(
            releases_newest_first([Channel.STABLE, Channel.BETA]).values("version")[:1]
        ),
        customer_update_pins=Subquery(
            Customer.objects.filter(pk=OuterRef("customer_id")).values("update_pins")[:1]
        ),
        upgrade_rollout_id=Subquery(order.values("rollout_id")[:1]),
        upgrade_version=Subquery(order.values("rollout__release__version")[:1]),
        # Its download (sha256 "" when the release has no artifact), in the same SELECT.
        upgrade_sha256=Subquery(order.values("rollout__release__sha256")[:1]),
        upgrade_size=Subquery(order.values("rollout__release__size")[:1]),
        upgrade_signature=Subquery(order.values("rollout__release__signature")[:1]),
        on_yanked=Exists(Release.objects.filter(version=OuterRef("version"), yanked=True)),
        stop_jobs=Exists(
            Job.objects.filter(
                agent=OuterRef("pk"), status=JobStatus.RUNNING, stop_requested_at__isnull=False
            )
        ),
        budgeted=Exists(BudgetCap.objects.filter(customer=OuterRef("customer_id"))),
        answers_pending=Exists(
            Question.objects.filter(
                agent=OuterRef("pk"), answered_at__isnull=False, acked_at__isnull=True
            )
        ),
    )


@dataclass(frozen=True)
class UpgradeOrder:
    version: SemVer
    rollout_id: int
    sha256: str = ""  # "" when the release has no artifact (nothing to download)
    size: int | None = None
    signature: str = ""


@dataclass(frozen=True)
class UpdatePin:
    """Where an agent's updates are pinned: a channel ("": its license's) and, or, a
    version."""

    channel: str
    version: SemVer | None
    labels: tuple[tuple[str, str], ...] = ()  # the rule's labels; () for the agent's own


def update_pin_rules(rules: Any) -> tuple[UpdatePin, ...]:
    """A customer's pins by label (Customer.update_pins), as kept with its agents."""
    return tuple(
        UpdatePin(
            rule.get("channel") or "",
            SemVer(rule["version"]) if rule.get("version") else None,
            tuple(sorted(rule["labels"].items())),
        )
        for rule in rules or ()
    )


def update_pin_for(agent: Agent, rules: tuple[UpdatePin, ...]) -> UpdatePin | None:
    """The agent's own pin, else the first of its customer's rules whose labels it has."""
    if agent.update_channel or agent.pinned_version is not None:
        return UpdatePin(agent.update_channel, agent.pinned_version)
    labels = agent.labels or {}
    return next((r for r in rules if all(labels.get(k) == v for k, v in r.labels)), None)


def agent_follows_release(agent: Agent, release: Release, rules: tuple[UpdatePin, ...]) -> bool:
    """False for an agent pinned (itself or by its labels) to another version, or to stable
    for a beta release: a wave leaves it out (its pin says where it goes)."""
    pin = update_pin_for(agent, rules)
    if pin is None:
        return True
    if pin.version is not None:
        return pin.version == release.version
    return not (release.channel == Channel.BETA and pin.channel == Channel.STABLE)


@dataclass(frozen=True)
class AgentFacts:
    """What an agent's hot paths need besides its own row, loaded with it in one SELECT
    (`agents_with_facts`) and kept with it by every web process."""

    channel: str | None  # its license's; None without a license
    job_cap: int  # its license's max_concurrent_tasks_per_agent; 0 without a license
    latest_stable: SemVer | None
    latest_any: SemVer | None  # stable or beta
    upgrade: UpgradeOrder | None  # what a rollout tells it to apply now
    on_yanked: bool  # its version was yanked
    stop_jobs: bool = False  # it runs jobs it was told to stop (jobs_to_stop names them)
    label_pins: tuple[UpdatePin, ...] = ()  # its customer's pins by label
    budgeted: bool = False  # its customer set budget caps (a claim checks them)
    answers_pending: bool = False  # answers to its questions wait for its acknowledgement

    def latest_release(self, channel: str | None) -> SemVer | None:
        """The newest release of a channel (beta sees stable ones too)."""
        return self.latest_any if channel == Channel.BETA else self.latest_stable


def agent_with_facts(agent: Agent) -> Agent:
    """The agent, its `facts` read from the annotations `agents_with_facts` made."""
    row = vars(agent)
    version = row["upgrade_version"]
    agent.facts = AgentFacts(
        channel=row["license_channel"],
        job_cap=row["license_max_concurrent"] or 0,
        latest_stable=row["latest_stable"],
        latest_any=row["latest_any"],
        upgrade=UpgradeOrder(
            version,
            row["upgrade_rollout_id"],
            row["upgrade_sha256"] or "",
            row["upgrade_size"],
            row["upgrade_signature"] or "",
        )
        if version
        else None,
        on_yanked=row["on_yanked"],
        stop_jobs=row["stop_jobs"],
        label_pins=update_pin_rules(row["customer_update_pins"]),
        budgeted=row["budgeted"],
        answers_pending=row["answers_pending"],
    )
    # The annotations now live in `facts`: a compact attribute dict without them halves
    # what each of the (up to AGENT_CACHE_MAX_ENTRIES) kept agents costs a web process.
    agent.__dict__ = {k: v for k, v in row.items() if k not in _FACT_ANNOTATIONS}
    return agent


_FACT_ANNOTATIONS = frozenset(
    {
        "license_channel",
        "license_max_concurrent",
        "latest_stable",
        "latest_any",
        "upgrade_rollout_id",
        "upgrade_version",
        "upgrade_sha256",
        "upgrade_size",
        "upgrade_signature",
        "on_yanked",
        "stop_jobs",
        "customer_update_pins",
        "budgeted",
        "answers_pending",
    }
)


def agent_for_secret(secret: str) -> Agent | None:
    """The agent a secret belongs to, with its facts (`agents_with_facts`), in one SELECT."""
    if not secret_is_well_formed(secret, SecretKind.AGENT_SECRET):
        return None
    agent = agents_with_facts().filter(secret_digest=secret_digest(secret)).first()
    # The lookup is by digest; the comparison itself is constant-time.
    if agent is None or not secret_matches(secret, agent.secret_digest):
        return None
    return agent_with_facts(agent)


def agent_update_pin(agent: Agent) -> UpdatePin | None:
    """Where the agent's updates are pinned (its own pin, else its labels'), from its row
    and facts: no query."""
    return update_pin_for(agent, agent.facts.label_pins if agent.facts else ())


def agent_channel(agent: Agent) -> str | None:
    """The update channel an agent follows: its pin's, else its license's."""
    pin = agent_update_pin(agent)
    return (pin.channel if pin else "") or (agent.facts.channel if agent.facts else None)


def agent_latest_release(agent: Agent) -> SemVer | None:
    """The release the agent should be on, as its row and facts say (None without facts):
    the version it is pinned to, else the latest of the channel it follows (an agent on
    a yanked release newer than that is told to move to it too). No query."""
    if agent.facts is None:
        return None
    pin = agent_update_pin(agent)
    if pin is not None and pin.version is not None:
        return pin.version
    return agent.facts.latest_release(agent_channel(agent))


def agent_upgrade_order(agent: Agent) -> UpgradeOrder | None:
    """The version a rollout tells the agent to apply now, as its facts say."""
    return agent.facts.upgrade if agent.facts else None


def agent_job_cap(agent: Agent) -> int:
    """max_concurrent_tasks_per_agent of the agent's license (0 without one or facts); an
    ephemeral agent runs one job, its only one."""
    cap = agent.facts.job_cap if agent.facts else 0
    return min(cap, 1) if agent.ephemeral else cap


# --- the portal's agent pages (scoped by customer) -------------------------------------


def agents_cleanup_due(customer: Customer, *, now: datetime | None = None) -> list[Agent]:
    """The customer's agents the stale cleanup will take within CLEANUP_NOTICE (those due
    already included), longest silent first; empty when the cleanup is off."""
    if not customer.stale_cleanup_days:
        return []
    now = now or timezone.now()
    cutoff = now + policy.CLEANUP_NOTICE - timedelta(days=customer.stale_cleanup_days)
    return list(
        Agent.objects.filter(customer=customer, status__in=CLEAN_UP.sources)
        .filter(silent_since_q(cutoff))
        .select_related("host")
        .order_by("last_heartbeat_at", "pk")[:200]
    )


def agent_get(customer: Customer | int, agent_id: int) -> Agent:
    agent = Agent.objects.select_related("host").filter(customer=customer, pk=agent_id).first()
    if agent is None:
        raise NotFound("No such agent.")
    return agent


def bulk_action_get(customer: Customer | int, action_id: int) -> BulkAction:
    """Its progress, polled every second: without the stored ids (100,000 of them at fleet
    scale, read only by the worker, chunk by chunk, in the database)."""
    action = BulkAction.objects.defer("agent_ids").filter(customer=customer, pk=action_id).first()
    if action is None:
        raise NotFound("No such bulk action.")
    return action


# The Agents page's sortable columns: key → field.
AGENT_SORTS = {
    "name": "name",
    "role": "role",
    "version": "version",
    "host": "host__hostname",
    "heard": "last_heartbeat_at",
}


def with_label(rows: QS, field: str, text: str) -> QS:
    """Rows whose `field` labels have "key=value" (or, for a bare "key", the key at all);
    text that is no label matches nothing."""
    key, sep, value = text.strip().partition("=")
    try:
        labels_check({key: value})
    except ValueError:
        return rows.none()
    if not sep:
        return rows.filter(**{f"{field}__has_key": key})
    return rows.alias(_label=KeyTransform(key, field)).filter(_label=value)


def agent_search(customer: Customer | int, filters: dict[str, str]) -> QuerySet[Agent]:
    """The portal's agent list: filter by status, role, version, host and zone, search by
    name, unit, hostname or machine id; sorted by `filters["sort"]` (an AGENT_SORTS key,
    "-" first for descending), else by status and name."""
    agents = Agent.objects.for_customer(customer).select_related("host")
    status = filters.get("status")
    if status in (AgentStatus.DECOMMISSIONED, AgentStatus.CLEANED_UP):
        agents = agents.filter(status=status)
    else:  # online and offline as every page counts them (Agent.presence)
        agents = agents.holding_seat()
        heard = heard_q(timezone.now())
        if status == AgentStatus.OFFLINE:
            agents = agents.filter(~heard | Q(status=status))
        elif status:
            agents = agents.filter(heard, status=status)
    for key, lookup in (("role", "role"), ("host", "host__hostname"), ("zone", "host__zone")):
        if filters.get(key):
            agents = agents.filter(**{lookup: filters[key]})
    if filters.get("version"):
        try:
            agents = agents.filter(version=SemVer(filters["version"]))
        except ValueError:
            agents = agents.none()
    if filters.get("label"):
        agents = with_label(agents, "labels", filters["label"])
    if filters.get("q"):
        q = filters["q"]
        agents = agents.filter(
            Q(name__icontains=q)
            | Q(unit_name__icontains=q)
            | Q(host__hostname__icontains=q)
            | Q(host__machine_id__icontains=q)
        )
    sort = filters.get("sort", "")
    column = AGENT_SORTS.get(sort.removeprefix("-"))
    if column is None:
        return agents.order_by("status", "name", "pk")
    if sort.startswith("-"):
        return agents.order_by(F(column).desc(nulls_last=True), "-pk")
    return agents.order_by(F(column).asc(nulls_last=True), "pk")


def agent_filter_choices(customer: Customer | int) -> dict[str, list[str]]:
    """The versions the active fleet runs and the zones of its hosts, for the filter menus:
    two DISTINCT queries answering a handful of rows however many agents there are (a
    host is typed, not picked from a menu of thousands)."""
    active = Agent.objects.for_customer(customer).holding_seat().order_by()
    versions = {SemVer(str(v)) for v in active.values_list("version", flat=True).distinct()}
    zones = Host.objects.filter(customer=customer).order_by().values_list("zone", flat=True)
    return {
        "versions": [str(v) for v in sorted(versions)],
        "zones": sorted(set(zones.distinct()) - {""}),
    }


def zone_mix(customer: Customer | int, *, label: str = "") -> dict[str, int]:
    """Agents holding a seat by their host's zone ("no zone" for hosts without one), the
    most first: one grouped query, however many hosts."""
    agents = Agent.objects.for_customer(customer).holding_seat()
    if label:
        agents = with_label(agents, "labels", label)
    rows = agents.values("host__zone").annotate(n=Count("pk")).order_by("-n", "host__zone")
    return {row["host__zone"] or "no zone": row["n"] for row in rows}


def host_list(customer: Customer | int, *, label: str = "", zone: str = "") -> QuerySet[Host]:
    """Hosts with their agents counted by role, for the zone mix and memory budget (online
    as every page counts it). With `label`: the hosts that run an agent carrying it; with
    `zone`: the hosts in that zone."""
    seated = Agent.objects.filter(status__in=SEAT_HOLDING)
    hosts = Host.objects.filter(customer=customer)
    if zone:
        hosts = hosts.filter(zone=zone)
    if label:
        labelled = with_label(Agent.objects.for_customer(customer).holding_seat(), "labels", label)
        hosts = hosts.filter(pk__in=labelled.values("host_id"))
    # Counted for the hosts a page shows (correlated subqueries), never grouped over every
    # host's agents first.
    return hosts.annotate(
        n_agents=count_of(seated, "host"),
        n_testers=count_of(seated.filter(role="tester"), "host"),
        n_online=count_of(seated.filter(heard_q(timezone.now())), "host"),
    ).order_by("zone", "hostname")

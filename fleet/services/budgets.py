"""Budgets: spend caps (USD and tokens, per day and per month, UTC) for a customer's
whole fleet, a role or one agent, and the counters completions charge.

- Charging (`budget_charge`, inside the completion's transaction): one
  INSERT … ON CONFLICT DO UPDATE adds the job's cost and tokens to its six counter rows
  (customer, role, agent by day and, month) in a fixed order, so concurrent completions add
  up exactly and never deadlock one another.
- Claiming (`budget_stop`): an agent whose customer has caps (its kept facts say so) reads
  them with its counters in one indexed statement; a cap reached answers the claim 204
  with `X-Agentina-Idle: budget_exhausted`. A job already running still finishes and is
  charged, so spend passes a cap by at most the jobs running when it was reached.
- Raising (or removing) a cap takes effect on the next claim; the finding it opened is
  resolved then, or by beat once the period rolls over."""

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, DecimalField, F, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    AgentRole,
    AnomalyKind,
    AnomalySeverity,
    AuditAction,
    BudgetPeriod,
    BudgetScope,
)
from fleet.errors import InvalidInput, NotFound
from fleet.models import Agent, Anomaly, BudgetCap, BudgetSpend, Customer, Job
from fleet.services.anomalies import anomalies_resolve, anomaly_open
from fleet.services.audit import SYSTEM, Actor, audit_record
from fleet.services.usage import UsageTotals

IDLE_HEADER = "X-Agentina-Idle"
BUDGET_EXHAUSTED = "budget_exhausted"
CAPS_MAX = 200


@dataclass(frozen=True)
class CapSetting:
    """One cap as an owner sets it; both limits None removes it."""

    scope: str
    scope_key: str
    period: str
    max_cost_usd: Decimal | None
    max_tokens: int | None


@dataclass(frozen=True)
class BudgetStop:
    """The cap a claim met."""

    scope: str
    scope_key: str
    period: str
    max_cost_usd: Decimal | None
    max_tokens: int | None
    spent_usd: Decimal
    spent_tokens: int

    @property
    def reached(self) -> bool:
        return (self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd) or (
            self.max_tokens is not None and self.spent_tokens >= self.max_tokens
        )

    @property
    def words(self) -> str:
        who = scope_words(self.scope, self.scope_key)
        per = "today" if self.period == BudgetPeriod.DAY else "this month"
        if self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd:
            spent = f"${self.spent_usd:,.2f} of its ${self.max_cost_usd:,.2f} cap"
        else:
            spent = f"{self.spent_tokens:,} tokens of its {self.max_tokens or 0:,} cap"
        return f"{who} spent {spent} {per}"


def scope_words(scope: str, key: str) -> str:
    if scope == BudgetScope.CUSTOMER:
        return "The fleet"
    if scope == BudgetScope.ROLE:
        return f"The {key} role"
    name = Agent.objects.filter(pk=int(key)).values_list("name", flat=True).first() if key else ""
    return f"Agent {name or key}"


def period_starts(now: datetime) -> dict[str, date]:
    """The UTC day and month a spend at `now` counts in."""
    day = now.astimezone(UTC).date()
    return {BudgetPeriod.DAY: day, BudgetPeriod.MONTH: day.replace(day=1)}


def _binding(role: str, agent_id: int | None) -> Q:
    """The caps that bind an agent of `role` (or a job it ran)."""
    q = Q(scope=BudgetScope.CUSTOMER, scope_key="") | Q(scope=BudgetScope.ROLE, scope_key=role)
    if agent_id is not None:
        q |= Q(scope=BudgetScope.AGENT, scope_key=str(agent_id))
    return q


def _caps_with_spend(customer_id: int, now: datetime, binding: Q | None = None) -> Any:
    """The customer's caps (those `binding` selects), each with its current period's
    spend: one statement."""
    starts = period_starts(now)
    spend = BudgetSpend.objects.filter(
        customer_id=OuterRef("customer_id"),
        scope=OuterRef("scope"),
        scope_key=OuterRef("scope_key"),
        period=OuterRef("period"),
        period_start=Case(
            When(period=BudgetPeriod.DAY, then=Value(starts[BudgetPeriod.DAY])),
            default=Value(starts[BudgetPeriod.MONTH]),
        ),
    )
    return (
        BudgetCap.objects.filter(binding or Q(), customer_id=customer_id)
        .annotate(
            spent_usd=Coalesce(
                Subquery(spend.values("cost_usd")[:1]),
                Value(Decimal(0)),
                output_field=DecimalField(max_digits=16, decimal_places=6),
            ),
            spent_tokens=Coalesce(Subquery(spend.values("tokens")[:1]), Value(0)),
        )
        .order_by("scope", "scope_key", "period")
    )


def _reached() -> Q:
    return Q(max_cost_usd__isnull=False, spent_usd__gte=F("max_cost_usd")) | Q(
        max_tokens__isnull=False, spent_tokens__gte=F("max_tokens")
    )


def _stop(cap: BudgetCap) -> BudgetStop:
    row = vars(cap)
    return BudgetStop(
        scope=cap.scope,
        scope_key=cap.scope_key,
        period=cap.period,
        max_cost_usd=cap.max_cost_usd,
        max_tokens=cap.max_tokens,
        spent_usd=row["spent_usd"],
        spent_tokens=row["spent_tokens"],
    )


def budget_stop(agent: Agent, *, now: datetime | None = None) -> BudgetStop | None:
    """The cap that stops this agent claiming, if one is reached. No statement at all
    when its customer has no caps (its kept facts say so); else one indexed SELECT."""
    if agent.facts is not None and not agent.facts.budgeted:
        return None
    cap = (
        _caps_with_spend(agent.customer_id, now or timezone.now(), _binding(agent.role, agent.pk))
        .filter(_reached())
        .first()
    )
    return _stop(cap) if cap is not None else None


# Ordered so that concurrent charges lock shared rows in one order (no deadlocks).
_CHARGE = """
INSERT INTO fleet_budgetspend (customer_id, scope, scope_key, period, period_start, cost_usd,
                               tokens)
VALUES {rows}
ON CONFLICT (customer_id, scope, scope_key, period, period_start) DO UPDATE
   SET cost_usd = fleet_budgetspend.cost_usd + excluded.cost_usd,
       tokens = fleet_budgetspend.tokens + excluded.tokens
RETURNING scope, scope_key, period, cost_usd, tokens"""


def budget_charge(
    job: Job, totals: UsageTotals, *, budgeted: bool | None = None
) -> list[BudgetStop]:
    """Add a finished job's cost and tokens to its customer's, role's and agent's day and
    month counters (call inside the completion's transaction). Returns the caps this
    charge reached (each opens a finding, which fires the anomaly alert); nothing and no
    statement when the job reported no usage. `budgeted=False` (the agent's kept facts:
    its customer has no caps) skips reading the caps: the charge is one statement."""
    if totals.cost_usd <= 0 and totals.tokens <= 0:
        return []
    now = job.finished_at or timezone.now()
    keys = [(BudgetScope.CUSTOMER.value, ""), (BudgetScope.ROLE.value, job.role)]
    if job.agent_id is not None:
        keys.append((BudgetScope.AGENT.value, str(job.agent_id)))
    rows = sorted(
        (scope, key, period, start)
        for scope, key in keys
        for period, start in period_starts(now).items()
    )
    params: list[Any] = []
    for scope, key, period, start in rows:
        params += [job.customer_id, scope, key, str(period), start, totals.cost_usd, totals.tokens]
    sql = _CHARGE.format(rows=", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows)))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        after = {(s, k, p): (Decimal(c), int(t)) for s, k, p, c, t in cursor.fetchall()}
    reached: list[BudgetStop] = []
    if budgeted is False:
        return reached
    for cap in BudgetCap.objects.filter(
        _binding(job.role, job.agent_id), customer_id=job.customer_id
    ):
        spent_usd, spent_tokens = after.get((cap.scope, cap.scope_key, cap.period), (0, 0))
        crossed_usd = cap.max_cost_usd is not None and (
            spent_usd - totals.cost_usd < cap.max_cost_usd <= spent_usd
        )
        crossed_tokens = cap.max_tokens is not None and (
            spent_tokens - totals.tokens < cap.max_tokens <= spent_tokens
        )
        if crossed_usd or crossed_tokens:
            stop = BudgetStop(
                cap.scope,
                cap.scope_key,
                cap.period,
                cap.max_cost_usd,
                cap.max_tokens,
                Decimal(spent_usd),
                spent_tokens,
            )
            _open_finding(job.customer_id, stop)
            reached.append(stop)
    return reached


def budget_fingerprint(scope: str, key: str, period: str) -> str:
    return f"budget:{scope}:{key}:{period}"


def _open_finding(customer_id: int, stop: BudgetStop) -> None:
    whom = {
        BudgetScope.CUSTOMER: "no agent",
        BudgetScope.ROLE: f"no {stop.scope_key} agent",
        BudgetScope.AGENT: "it",
    }[BudgetScope(stop.scope)]
    until = "tomorrow (UTC)" if stop.period == BudgetPeriod.DAY else "next month"
    anomaly_open(
        actor=SYSTEM,
        customer=customer_id,
        kind=AnomalyKind.BUDGET_EXHAUSTED,
        fingerprint=budget_fingerprint(stop.scope, stop.scope_key, stop.period),
        severity=AnomalySeverity.WARNING,
        agent_id=int(stop.scope_key) if stop.scope == BudgetScope.AGENT else None,
        message=f"{stop.words}: {whom} claims new jobs until {until} or until an owner "
        "raises the cap on the Settings page. Running jobs finish.",
    )


def budget_findings_settle(*, customer_id: int | None = None, now: datetime | None = None) -> int:
    """Resolve budget findings whose cap is no longer reached (raised, removed, or a new
    day or month began). One read of the open findings, one of the caps per customer
    that has some."""
    now = now or timezone.now()
    open_findings = Anomaly.objects.filter(
        kind=AnomalyKind.BUDGET_EXHAUSTED, resolved_at__isnull=True
    )
    if customer_id is not None:
        open_findings = open_findings.filter(customer_id=customer_id)
    by_customer: dict[int, list[tuple[int, str]]] = {}
    for pk, customer, fingerprint in open_findings.values_list("pk", "customer_id", "fingerprint"):
        by_customer.setdefault(customer, []).append((pk, fingerprint))
    cleared: list[int] = []
    for customer, findings in by_customer.items():
        still = {
            budget_fingerprint(cap.scope, cap.scope_key, cap.period)
            for cap in _caps_with_spend(customer, now).filter(_reached())
        }
        cleared += [pk for pk, fingerprint in findings if fingerprint not in still]
    if not cleared:
        return 0
    return anomalies_resolve(
        where=Q(pk__in=cleared), note="The budget cap is no longer reached.", actor=SYSTEM
    )


def budgets_with_spend(
    customer: Customer | int, *, now: datetime | None = None
) -> list[BudgetStop]:
    """Every cap of the customer with what its current period spent (the Settings page and
    GET /budgets)."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    return [_stop(cap) for cap in _caps_with_spend(customer_id, now or timezone.now())]


@transaction.atomic
def budget_caps_set(*, customer: Customer, caps: list[CapSetting], actor: Actor) -> int:
    """Set (or, with both limits None, remove) caps; audited. Claims see the new caps at
    once; findings of caps no longer reached resolve. Returns how many caps changed."""
    changed: dict[str, list[Any]] = {}
    for index, cap in enumerate(caps):
        _check_key(customer, cap, f"caps.{index}.key")
        where: dict[str, Any] = {
            "customer": customer,
            "scope": cap.scope,
            "scope_key": cap.scope_key,
            "period": cap.period,
        }
        before = BudgetCap.objects.filter(**where).values("max_cost_usd", "max_tokens").first()
        label = f"{cap.scope}:{cap.scope_key}:{cap.period}".replace("::", ":")
        old = [before["max_cost_usd"], before["max_tokens"]] if before else None
        if cap.max_cost_usd is None and cap.max_tokens is None:
            if before is not None:
                BudgetCap.objects.filter(**where).delete()
                changed[label] = [_cap_words(old), None]
            continue
        new = [cap.max_cost_usd, cap.max_tokens]
        if old == new:
            continue
        BudgetCap.objects.update_or_create(
            **where, defaults={"max_cost_usd": cap.max_cost_usd, "max_tokens": cap.max_tokens}
        )
        changed[label] = [_cap_words(old), _cap_words(new)]
    if changed:
        agent_facts_changed(customer_id=customer.pk)  # claims start (or stop) checking caps
        audit_record(
            actor=actor,
            action=AuditAction.BUDGET_UPDATE,
            target=customer,
            customer=customer,
            changes=changed,
        )
        budget_findings_settle(customer_id=customer.pk)
    return len(changed)


def _check_key(customer: Customer, cap: CapSetting, field: str) -> None:
    """The key names what the scope needs: nothing for the fleet, a role, an agent of
    this customer (another customer's agent is 404, as if it did not exist)."""
    if cap.scope == BudgetScope.CUSTOMER and cap.scope_key:
        raise _invalid(field, "must be empty for the customer scope")
    if cap.scope == BudgetScope.ROLE and cap.scope_key not in AgentRole.values:
        raise _invalid(field, f"must be a role: {', '.join(AgentRole.values)}")
    if cap.scope == BudgetScope.AGENT:
        if not (cap.scope_key.isascii() and cap.scope_key.isdigit() and len(cap.scope_key) < 19):
            raise _invalid(field, "must be an agent id")
        if not Agent.objects.filter(pk=int(cap.scope_key), customer=customer).exists():
            raise NotFound("No such agent.")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _cap_words(limits: list[Any] | None) -> str | None:
    if limits is None:
        return None
    usd, tokens = limits
    parts = [f"${usd}" if usd is not None else "", f"{tokens} tokens" if tokens is not None else ""]
    return " / ".join(p for p in parts if p)

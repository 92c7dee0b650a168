from datetime import datetime

from django.db import transaction

from fleet.agent_cache import agent_facts_changed
from fleet.choices import AuditAction
from fleet.errors import (
    InvalidLicense,
    LicenseBelowActiveAgents,
    LicenseExpired,
    LicenseMissing,
    LicenseSuspended,
)
from fleet.models import Customer, License
from fleet.selectors import customer_active_agent_count, license_current
from fleet.services.audit import Actor, audit_record, model_changes

LICENSE_EDITABLE = [
    "plan",
    "max_agents",
    "max_concurrent_tasks_per_agent",
    "valid_from",
    "valid_until",
    "channel",
]


def license_validate(
    license: License, *, confirm_below_active: bool, previous_max_agents: int | None
) -> None:
    """Raise the first rule `license` breaks; forms call it too, so both say the same.

    The cap is checked against the active agents only when it goes down: a license
    already below its fleet (confirmed once) can still be edited in other ways."""
    if license.max_agents < 1:
        raise InvalidLicense("max_agents must be at least 1.", field="max_agents")
    if license.max_concurrent_tasks_per_agent < 1:
        raise InvalidLicense(
            "max_concurrent_tasks_per_agent must be at least 1.",
            field="max_concurrent_tasks_per_agent",
        )
    if license.valid_until is not None and license.valid_until <= license.valid_from:
        raise InvalidLicense("valid_until must be after valid_from.", field="valid_until")
    lowered = previous_max_agents is None or license.max_agents < previous_max_agents
    if not lowered or confirm_below_active:
        return
    active = customer_active_agent_count(license.customer_id)
    if license.max_agents < active:
        raise LicenseBelowActiveAgents(
            f"{license.customer} has {active} active agents; max_agents={license.max_agents} "
            "would leave it over its cap. Confirm to apply anyway: no agent is stopped, "
            "but no new agent can activate until the fleet is within the cap.",
            active_agents=active,
            max_agents=license.max_agents,
        )


def _whole_seconds(license: License) -> None:
    """Validity times to the second, as the admin's widgets show and send them back."""
    license.valid_from = license.valid_from.replace(microsecond=0)
    if license.valid_until is not None:
        license.valid_until = license.valid_until.replace(microsecond=0)


@transaction.atomic
def license_create(
    *, license: License, actor: Actor, confirm_below_active: bool = False
) -> License:
    """Make `license` (unsaved) the customer's current one; the previous one becomes history."""
    Customer.objects.select_for_update().get(pk=license.customer_id)
    _whole_seconds(license)
    current = license_current(license.customer_id)
    license_validate(
        license,
        confirm_below_active=confirm_below_active,
        previous_max_agents=current.max_agents if current else None,
    )
    License.objects.filter(customer_id=license.customer_id, is_current=True).update(
        is_current=False
    )
    license.is_current = True
    license.save()
    agent_facts_changed(customer_id=license.customer_id)  # channel and job cap
    audit_record(
        actor=actor,
        action=AuditAction.LICENSE_CREATE,
        target=license,
        customer=license.customer,
        changes={name: [None, str(getattr(license, name))] for name in LICENSE_EDITABLE},
    )
    return license


@transaction.atomic
def license_update(
    *, license: License, actor: Actor, confirm_below_active: bool = False
) -> License:
    """Save edits already set on `license`, validating them against the customer's fleet."""
    before = License.objects.select_for_update().get(pk=license.pk)
    _whole_seconds(license)
    changes = model_changes(before, license, LICENSE_EDITABLE)
    if not changes:
        return license
    license_validate(
        license,
        confirm_below_active=confirm_below_active,
        previous_max_agents=before.max_agents,
    )
    license.save(update_fields=list(changes))
    agent_facts_changed(customer_id=license.customer_id)
    audit_record(
        actor=actor,
        action=AuditAction.LICENSE_UPDATE,
        target=license,
        customer=license.customer,
        changes=changes,
    )
    return license


@transaction.atomic
def license_suspend(*, license: License, reason: str, actor: Actor) -> License:
    """Suspended: running agents keep working, but no new agent can activate."""
    updated = License.objects.filter(pk=license.pk, suspended=False).update(
        suspended=True, suspended_reason=reason[:500]
    )
    license.refresh_from_db()
    if updated:
        audit_record(
            actor=actor,
            action=AuditAction.LICENSE_SUSPEND,
            target=license,
            customer=license.customer,
            changes={"suspended": [False, True], "reason": [None, reason]},
        )
    return license


@transaction.atomic
def license_resume(*, license: License, actor: Actor) -> License:
    updated = License.objects.filter(pk=license.pk, suspended=True).update(
        suspended=False, suspended_reason=""
    )
    license.refresh_from_db()
    if updated:
        audit_record(
            actor=actor,
            action=AuditAction.LICENSE_RESUME,
            target=license,
            customer=license.customer,
            changes={"suspended": [True, False]},
        )
    return license


def license_require_admitting(license: License | None, *, now: datetime) -> License:
    """The license, if it admits new agents now; else the refusal that says why."""
    if license is None:
        raise LicenseMissing("This customer has no license. Contact Agentina sales.")
    if license.suspended:
        raise LicenseSuspended(
            "The license is suspended; no new agent can activate.",
            reason=license.suspended_reason,
        )
    if not license.admits_agents_at(now):
        raise LicenseExpired("The license is not valid now; no new agent can activate.")
    return license

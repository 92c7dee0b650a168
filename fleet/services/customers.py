from collections.abc import Sequence
from datetime import time
from typing import Any
from zoneinfo import available_timezones

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from fleet.agent_cache import agent_facts_changed
from fleet.choices import AuditAction, Channel, MemberRole
from fleet.errors import InvalidInput, LastOwner, NotAllowed, NotFound
from fleet.labels import labels_check
from fleet.models import Customer, Membership, Release
from fleet.services.audit import Actor, audit_record, model_changes
from fleet.sessions import user_sessions_end
from fleet.versions import SemVer

CUSTOMER_EDITABLE = [
    "name",
    "slug",
    "contact_email",
    "notes",
    "job_max_runtime_seconds",
    "stale_cleanup_days",
    "require_two_factor",
    "time_zone",
    "update_pins",
    "maintenance_days",
    "maintenance_start",
    "maintenance_end",
]
MAINTENANCE_WINDOW_FIELDS = ["maintenance_days", "maintenance_start", "maintenance_end"]


@transaction.atomic
def customer_create(
    *, name: str, slug: str = "", contact_email: str = "", notes: str = "", actor: Actor
) -> Customer:
    customer = Customer.objects.create(
        name=name, slug=slug or slugify(name), contact_email=contact_email, notes=notes
    )
    audit_record(
        actor=actor, action=AuditAction.CUSTOMER_CREATE, target=customer, customer=customer
    )
    return customer


@transaction.atomic
def customer_update(
    *, customer: Customer, actor: Actor, fields: Sequence[str] = CUSTOMER_EDITABLE
) -> Customer:
    """Save edits already set on `customer` (by a form), recording what changed. Only
    `fields` are compared and written: a caller that edits two settings never writes back
    a stale copy of the others (another owner's change made meanwhile stays)."""
    before = Customer.objects.select_for_update().get(pk=customer.pk)
    changes = model_changes(before, customer, list(fields))
    written = list(changes)
    if "stale_cleanup_days" in changes:
        # Turned on, or its days changed: it acts a day later, so the portal lists what it
        # will do first (an agent already past the new window is not taken at once).
        customer.stale_cleanup_since = timezone.now() if customer.stale_cleanup_days else None
        written.append("stale_cleanup_since")
    if "update_pins" in changes:  # every kept agent of the customer re-reads its pins
        agent_facts_changed(customer_id=customer.pk)
    if changes:
        customer.save(update_fields=written)
        audit_record(
            actor=actor,
            action=AuditAction.CUSTOMER_UPDATE,
            target=customer,
            customer=customer,
            changes=changes,
        )
    return customer


def customer_settings_set(
    *,
    customer: Customer,
    stale_cleanup_days: int | None,
    job_max_runtime_seconds: int | None,
    actor: Actor,
) -> Customer:
    """The policies a customer's owners set themselves (portal Settings, the API)."""
    customer.stale_cleanup_days = stale_cleanup_days
    customer.job_max_runtime_seconds = job_max_runtime_seconds
    return customer_update(
        customer=customer, actor=actor, fields=["stale_cleanup_days", "job_max_runtime_seconds"]
    )


def maintenance_window_check(
    time_zone: str, days: list[int], start: time | None, end: time | None
) -> None:
    """A maintenance window's parts are valid together, else InvalidInput naming the
    field: a known IANA time zone; ISO weekdays 1..7; with days, both hours (and only
    with days)."""
    if time_zone not in available_timezones():
        raise InvalidInput(
            f"Unknown time zone {time_zone[:64]!r}: use an IANA name such as Europe/Berlin.",
            field="time_zone",
        )
    if not isinstance(days, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days
    ):
        raise InvalidInput("Days are ISO weekdays: 1 (Monday) to 7 (Sunday).", field="days")
    if days and (start is None or end is None):
        raise InvalidInput("A window with days needs its start and end hours.", field="start")
    if not days and (start is not None or end is not None):
        raise InvalidInput("Hours without days open no window: choose its days.", field="days")


UPDATE_PIN_RULES_MAX = 20


def update_pins_check(rules: Any) -> list[dict[str, Any]]:
    """A customer's pins by label as kept, else InvalidInput naming `update_pins`: at most
    20 rules, each with at least one label and a channel or a published, unyanked
    version."""

    def refuse(message: str) -> InvalidInput:
        return InvalidInput(f"Update pins: {message}", field="update_pins")

    if not isinstance(rules, list) or len(rules) > UPDATE_PIN_RULES_MAX:
        raise refuse(f"a list of at most {UPDATE_PIN_RULES_MAX} rules.")
    clean = []
    for rule in rules:
        if not isinstance(rule, dict) or not set(rule) <= {"labels", "channel", "version"}:
            raise refuse("each rule is {labels, channel, version}.")
        try:
            labels = labels_check(rule.get("labels"))
        except ValueError as exc:
            raise refuse(str(exc)) from exc
        channel, version = rule.get("channel") or None, rule.get("version") or None
        if not labels or not (channel or version):
            raise refuse("each rule names a label and a channel or a version.")
        if channel is not None and channel not in Channel.values:
            raise refuse(f"unknown channel {str(channel)[:40]!r}.")
        if version is not None:
            try:
                parsed = SemVer(str(version))
            except ValueError as exc:
                raise refuse(f"{str(version)[:64]!r} is not a version.") from exc
            if not Release.objects.filter(version=parsed, yanked=False).exists():
                raise refuse(f"no published (unyanked) release {parsed}.")
            version = str(parsed)
        clean.append({"labels": labels, "channel": channel, "version": version})
    return clean


@transaction.atomic
def customer_update_pins_set(*, customer: Customer, rules: Any, actor: Actor) -> Customer:
    """Pin the customer's agents by label (the first rule whose labels an agent has; its
    own pin comes first); their heartbeats follow at once. Audited as a settings change."""
    customer.update_pins = update_pins_check(rules)
    return customer_update(customer=customer, actor=actor, fields=["update_pins"])


@transaction.atomic
def customer_maintenance_window_set(
    *,
    customer: Customer,
    time_zone: str,
    days: list[int],
    start: time | None,
    end: time | None,
    actor: Actor,
) -> Customer:
    """When upgrade waves may start a step (no days: at any time). Audited as a settings
    change; beat's next advance follows it."""
    maintenance_window_check(time_zone, days, start, end)
    customer.time_zone = time_zone
    customer.maintenance_days = sorted(set(days))
    customer.maintenance_start, customer.maintenance_end = start, end
    return customer_update(
        customer=customer, actor=actor, fields=["time_zone", *MAINTENANCE_WINDOW_FIELDS]
    )


def _memberships_locked(customer: Customer | int) -> list[Membership]:
    """Every membership of the customer, locked in id order (two changes never deadlock),
    so the owners counted next stay counted until the change commits."""
    return list(
        Membership.objects.select_for_update()
        .filter(customer=customer)
        .select_related("user", "customer")
        .order_by("pk")
    )


def _refuse_last_owner(locked: list[Membership], membership: Membership) -> None:
    """Refuse a change that takes `membership` (an owner) out of the owners when it is the
    customer's only one."""
    owners = [m for m in locked if m.role == MemberRole.OWNER]
    if membership.role == MemberRole.OWNER and len(owners) == 1:
        raise LastOwner(
            f"{membership.user.get_username()} is the last owner of {membership.customer}: "
            "make another member an owner first.",
            membership_id=membership.pk,
        )


def _role_change(membership: Membership, role: MemberRole, actor: Actor) -> Membership:
    old_role = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        actor=actor,
        action=AuditAction.MEMBERSHIP_UPDATE,
        target=membership,
        customer=membership.customer_id,
        changes={"role": [old_role, str(role)]},
    )
    return membership


@transaction.atomic
def membership_set(*, customer: Customer, user: User, role: MemberRole, actor: Actor) -> Membership:
    """Add `user` to `customer` with `role`, or change the role they have (never the last
    owner's)."""
    locked = _memberships_locked(customer)
    membership = next((m for m in locked if m.user_id == user.pk), None)
    if membership is not None:
        if membership.role != role:
            if role != MemberRole.OWNER:
                _refuse_last_owner(locked, membership)
            _role_change(membership, role, actor)
        return membership
    membership, created = Membership.objects.get_or_create(
        customer=customer, user=user, defaults={"role": role}
    )
    if created:
        audit_record(
            actor=actor,
            action=AuditAction.MEMBERSHIP_CREATE,
            target=membership,
            customer=customer,
            changes={"role": [None, str(role)]},
        )
    return membership


@transaction.atomic
def membership_role_change(*, membership: Membership, role: MemberRole, actor: Actor) -> Membership:
    """Give an existing member another role (owners on the Members page). The customer's
    memberships are locked first, so two owners demoting each other at once cannot leave
    it without an owner: the second sees the first's change and is refused."""
    locked = _memberships_locked(membership.customer_id)
    current = next((m for m in locked if m.pk == membership.pk), None)
    if current is None:
        raise NotFound("No such member.")
    if current.role == role:
        return current
    if role != MemberRole.OWNER:
        _refuse_last_owner(locked, current)
    return _role_change(current, role, actor)


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> None:
    """Take a member out of the customer (never its last owner) and sign them out
    everywhere: their sessions are deleted in the same transaction, so the next request
    of any of their browsers is anonymous. Removing one already gone does nothing."""
    locked = _memberships_locked(membership.customer_id)
    current = next((m for m in locked if m.pk == membership.pk), None)
    if current is None:
        return
    _refuse_last_owner(locked, current)
    audit_record(
        actor=actor,
        action=AuditAction.MEMBERSHIP_REMOVE,
        target=current,
        customer=current.customer_id,
        changes={"user": [current.user.get_username(), None], "role": [current.role, None]},
    )
    current.delete()
    user_sessions_end(current.user)


@transaction.atomic
def membership_replace(
    *, membership: Membership, user: User, role: MemberRole, actor: Actor
) -> Membership:
    """Point an existing membership at `user` with `role`. The same user keeps it (only the
    role may change); another user means the old member is removed and the new one added,
    so the audit log shows who left and who joined rather than a user silently swapped."""
    customer = membership.customer
    if membership.user_id == user.pk:
        return membership_set(customer=customer, user=user, role=role, actor=actor)
    # The newcomer first, so replacing the last owner by another owner is allowed.
    added = membership_set(customer=customer, user=user, role=role, actor=actor)
    membership_remove(membership=membership, actor=actor)
    return added


def customer_two_factor_require(*, customer: Customer, required: bool, actor: Actor) -> Customer:
    """An owner makes every member sign in with a second factor (or stops doing so). Only
    one who uses it themselves may turn it on, so nobody locks the customer out blind;
    members without one are sent to set it up at their next page."""
    from fleet.selectors import user_has_second_factor

    if required and (actor.user is None or not user_has_second_factor(actor.user)):
        raise NotAllowed(
            "Turn on two-factor sign-in for your own account first (Two-factor, at the top)."
        )
    customer.require_two_factor = required
    return customer_update(customer=customer, actor=actor, fields=["require_two_factor"])

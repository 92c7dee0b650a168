from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from fleet.choices import AuditAction, MemberRole
from fleet.models import Customer, Membership
from fleet.services.audit import Actor, audit_record, model_changes

CUSTOMER_EDITABLE = [
    "name",
    "slug",
    "contact_email",
    "notes",
    "job_max_runtime_seconds",
    "stale_cleanup_days",
]


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
def customer_update(*, customer: Customer, actor: Actor) -> Customer:
    """Save edits already set on `customer` (by a form), recording what changed."""
    before = Customer.objects.select_for_update().get(pk=customer.pk)
    changes = model_changes(before, customer, CUSTOMER_EDITABLE)
    if "stale_cleanup_days" in changes:
        # Turned on, or its days changed: it acts a day later, so the portal lists what it
        # will do first (an agent already past the new window is not taken at once).
        customer.stale_cleanup_since = timezone.now() if customer.stale_cleanup_days else None
    if changes:
        customer.save(update_fields=[*changes, "stale_cleanup_since"])
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
    return customer_update(customer=customer, actor=actor)


@transaction.atomic
def membership_set(*, customer: Customer, user: User, role: MemberRole, actor: Actor) -> Membership:
    """Add `user` to `customer` with `role`, or change the role they have."""
    membership, created = Membership.objects.select_for_update().get_or_create(
        customer=customer, user=user, defaults={"role": role}
    )
    if created or membership.role != role:
        old_role = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit_record(
            actor=actor,
            action=AuditAction.MEMBERSHIP_CREATE if created else AuditAction.MEMBERSHIP_UPDATE,
            target=membership,
            customer=customer,
            changes={"role": [None if created else old_role, str(role)]},
        )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> None:
    audit_record(
        actor=actor,
        action=AuditAction.MEMBERSHIP_REMOVE,
        target=membership,
        customer=membership.customer,
        changes={"user": [membership.user.get_username(), None], "role": [membership.role, None]},
    )
    membership.delete()


@transaction.atomic
def membership_replace(
    *, membership: Membership, user: User, role: MemberRole, actor: Actor
) -> Membership:
    """Point an existing membership at `user` with `role`. The same user keeps it (only the
    role may change); another user means the old member is removed and the new one added,
    so the audit log shows who left and who joined rather than a user silently swapped."""
    customer = membership.customer
    if membership.user_id != user.pk:
        membership_remove(membership=membership, actor=actor)
    return membership_set(customer=customer, user=user, role=role, actor=actor)

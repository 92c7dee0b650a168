"""Sign-in through a customer's OpenID Connect provider (portal/sso.py speaks the
protocol): the identity the provider vouches for becomes a user of ours, and a member of
that customer at the role its SSO set-up names, the first time it signs in."""

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from fleet.choices import AuditAction, MemberRole
from fleet.models import Customer, CustomerSso, Membership, SsoIdentity
from fleet.services.audit import Actor, audit_record
from fleet.services.customers import membership_set


def _free_username(wanted: str) -> str:
    """`wanted`, or it with a number: never an existing user's name."""
    base = wanted[:140]
    name, n = base, 1
    while User.objects.filter(username=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


@transaction.atomic
def sso_sign_in(*, customer: Customer, subject: str, email: str, ip_address: str | None) -> User:
    """The user the customer's provider signed in as `subject`: the one it signed in
    before, or a new user (no password: they sign in through the provider only) made a
    member at the SSO set-up's default role. Matched by subject, never by email, so a
    provider cannot take over a user it did not make. A member who left the customer is
    made a member again only by signing in anew (remove them at the provider)."""
    identity = (
        SsoIdentity.objects.select_for_update()
        .select_related("user")
        .filter(customer=customer, subject=subject)
        .first()
    )
    if identity is None:
        user = User(username=_free_username(f"{email or subject}+{customer.slug}"), email=email)
        user.set_unusable_password()
        user.save()
        identity = SsoIdentity.objects.create(
            customer=customer, subject=subject, user=user, email=email
        )
    user = identity.user
    SsoIdentity.objects.filter(pk=identity.pk).update(last_sign_in_at=timezone.now(), email=email)
    if not Membership.objects.filter(customer=customer, user=user).exists():
        membership_set(
            customer=customer,
            user=user,
            role=MemberRole(customer.sso.default_role),
            actor=Actor(user=user, label=f"{user.username} (SSO)"[:200], ip_address=ip_address),
        )
    return user


@transaction.atomic
def customer_sso_set(
    *,
    customer: Customer,
    issuer: str,
    client_id: str,
    client_secret: str,
    default_role: MemberRole,
    enabled: bool,
    actor: Actor,
) -> CustomerSso:
    """Set up (or change) a customer's OpenID Connect provider; an empty `client_secret`
    keeps the one stored. Audited on the customer, the secret never in the log."""
    sso = CustomerSso.objects.select_for_update().filter(customer=customer).first()
    before = (
        {
            "issuer": sso.issuer,
            "client_id": sso.client_id,
            "default_role": sso.default_role,
            "enabled": sso.enabled,
        }
        if sso
        else {}
    )
    if sso is None:
        sso = CustomerSso(customer=customer)
    sso.issuer, sso.client_id = issuer, client_id
    sso.default_role, sso.enabled = default_role, enabled
    if client_secret:
        sso.client_secret = client_secret
    sso.save()
    after = {
        "issuer": issuer,
        "client_id": client_id,
        "default_role": str(default_role),
        "enabled": enabled,
    }
    changes = {
        f"sso_{name}": [before.get(name), value]
        for name, value in after.items()
        if before.get(name) != value
    }
    if client_secret:
        changes["sso_client_secret"] = ["(set)" if before else None, "(new)"]
    audit_record(
        actor=actor,
        action=AuditAction.CUSTOMER_UPDATE,
        target=customer,
        customer=customer,
        changes=changes,
    )
    return sso

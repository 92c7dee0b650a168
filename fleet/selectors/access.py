"""Who may act for a customer (memberships, API keys), and what was done (the audit trail)."""

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from fleet.errors import NotFound
from fleet.models import AuditEvent, Customer, CustomerApiKey, Membership
from fleet.secrets import SecretKind, secret_digest, secret_is_well_formed, secret_matches


def membership_list(user: User | AnonymousUser) -> QuerySet[Membership]:
    if not user.is_authenticated:
        return Membership.objects.none()
    return Membership.objects.filter(user=user).select_related("customer")


def api_key_for_secret(secret: str) -> CustomerApiKey | None:
    if not secret_is_well_formed(secret, SecretKind.API_KEY):
        return None
    key = (
        CustomerApiKey.objects.select_related("customer")
        .filter(digest=secret_digest(secret), revoked_at__isnull=True)
        .first()
    )
    return key if key and secret_matches(secret, key.digest) else None


def api_key_list(customer: Customer | int) -> QuerySet[CustomerApiKey]:
    return CustomerApiKey.objects.filter(customer=customer).select_related("created_by")


def api_key_get(customer: Customer | int, key_id: int) -> CustomerApiKey:
    key = CustomerApiKey.objects.filter(customer=customer, pk=key_id).first()
    if key is None:
        raise NotFound("No such API key.")
    return key


def audit_list(customer: Customer | int) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(customer=customer).order_by("-at", "-id")

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from fleet import policy
from fleet.choices import ApiKeyScope, AuditAction
from fleet.errors import ApiKeyLimitReached, InvalidInput
from fleet.models import Customer, CustomerApiKey
from fleet.models.api_keys import api_key_scopes_all
from fleet.secrets import SecretKind, secret_mint
from fleet.services.audit import Actor, audit_record


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", errors=[{"field": field, "message": message}])


def api_key_scopes_clean(scopes: Iterable[str] | None) -> list[str]:
    """Known scopes, each once, in ApiKeyScope's order; None means every scope."""
    if scopes is None:
        return api_key_scopes_all()
    chosen = set(scopes)
    unknown = chosen - set(ApiKeyScope.values)
    if unknown:
        raise _invalid("scopes", f"Unknown scopes: {', '.join(sorted(unknown))}.")
    if not chosen:
        raise _invalid("scopes", "Choose at least one scope.")
    return [scope for scope in ApiKeyScope.values if scope in chosen]


@transaction.atomic
def api_key_mint(
    *,
    customer: Customer,
    name: str,
    actor: Actor,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[CustomerApiKey, str]:
    """A key for the customer's automation holding `scopes` (every scope when None), valid
    until `expires_at` (for ever when None); the plaintext is returned once. A customer
    holds at most API_KEYS_PER_CUSTOMER_MAX active (unrevoked, unexpired) keys."""
    chosen = api_key_scopes_clean(scopes)
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise _invalid("expires_at", "The expiry must be in the future.")
    # At most API_KEYS_PER_CUSTOMER_MAX active keys, counted under the customer's row lock.
    Customer.objects.select_for_update().filter(pk=customer.pk).first()
    active = (
        CustomerApiKey.objects.filter(customer=customer, revoked_at__isnull=True)
        .exclude(expires_at__lte=now)
        .count()
    )
    if active >= policy.API_KEYS_PER_CUSTOMER_MAX:
        raise ApiKeyLimitReached(
            f"{customer.name} already has {active} active API keys, the most it may have. "
            "Revoke keys no longer in use, then mint again.",
            active_keys=active,
            active_keys_max=policy.API_KEYS_PER_CUSTOMER_MAX,
        )
    minted = secret_mint(SecretKind.API_KEY)
    key = CustomerApiKey.objects.create(
        customer=customer,
        name=name,
        display_prefix=minted.display_prefix,
        digest=minted.digest,
        scopes=chosen,
        expires_at=expires_at,
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action=AuditAction.API_KEY_MINT,
        target=key,
        customer=customer.pk,
        changes={
            "name": [None, name],
            "scopes": [None, chosen],
            "expires_at": [None, expires_at.isoformat() if expires_at else None],
        },
    )
    return key, minted.plaintext


@transaction.atomic
def api_key_revoke(*, key: CustomerApiKey, actor: Actor) -> bool:
    updated = CustomerApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if updated:
        audit_record(
            actor=actor, action=AuditAction.API_KEY_REVOKE, target=key, customer=key.customer_id
        )
    return bool(updated)

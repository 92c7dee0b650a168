from django.db import transaction
from django.utils import timezone

from fleet.choices import AuditAction
from fleet.models import Customer, CustomerApiKey
from fleet.secrets import SecretKind, secret_mint
from fleet.services.audit import Actor, audit_record


@transaction.atomic
def api_key_mint(*, customer: Customer, name: str, actor: Actor) -> tuple[CustomerApiKey, str]:
    """A key for the customer's automation; the plaintext is returned once."""
    minted = secret_mint(SecretKind.API_KEY)
    key = CustomerApiKey.objects.create(
        customer=customer,
        name=name,
        display_prefix=minted.display_prefix,
        digest=minted.digest,
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action=AuditAction.API_KEY_MINT,
        target=key,
        customer=customer.pk,
        changes={"name": [None, name]},
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

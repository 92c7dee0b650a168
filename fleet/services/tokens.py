from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleet.choices import TokenStatus
from fleet.models import ActivationToken, Customer
from fleet.secrets import SecretKind, secret_mint
from fleet.services.audit import SYSTEM, Actor, audit_record


def token_expire_overdue(*, now: datetime | None = None) -> int:
    """One UPDATE: outstanding tokens past their expiry become expired."""
    return ActivationToken.objects.filter(
        status=TokenStatus.OUTSTANDING, expires_at__lte=now or timezone.now()
    ).update(status=TokenStatus.EXPIRED)


@transaction.atomic
def token_revoke(*, token: ActivationToken, actor: Actor = SYSTEM) -> bool:
    """Revoke an outstanding token; a redeemed, expired or revoked one is left as it is."""
    updated = ActivationToken.objects.filter(pk=token.pk, status=TokenStatus.OUTSTANDING).update(
        status=TokenStatus.REVOKED, revoked_at=timezone.now()
    )
    if updated:
        token.refresh_from_db()
        audit_record(
            actor=actor,
            action="token.revoke",
            target=token,
            customer=token.customer,
            changes={"status": [TokenStatus.OUTSTANDING, TokenStatus.REVOKED]},
        )
    return bool(updated)


@transaction.atomic
def token_mint(
    *,
    customer: Customer,
    role: str = "",
    expires_in: timedelta | None = None,
    note: str = "",
    actor: Actor = SYSTEM,
) -> tuple[ActivationToken, str]:
    """A new single-use token; the plaintext is returned once and never stored."""
    minted = secret_mint(SecretKind.ACTIVATION_TOKEN)
    token = ActivationToken.objects.create(
        customer=customer,
        display_prefix=minted.display_prefix,
        digest=minted.digest,
        role=role,
        note=note,
        expires_at=timezone.now() + (expires_in or settings.ACTIVATION_TOKEN_DEFAULT_TTL),
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action="token.mint",
        target=token,
        customer=customer,
        changes={"role": [None, role], "expires_at": [None, token.expires_at.isoformat()]},
    )
    return token, minted.plaintext

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from fleet import policy
from fleet.choices import AuditAction, TokenStatus
from fleet.errors import SeatLimitReached, TokenLimitReached
from fleet.labels import labels_check
from fleet.models import ActivationToken, Customer, License
from fleet.models.tokens import EXPIRE, REVOKE
from fleet.secrets import SecretKind, secret_mint
from fleet.selectors import license_seats
from fleet.services.audit import SYSTEM, Actor, audit_record, audit_record_rows
from fleet.services.licenses import license_require_admitting

EXPIRE_CHUNK = 5000


def token_expire_overdue(*, now: datetime | None = None) -> int:
    """Outstanding tokens past their expiry become expired, each with an audit row; in
    chunks of 5,000, three statements each."""
    now = now or timezone.now()
    expired = 0
    while True:
        with transaction.atomic():
            overdue = list(
                ActivationToken.objects.select_for_update(skip_locked=True)
                .overdue(now)
                .values_list("pk", flat=True)
                .order_by()[:EXPIRE_CHUNK]
            )
            if not overdue:
                return expired
            ActivationToken.objects.filter(pk__in=overdue).transition(EXPIRE)
            audit_record_rows(
                actor=SYSTEM,
                action=AuditAction.TOKEN_EXPIRE,
                model=ActivationToken,
                ids=overdue,
                repr_sql="display_prefix",
                changes={"status": [TokenStatus.OUTSTANDING, TokenStatus.EXPIRED]},
            )
        expired += len(overdue)
        if len(overdue) < EXPIRE_CHUNK:
            return expired


@transaction.atomic
def token_revoke(*, token: ActivationToken, actor: Actor) -> bool:
    """Revoke an outstanding token; a redeemed, expired or revoked one is left as it is."""
    updated = ActivationToken.objects.filter(pk=token.pk).transition(
        REVOKE, revoked_at=timezone.now()
    )
    if updated:
        token.refresh_from_db()
        audit_record(
            actor=actor,
            action=AuditAction.TOKEN_REVOKE,
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
    ephemeral: bool = False,
    labels: dict[str, str] | None = None,
    actor: Actor,
) -> tuple[ActivationToken, str]:
    """A new single-use token; the plaintext is returned once and never stored."""
    minted = secret_mint(SecretKind.ACTIVATION_TOKEN)
    token = ActivationToken.objects.create(
        customer=customer,
        display_prefix=minted.display_prefix,
        digest=minted.digest,
        role=role,
        note=note,
        ephemeral=ephemeral,
        labels=labels_check(labels or {}),
        expires_at=timezone.now() + (expires_in or policy.TOKEN_LIFETIME),
        created_by=actor.user,
    )
    audit_record(
        actor=actor,
        action=AuditAction.TOKEN_MINT,
        target=token,
        customer=customer.pk,
        changes={
            "role": [None, role],
            "expires_at": [None, token.expires_at.isoformat()],
            **({"ephemeral": [None, True]} if ephemeral else {}),
        },
    )
    return token, minted.plaintext


@transaction.atomic
def tokens_mint_for_seats(
    *,
    customer: Customer,
    count: int,
    role: str = "",
    expires_in: timedelta | None = None,
    note: str = "",
    ephemeral: bool = False,
    labels: dict[str, str] | None = None,
    actor: Actor,
) -> list[tuple[ActivationToken, str]]:
    """Mint `count` tokens, one per intended agent, while the license has that many free
    seats and the customer stays within its outstanding tokens (OUTSTANDING_TOKENS_PER_SEAT
    per seat; the license row is locked while they are counted, so concurrent mints cannot
    pass it together). Outstanding tokens reserve nothing: the seat is taken at activation."""
    now = timezone.now()
    license_require_admitting(
        License.objects.select_for_update().filter(customer=customer, is_current=True).first(),
        now=now,
    )
    seats = license_seats(customer)
    if count > seats.free:
        raise SeatLimitReached(
            f"{seats.free} of {seats.max_agents} seats are free; {count} token(s) asked for. "
            "Decommission agents or raise max_agents first.",
            **seats.as_dict(),
        )
    limit = policy.OUTSTANDING_TOKENS_PER_SEAT * seats.max_agents
    if seats.outstanding_tokens + count > limit:
        raise TokenLimitReached(
            f"{seats.outstanding_tokens} token(s) are outstanding and {count} more asked for; "
            f"at most {limit} may be outstanding at once ({policy.OUTSTANDING_TOKENS_PER_SEAT} "
            f"per seat of {seats.max_agents}). Revoke unused tokens or let them expire first.",
            outstanding_tokens=seats.outstanding_tokens,
            outstanding_tokens_max=limit,
        )
    return [
        token_mint(
            customer=customer,
            role=role,
            expires_in=expires_in,
            note=note,
            ephemeral=ephemeral,
            labels=labels,
            actor=actor,
        )
        for _ in range(count)
    ]

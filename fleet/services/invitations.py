"""Invitations: an owner invites an address at a role; the link in the email works once,
until it expires, and makes whoever holds it a member (a new account, or the signed-in one
with that address). The token is stored as its digest only."""

import smtplib
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from fleet import policy
from fleet.choices import AuditAction, MemberRole
from fleet.errors import (
    AlreadyMember,
    InvalidInput,
    InvitationNotSent,
    InvitationUnusable,
    NotAllowed,
)
from fleet.models import Customer, Invitation, Membership
from fleet.secrets import SecretKind, secret_mint
from fleet.services.audit import Actor, audit_record
from fleet.services.customers import membership_set


def invitation_email_normalize(email: str) -> str:
    """An address as invitations keep and compare it: trimmed and lowercased."""
    return email.strip().lower()


@dataclass(frozen=True)
class SentInvitation:
    invitation: Invitation
    link: str  # in the email only; never stored


@transaction.atomic
def invitation_send(
    *, customer: Customer, email: str, role: MemberRole, actor: Actor
) -> SentInvitation:
    """Invite `email` to `customer` at `role` and email the link. Sending again to the same
    address withdraws the earlier link. The mail is sent inside the transaction (not
    queued: the task would carry the token through the broker), so a refused mail saves
    nothing and the owner is told."""
    address = invitation_email_normalize(email)
    try:
        validate_email(address)
    except ValidationError as exc:
        raise InvalidInput(
            "Enter a valid email address.", errors=[{"field": "email", "message": "invalid"}]
        ) from exc
    if Membership.objects.filter(customer=customer, user__email__iexact=address).exists():
        raise AlreadyMember(f"{address} is already a member of {customer}: change their role.")
    now = timezone.now()
    replaced = list(
        Invitation.objects.select_for_update()
        .filter(Invitation.OPEN, customer=customer, email=address)
        .values_list("pk", flat=True)
    )
    Invitation.objects.filter(pk__in=replaced).update(revoked_at=now)
    minted = secret_mint(SecretKind.INVITATION)
    invitation = Invitation.objects.create(
        customer=customer,
        email=address,
        role=role,
        digest=minted.digest,
        invited_by=actor.user,
        expires_at=now + policy.INVITATION_LIFETIME,
    )
    audit_record(
        actor=actor,
        action=AuditAction.MEMBERSHIP_INVITE,
        target=invitation,
        customer=customer,
        changes={
            "email": [None, address],
            "role": [None, str(role)],
            **({"replaces": [replaced, None]} if replaced else {}),
        },
    )
    path = reverse("portal:invitation_open", args=[minted.plaintext])
    link = settings.PORTAL_URL.rstrip("/") + path
    body = render_to_string(
        "members/invitation_email.txt",
        {
            "inviter": actor.label,
            "customer": customer,
            "role": MemberRole(role).label.lower(),
            "expires": invitation.expires_at,
            "link": link,
        },
    )
    try:
        send_mail(f"[Agentina] Join {customer.name}"[:200], body, None, [address])
    except (OSError, smtplib.SMTPException) as exc:
        raise InvitationNotSent(
            f"The invitation email to {address} could not be sent ({exc.__class__.__name__}); "
            "nothing was saved. Try again."
        ) from exc
    return SentInvitation(invitation, link)


@transaction.atomic
def invitation_withdraw(*, invitation: Invitation, actor: Actor) -> bool:
    """Withdraw an open invitation: its link stops working. False when it was accepted or
    withdrawn already (nothing changes)."""
    changed = Invitation.objects.filter(Invitation.OPEN, pk=invitation.pk).update(
        revoked_at=timezone.now()
    )
    if changed:
        audit_record(
            actor=actor,
            action=AuditAction.MEMBERSHIP_INVITE_WITHDRAW,
            target=invitation,
            customer=invitation.customer_id,
            changes={"email": [invitation.email, None]},
        )
    return bool(changed)


def invitation_refusal(invitation: Invitation) -> str:
    """Why the link no longer works, in words, or "" while it does."""
    state = invitation.state(timezone.now())
    return {
        "accepted": "This invitation was used already: each link works once.",
        "withdrawn": "This invitation was withdrawn (or replaced by a newer one).",
        "expired": "This invitation has expired.",
    }.get(state, "")


def _claim(invitation_id: int, user: User) -> Invitation:
    """Mark the invitation accepted by `user`: a conditional update, so of two acceptances
    at once exactly one gets it."""
    now = timezone.now()
    claimed = Invitation.objects.filter(
        Invitation.OPEN, pk=invitation_id, expires_at__gt=now
    ).update(accepted_at=now, accepted_by=user)
    invitation = Invitation.objects.select_related("customer").get(pk=invitation_id)
    if not claimed:
        raise InvitationUnusable(
            invitation_refusal(invitation) or "This invitation cannot be used."
        )
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User, actor: Actor) -> Membership:
    """The signed-in `user` accepts: they must have the invited address. They become a
    member at the invited role (one already a member keeps the role they have)."""
    if invitation_email_normalize(user.email) != invitation.email:
        raise NotAllowed(
            "This invitation is for another email address: sign in with the account that "
            "has it, or ask for an invitation to yours."
        )
    claimed = _claim(invitation.pk, user)
    existing = Membership.objects.filter(customer=claimed.customer, user=user).first()
    membership = existing or membership_set(
        customer=claimed.customer, user=user, role=MemberRole(claimed.role), actor=actor
    )
    audit_record(
        actor=actor,
        action=AuditAction.MEMBERSHIP_INVITE_ACCEPT,
        target=claimed,
        customer=claimed.customer_id,
        changes={"user": [None, user.get_username()]},
    )
    return membership


@transaction.atomic
def invitation_accept_new_user(
    *, invitation: Invitation, username: str, password: str, actor: Actor
) -> User:
    """Someone without an account accepts: the account is created with the invited
    address and the password they chose (already validated), and joins. An address that
    has an account must sign in to accept instead."""
    if User.objects.filter(email__iexact=invitation.email).exists():
        raise NotAllowed("An account with this email address exists: sign in to accept.")
    try:
        with transaction.atomic():
            user = User.objects.create_user(username, email=invitation.email, password=password)
    except IntegrityError as exc:
        raise InvalidInput(
            "That username is taken.", errors=[{"field": "username", "message": "taken"}]
        ) from exc
    joined = Actor(user=user, label=user.get_username(), ip_address=actor.ip_address)
    invitation_accept(invitation=invitation, user=user, actor=joined)
    return user

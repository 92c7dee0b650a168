"""Who belongs to a customer and who is asked to join; what a user's sign-in needs (a
second factor, and whether one is required of them)."""

from django.contrib.auth.models import User
from django.db.models import Case, Exists, IntegerField, OuterRef, QuerySet, Value, When
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from fleet.choices import MemberRole
from fleet.errors import NotFound
from fleet.models import Customer, Invitation, Membership
from fleet.secrets import SecretKind, secret_digest, secret_is_well_formed, secret_matches

ROLE_RANK = Case(
    When(role=MemberRole.OWNER, then=Value(0)),
    When(role=MemberRole.ADMIN, then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)


def member_list(customer: Customer | int) -> QuerySet[Membership]:
    """The customer's members, owners first, each with `two_factor` (whether they sign in
    with an authenticator app): one query however many there are."""
    return (
        Membership.objects.filter(customer=customer)
        .select_related("user")
        .annotate(
            rank=ROLE_RANK,
            two_factor=Exists(
                TOTPDevice.objects.filter(user_id=OuterRef("user_id"), confirmed=True)
            ),
        )
        .order_by("rank", "user__username", "pk")
    )


def membership_get(customer: Customer | int, membership_id: int) -> Membership:
    membership = (
        Membership.objects.filter(customer=customer, pk=membership_id)
        .select_related("user", "customer")
        .first()
    )
    if membership is None:
        raise NotFound("No such member.")
    return membership


def invitation_list(customer: Customer | int) -> QuerySet[Invitation]:
    """Invitations not yet accepted or withdrawn (expired ones too: they can be sent again)."""
    return Invitation.objects.filter(Invitation.OPEN, customer=customer).select_related(
        "invited_by"
    )


def invitation_get(customer: Customer | int, invitation_id: int) -> Invitation:
    invitation = Invitation.objects.filter(customer=customer, pk=invitation_id).first()
    if invitation is None:
        raise NotFound("No such invitation.")
    return invitation


def invitation_for_token(token: str) -> Invitation | None:
    """The invitation a link's token names, whatever its state; None for a token that is
    malformed (refused without a query) or unknown."""
    if not secret_is_well_formed(token, SecretKind.INVITATION):
        return None
    invitation = (
        Invitation.objects.select_related("customer", "invited_by")
        .filter(digest=secret_digest(token))
        .first()
    )
    return invitation if invitation and secret_matches(token, invitation.digest) else None


def user_has_second_factor(user: User) -> bool:
    """Whether the user signs in with an authenticator app (a confirmed TOTP device)."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def recovery_codes_left(user: User) -> int:
    device = StaticDevice.objects.filter(user=user, confirmed=True).first()
    return device.token_set.count() if device else 0


def two_factor_requirement(user: User) -> str:
    """Why this user must sign in with a second factor, in words, or "" when it is their
    choice: staff (STAFF_REQUIRE_2FA), or a member of a customer that requires it."""
    from django.conf import settings

    if user.is_staff and settings.STAFF_REQUIRE_2FA:
        return "Agentina staff sign in with a second factor."
    names = list(
        Membership.objects.filter(user=user, customer__require_two_factor=True).values_list(
            "customer__name", flat=True
        )
    )
    if names:
        return f"{', '.join(names)} requires every member to sign in with a second factor."
    return ""


def account_exists_for_email(email: str) -> bool:
    """Whether some account has this address (an invitation to it asks to sign in)."""
    return User.objects.filter(email__iexact=email).exists()

"""A user's own sign-in: two-factor with an authenticator app (django-otp's TOTPDevice)
and recovery codes (its StaticDevice, each code stored as a digest and spent when used),
and the record of a password reset.

Wrong codes are counted by django-otp's throttling (each one doubles the wait before the
next try). That count must survive the refusal, so these services decide inside their
transaction and raise only after it has committed."""

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from fleet import policy
from fleet.choices import AuditAction
from fleet.errors import NotAllowed, NotFound, SecondFactorRefused
from fleet.secrets import recovery_code_digest, recovery_code_mint
from fleet.selectors import two_factor_requirement, user_has_second_factor
from fleet.services.audit import Actor, audit_record
from fleet.sessions import user_sessions_end

AUTHENTICATOR_NAME = "Authenticator app"
RECOVERY_NAME = "Recovery codes"


def _totp_shaped(code: str) -> str | None:
    """The code's digits when it reads as an authenticator code (6 digits, spaces
    allowed), else None: then it is taken as a recovery code."""
    digits = "".join(code.split())
    return digits if digits.isdigit() and len(digits) == 6 else None


def _wait_seconds(device: Device | None) -> int:
    """How long django-otp's throttling makes the next try wait (0: it may go now)."""
    if device is None:
        return 0
    allowed, data = device.verify_is_allowed()
    if allowed or not data or not data.get("locked_until"):
        return 0
    return max(1, int((data["locked_until"] - timezone.now()).total_seconds()) + 1)


def _refusal(waited: int, device: Device | None) -> str:
    """Why a code was refused: the wait it came too early for, or a wrong (or spent) code."""
    if waited:
        return f"Too many wrong codes: wait {waited} seconds, then try again."
    wait = _wait_seconds(device)
    later = f" Wait {wait} second{'s' if wait > 1 else ''} before the next try." if wait else ""
    return f"That code is not right (or was used already).{later}"


def two_factor_setup_device(user: User) -> TOTPDevice:
    """The authenticator the user is setting up: unconfirmed until a code from it checks
    out, and the same one across reloads, so the QR code on the page stays good."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    return device or TOTPDevice.objects.create(user=user, name=AUTHENTICATOR_NAME, confirmed=False)


def _recovery_codes_issue(user: User) -> list[str]:
    """New recovery codes in place of any the user had; returned once, stored as digests."""
    device, _ = StaticDevice.objects.get_or_create(
        user=user, name=RECOVERY_NAME, defaults={"confirmed": True}
    )
    device.token_set.all().delete()
    codes = [recovery_code_mint() for _ in range(policy.RECOVERY_CODES)]
    StaticToken.objects.bulk_create(
        StaticToken(device=device, token=recovery_code_digest(code)) for code in codes
    )
    return codes


def two_factor_enable(
    *, user: User, code: str, actor: Actor, keep_session: str | None = None
) -> tuple[TOTPDevice, list[str]]:
    """Turn two-factor on once the user proves their app has the key (a current code):
    the device is confirmed, recovery codes are issued (shown once, by the caller), and
    every other session of the user ends (one stolen before never gave a code)."""
    codes: list[str] = []
    with transaction.atomic():
        if user_has_second_factor(user):
            raise NotAllowed("Two-factor sign-in is on already.")
        device = (
            TOTPDevice.objects.select_for_update()
            .filter(user=user, confirmed=False)
            .order_by("pk")
            .first()
        )
        if device is None:
            raise NotFound("Open the Two-factor page again to set up your app.")
        digits = _totp_shaped(code)
        waited = _wait_seconds(device)
        verified = digits is not None and device.verify_token(digits)
        if verified:
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            TOTPDevice.objects.filter(user=user, confirmed=False).delete()
            codes = _recovery_codes_issue(user)
            user_sessions_end(user, keep=keep_session)
            audit_record(
                actor=actor, action=AuditAction.USER_TWO_FACTOR_ENABLE, target=user, customer=None
            )
    if not verified:
        raise SecondFactorRefused(_refusal(waited, device))
    return device, codes


def second_factor_verify(*, user: User, code: str, actor: Actor) -> Device:
    """The sign-in's second step: a current authenticator code, or a recovery code (which
    is spent). The device is locked while it checks, so one code never passes twice."""
    digits = _totp_shaped(code)
    with transaction.atomic():
        model: type[TOTPDevice] | type[StaticDevice] = (
            TOTPDevice if digits is not None else StaticDevice
        )
        device = model.objects.select_for_update().filter(user=user, confirmed=True).first()
        waited = _wait_seconds(device)
        token = digits if digits is not None else recovery_code_digest(code)
        verified = device is not None and device.verify_token(token)
        if verified and isinstance(device, StaticDevice):
            audit_record(
                actor=actor,
                action=AuditAction.USER_RECOVERY_CODE_USED,
                target=user,
                customer=None,
                changes={"recovery_codes_left": [None, device.token_set.count()]},
            )
    if not verified or device is None:
        raise SecondFactorRefused(_refusal(waited, device))
    return device


@transaction.atomic
def recovery_codes_replace(*, user: User, actor: Actor) -> list[str]:
    """New recovery codes; the old ones stop working."""
    if not user_has_second_factor(user):
        raise NotAllowed("Turn on two-factor sign-in first.")
    codes = _recovery_codes_issue(user)
    audit_record(actor=actor, action=AuditAction.USER_RECOVERY_CODES, target=user, customer=None)
    return codes


def two_factor_disable(*, user: User, code: str, actor: Actor) -> None:
    """Turn two-factor off, with a current code (or a recovery code) as proof; refused
    while it is required of the user (staff, or a customer that requires it)."""
    requirement = two_factor_requirement(user)
    if requirement:
        raise NotAllowed(f"Two-factor sign-in cannot be turned off: {requirement}")
    second_factor_verify(user=user, code=code, actor=actor)
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        audit_record(
            actor=actor, action=AuditAction.USER_TWO_FACTOR_DISABLE, target=user, customer=None
        )


@transaction.atomic
def password_reset_record(*, user: User, actor: Actor) -> None:
    """A password was set through an emailed reset link (Django checked the link and saved
    it): recorded, and every session of the account ends (whoever had it is out)."""
    audit_record(actor=actor, action=AuditAction.USER_PASSWORD_RESET, target=user, customer=None)
    user_sessions_end(user)

"""Self-service unlock: a user locked out of signing in (axes' lockout of their address, or
the delays of fleet/login_throttle.py) asks for a link by email and opens it to clear
their account's lockouts. The link is signed (it names the user and a random nonce),
expires after policy.LOGIN_UNLOCK_LIFETIME, is void once the password changes, and works
once: its nonce is spent in the shared cache, where the delays it clears live too.

Asking never says whether an account exists; each user gets at most
policy.LOGIN_UNLOCK_MAILS_PER_HOUR mails, whoever asks."""

import logging
import secrets
import smtplib
from urllib.parse import urljoin

from axes.utils import reset as axes_reset  # type: ignore[import-untyped]
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.cache import cache
from django.core.mail import send_mail
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from fleet import policy
from fleet.api.throttles import CACHE_FAULTS
from fleet.errors import ServiceUnavailable
from fleet.login_throttle import login_failures_clear

logger = logging.getLogger(__name__)

SALT = "fleet.login_unlock"
LOGIN_MAX_LENGTH = 254  # a username (150) or an email address (254)
USERS_PER_ASK_MAX = 5  # accounts sharing one email address that one ask mails


def _password_tag(user: AbstractBaseUser) -> str:
    """Changes when the password does, so a new password voids every unlock link."""
    return salted_hmac(SALT, user.password).hexdigest()[:16]


def login_unlock_link(user: AbstractBaseUser) -> str:
    """A signed, expiring, single-use link that clears `user`'s sign-in lockouts."""
    token = signing.dumps(
        {"u": user.pk, "n": secrets.token_urlsafe(16), "p": _password_tag(user)}, salt=SALT
    )
    path = reverse("portal:login_unlock_confirm", kwargs={"token": token})
    return urljoin(settings.PORTAL_URL, path)


def _mail_allowed(user: AbstractBaseUser) -> bool:
    """At most LOGIN_UNLOCK_MAILS_PER_HOUR mails to one user, however many ask."""
    key = f"login-unlock:mails:{user.pk}"
    try:
        cache.add(key, 0, timeout=3600)
        return cache.incr(key) <= policy.LOGIN_UNLOCK_MAILS_PER_HOUR
    except ValueError:
        return True
    except CACHE_FAULTS:
        return True


def login_unlock_request(*, login: str, address: str | None) -> int:
    """Mail an unlock link to each active account whose username, or email address, is
    `login` (and that has an email address). Returns how many mails were sent; callers
    answer the same either way."""
    login = login.replace("\x00", "").strip()[:LOGIN_MAX_LENGTH]
    if not login:
        return 0
    users = (
        get_user_model()
        .objects.filter(Q(username=login) | Q(email__iexact=login), is_active=True)
        .exclude(email="")
        .order_by("pk")[:USERS_PER_ASK_MAX]
    )
    sent = 0
    for user in users:
        if not _mail_allowed(user):
            continue
        minutes = int(policy.LOGIN_UNLOCK_LIFETIME.total_seconds() // 60)
        asked = f"{timezone.now():%Y-%m-%d %H:%M} UTC" + (f" from {address}" if address else "")
        body = (
            f"Someone asked to unlock signing in to Agentina for the account "
            f'"{user.get_username()}" ({asked}).\n\n'
            "Signing in is paused for a while after repeated wrong passwords. If it was you, "
            f"open this link to unlock it now (it works once, within {minutes} minutes):\n\n"
            f"{login_unlock_link(user)}\n\n"
            "If it was not you, ignore this mail: nothing was changed, and whoever is "
            "guessing the password stays slowed down. Consider a longer password.\n"
        )
        try:
            send_mail(
                "Unlock signing in to Agentina",
                body,
                settings.DEFAULT_FROM_EMAIL,
                [user.email],
            )
        except (OSError, smtplib.SMTPException):
            logger.warning("could not send the unlock mail to user %s", user.pk, exc_info=True)
            continue
        sent += 1
        logger.info("unlock link mailed to user %s (asked from %s)", user.pk, address)
    return sent


def login_unlock_redeem(*, token: str, address: str | None) -> AbstractBaseUser | None:
    """Clear the lockouts of the user the link names: axes' records of their username at
    every address, and the delays on their account. None when the link is forged, expired,
    already used, or the password changed since it was sent."""
    try:
        data = signing.loads(
            token, salt=SALT, max_age=int(policy.LOGIN_UNLOCK_LIFETIME.total_seconds())
        )
        user_id, nonce, tag = data["u"], str(data["n"]), str(data["p"])
    except (signing.BadSignature, KeyError, TypeError):
        return None
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or not constant_time_compare(tag, _password_tag(user)):
        return None
    try:
        first_use = cache.add(
            f"login-unlock:spent:{nonce}",
            1,
            timeout=int(policy.LOGIN_UNLOCK_LIFETIME.total_seconds()) + 60,
        )
    except CACHE_FAULTS as exc:
        raise ServiceUnavailable("The unlock cannot be checked right now; try again.") from exc
    if not first_use:
        return None
    # Axes' lockout of the address the link was opened from: a stranger's locked-out
    # addresses stay locked out. The account's delay ends for everyone (and the browser
    # that opened the link is known from now on: portal/views/lockout.py).
    if address:
        axes_reset(ip=address, username=user.get_username())
    else:
        axes_reset(username=user.get_username())
    login_failures_clear(user.get_username())
    logger.info("sign-in unlocked by email link for user %s (from %s)", user.pk, address)
    return user

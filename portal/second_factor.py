"""The second step of signing in, and who must take it.

After the password, a user with an authenticator app is signed in only halfway: the
session is marked pending (at `user_logged_in`, whichever login form it was: the portal's
or the admin's), and `second_factor_gate` lets it reach nothing but the code page and
sign-out until a code checks out. Staff who must use two-factor (STAFF_REQUIRE_2FA) and
have none are sent to set it up first, on the portal and the admin alike. Members of a
customer that requires it are sent there by `member_view`, which has their memberships
in hand already. The steady path costs no query: a session flag, and `is_staff`."""

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import django_otp
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django_otp.models import Device

from fleet.selectors import user_has_second_factor

SESSION_PENDING = "second_factor_pending"
# Never sessions' business: the API and /metrics authenticate by bearer token.
OPEN_PREFIXES = ("/api/", "/metrics", "/static/")


@receiver(user_logged_in, dispatch_uid="portal.second_factor_pending_mark")
def second_factor_pending_mark(
    sender: object, request: HttpRequest | None, user: AbstractBaseUser, **kwargs: Any
) -> None:
    session = getattr(request, "session", None)
    if session is not None and user_has_second_factor(user):  # type: ignore[arg-type]
        session[SESSION_PENDING] = True


def user_is_verified(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Signed in with the second factor in this session (django-otp's middleware says)."""
    return getattr(user, "otp_device", None) is not None


def second_factor_done(request: HttpRequest, device: Device) -> None:
    """The code checked out: the session is whole, under a new key."""
    django_otp.login(request, device)
    request.session.pop(SESSION_PENDING, None)
    request.session.cycle_key()


def with_next(url: str, request: HttpRequest) -> str:
    """`url` with the page asked for as `next` (GETs only: a POST cannot be replayed)."""
    if request.method != "GET":
        return url
    return f"{url}?{urlencode({'next': request.get_full_path()})}"


def redirect_to(url: str, request: HttpRequest) -> HttpResponse:
    """Off to `url`; an htmx request (a poll) loads it as a page, never swaps it in."""
    if getattr(request, "htmx", False):
        return HttpResponse(status=401, headers={"HX-Redirect": url})
    return redirect(url)


def _gate(request: HttpRequest) -> str | None:
    """Where this request must go first, or None."""
    path = request.path
    if path.startswith(OPEN_PREFIXES):
        return None
    user = request.user
    if not user.is_authenticated or path in (reverse("portal:logout"), reverse("admin:logout")):
        return None
    verify, setup = reverse("portal:second_factor"), reverse("portal:two_factor")
    if request.session.get(SESSION_PENDING):
        return None if path == verify else verify
    if user.is_staff and settings.STAFF_REQUIRE_2FA and not user_is_verified(user):
        return None if path in (verify, setup) else setup
    return None


def second_factor_gate(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        target = _gate(request)
        if target is not None:
            return redirect_to(with_next(target, request), request)
        return get_response(request)

    return middleware

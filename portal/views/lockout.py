"""Signing in under attack: the lockout page (for the portal's and the admin's sign-in
alike) and the self-service unlock by email."""

import math
from typing import Any

from axes.models import AccessAttempt  # type: ignore[import-untyped]
from django.conf import settings
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from fleet import policy
from fleet.errors import ServiceUnavailable
from fleet.http import client_address
from fleet.login_throttle import known_browser_mark
from fleet.services.login_unlock import (
    LOGIN_MAX_LENGTH,
    login_unlock_redeem,
    login_unlock_request,
)
from portal.limits import UnlockAskThrottle, too_many_requests

_unlock_asks = UnlockAskThrottle()


def locked_out(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the 429 for a sign-in refused by axes' lockout of this
    username at this address, or by a delay (request.login_delay, fleet/login_throttle.py).
    Says how long it lasts, and offers the unlock link; never "ask an owner"."""
    username = str((credentials or {}).get("username") or request.POST.get("username", ""))
    delay = getattr(request, "login_delay", None)
    cooloff = settings.AXES_COOLOFF_TIME
    if delay is not None:
        seconds = delay.seconds
    else:
        last = AccessAttempt.objects.filter(
            username=username, ip_address=client_address(request)
        ).aggregate(last=Max("attempt_time"))["last"]
        ends = (last or timezone.now()) + cooloff
        seconds = max(1, math.ceil((ends - timezone.now()).total_seconds()))
    response = render(
        request,
        "registration/locked_out.html",
        {
            "scope": delay.scope if delay else "pair",
            "seconds": seconds,
            "minutes_left": math.ceil(seconds / 60),
            "failure_limit": settings.AXES_FAILURE_LIMIT,
            "lockout_minutes": int(cooloff.total_seconds() // 60),
            "username": username.replace("\x00", "")[:LOGIN_MAX_LENGTH],
        },
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


@never_cache
@require_http_methods(["GET", "POST"])
def login_unlock(request: HttpRequest) -> HttpResponse:
    """Ask for an unlock link. The answer is the same whether or not an account matches."""
    lifetime_minutes = int(policy.LOGIN_UNLOCK_LIFETIME.total_seconds() // 60)
    if request.method == "POST":
        if not _unlock_asks.allow_request(request):
            return too_many_requests(
                request, _unlock_asks.wait(), what="Too many unlock links were asked for here"
            )
        login_unlock_request(login=request.POST.get("login", ""), address=client_address(request))
        return render(
            request,
            "registration/unlock.html",
            {"state": "sent", "lifetime_minutes": lifetime_minutes},
        )
    login = request.GET.get("username", "").replace("\x00", "").strip()[:LOGIN_MAX_LENGTH]
    return render(request, "registration/unlock.html", {"state": "ask", "login": login})


@never_cache
@require_http_methods(["GET", "POST"])
def login_unlock_confirm(request: HttpRequest, token: str) -> HttpResponse:
    """The emailed link: a GET shows a button (a mail scanner opening the link spends
    nothing), the POST unlocks."""
    if request.method != "POST":
        return render(request, "registration/unlock.html", {"state": "confirm"})
    try:
        user = login_unlock_redeem(token=token, address=client_address(request))
    except ServiceUnavailable as exc:
        return render(
            request,
            "registration/unlock.html",
            {"state": "unavailable", "error": exc.detail},
            status=503,
        )
    if user is None:
        return render(request, "registration/unlock.html", {"state": "invalid"}, status=410)
    known_browser_mark(request, user.get_username())
    return render(request, "registration/unlock.html", {"state": "done", "unlocked": user})

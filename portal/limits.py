"""Rate limits on the portal, counted in the shared cache as the API's are
(fleet/api/throttles.py: fixed windows, failing open when the cache is away): writes per
signed-in user, and unlock requests per client address."""

import math
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from fleet import policy
from fleet.api.throttles import FixedWindowThrottle, parse_rate

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class PortalWriteThrottle(FixedWindowThrottle):
    """PORTAL_WRITE_RATE writes per signed-in user, whatever the page or the customer."""

    scope = "portal_write"

    def rate(self) -> str:
        return settings.PORTAL_WRITE_RATE

    def ident(self, request: HttpRequest) -> str | None:
        user = request.user
        return f"user{user.pk}" if user.is_authenticated else None


class UnlockAskThrottle(FixedWindowThrottle):
    """Unlock requests from one client address, whichever account they name."""

    scope = "login_unlock"

    def rate(self) -> str:
        return policy.LOGIN_UNLOCK_ASKS_PER_ADDRESS


_PERIOD_WORDS = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


def rate_in_words(rate: str, things: str) -> str:
    """('60/min', 'changes') -> '60 changes a minute'."""
    count, period = parse_rate(rate)
    return f"{count} {things} {_PERIOD_WORDS.get(period, f'in {period} seconds')}"


def too_many_requests(request: HttpRequest, wait: float | None, *, what: str) -> HttpResponse:
    """The portal's 429: what was refused and when to try again. Sent to htmx too, which
    swaps it into the page's main region (base.html's htmx-config lets 429 swap)."""
    seconds = max(1, math.ceil(wait or 1))
    response = render(
        request,
        "429.html#message" if getattr(request, "htmx", False) else "429.html",
        {"seconds": seconds, "what": what},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    if getattr(request, "htmx", False):
        response["HX-Retarget"] = "main.page"
        response["HX-Reswap"] = "innerHTML"
    return response


def portal_write_limit(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Refuses a signed-in user's portal writes past PORTAL_WRITE_RATE with a 429 page,
    before any view runs (so nothing is done). Signing out is never refused."""
    throttle = PortalWriteThrottle()

    def middleware(request: HttpRequest) -> HttpResponse:
        if (
            request.method in WRITE_METHODS
            and request.path.startswith(reverse("portal:dashboard"))
            and request.path != reverse("portal:logout")
            and not throttle.allow_request(request)
        ):
            return too_many_requests(
                request,
                throttle.wait(),
                what=f"You made more than {rate_in_words(settings.PORTAL_WRITE_RATE, 'changes')}",
            )
        return get_response(request)

    return middleware

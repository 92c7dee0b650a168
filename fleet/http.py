"""What the web edges (API, portal, admin) read from a request: the client's address and
who acts. Services take an Actor and an address; they never see a request."""

import ipaddress

from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from fleet.services.audit import Actor


def client_address(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the address our NUM_PROXIES trusted proxies saw (never the whole,
    spoofable X-Forwarded-For header); anything that is not an IP address falls back to
    REMOTE_ADDR."""
    for candidate in (BaseThrottle().get_ident(request), request.META.get("REMOTE_ADDR")):
        try:
            return str(ipaddress.ip_address((candidate or "").strip()))
        except ValueError:
            continue
    return None


def request_actor(request: HttpRequest) -> Actor:
    """The signed-in person behind a portal or admin request, from where they are."""
    user = request.user if request.user.is_authenticated else None
    return Actor(
        user=user,
        label=user.get_username() if user else "anonymous",
        ip_address=client_address(request),
    )

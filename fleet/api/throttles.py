"""Per-client rate limits: a fixed window counted atomically in the shared cache, so every
web process agrees (use Redis as the cache when there are several). Rates are read from
settings.API_THROTTLE_RATES on each request, so a deployment can change them."""

import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from fleet.http import client_address

_PERIODS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'30/min' -> (30, 60): requests allowed per period of seconds."""
    count, _, unit = rate.partition("/")
    return int(count), _PERIODS[unit]


class FixedWindowThrottle(BaseThrottle):
    scope = ""

    def __init__(self) -> None:
        self._retry_after = threading.local()

    def ident(self, request: HttpRequest) -> str | None:
        return client_address(request)

    def allow_request(self, request: HttpRequest) -> bool:
        ident = self.ident(request)
        if ident is None:
            return True
        limit, period = parse_rate(settings.API_THROTTLE_RATES[self.scope])
        now = time.time()
        window = int(now // period)
        key = f"throttle:{self.scope}:{ident}:{window}"
        cache.add(key, 0, timeout=period + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # the key expired between add and incr
            cache.add(key, 1, timeout=period + 1)
            count = 1
        self._retry_after.value = (window + 1) * period - now
        return count <= limit

    def wait(self) -> float | None:
        return getattr(self._retry_after, "value", None)


class ClientAddressThrottle(FixedWindowThrottle):
    """Unauthenticated calls (activation), per client address."""

    scope = "activate"


class ApiKeyThrottle(FixedWindowThrottle):
    """Customer automation, per API key."""

    scope = "api_key"

    def ident(self, request: HttpRequest) -> str | None:
        key = getattr(request, "auth", None)
        return f"key{key.pk}" if key is not None else client_address(request)

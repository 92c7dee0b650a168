"""Per-client rate limits: a fixed window counted atomically in the shared cache, so every
web process agrees (use Redis as the cache when there are several). Rates are read from
settings.API_THROTTLE_RATES on each request, so a deployment can change them.

The cache is an accelerator, not a dependency: when it cannot be reached (refused, or
frozen past its short socket timeout) the request goes through unlimited (fails open),
with a warning and a count in `throttle_stats`, and the cache is skipped for RETRY_AFTER
seconds so a frozen Redis costs one timeout per process every few seconds, not one per
request."""

import logging
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from fleet.http import client_address

logger = logging.getLogger(__name__)

RETRY_AFTER = 5.0  # seconds throttles skip an unreachable cache before trying again
# What an unreachable cache raises: Redis's errors, a socket's, the database cache's.
CACHE_FAULTS = (redis.RedisError, OSError, DatabaseError)


@dataclass
class ThrottleStats:
    """This process's fail-open count: requests let through because the cache failed."""

    failed_open: int = 0
    unreachable_until: float = 0.0


throttle_stats = ThrottleStats()


def throttle_stats_reset() -> None:
    """Forget an outage and the count (tests)."""
    throttle_stats.failed_open = 0
    throttle_stats.unreachable_until = 0.0


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

    def rate(self) -> str:
        """'30/min': read on each request, so a deployment (or a test) can change it."""
        return settings.API_THROTTLE_RATES[self.scope]

    def allow_request(self, request: HttpRequest) -> bool:
        ident = self.ident(request)
        if ident is None:
            return True
        limit, period = parse_rate(self.rate())
        now = time.time()
        window = int(now // period)
        key = f"throttle:{self.scope}:{ident}:{window}"
        if time.monotonic() < throttle_stats.unreachable_until:
            throttle_stats.failed_open += 1
            return True
        try:
            count = self._count(key, timeout=period + 1)
        except CACHE_FAULTS as exc:  # the cache refused or timed out: fail open
            throttle_stats.failed_open += 1
            throttle_stats.unreachable_until = time.monotonic() + RETRY_AFTER
            logger.warning(
                "rate-limit cache unreachable, requests go through unlimited for %ss: %s: %s",
                RETRY_AFTER,
                type(exc).__name__,
                exc,
            )
            return True
        self._retry_after.value = (window + 1) * period - now
        return count <= limit

    @staticmethod
    def _count(key: str, *, timeout: int) -> int:
        cache.add(key, 0, timeout=timeout)
        try:
            return cache.incr(key)
        except ValueError:  # the key expired between add and incr
            cache.add(key, 1, timeout=timeout)
            return 1

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

"""Sign-in throttling beyond django-axes' lockout of one (username, address) pair: one
username guessed from many addresses (credential stuffing) and one address guessing many
usernames (password spraying) are slowed, never locked. Past a free allowance of wrong
passwords, each further attempt waits a delay that doubles with every further wrong
password (2 s, 4 s, 8 s ... up to LOGIN_DELAY_MAX_SECONDS); an attempt during the wait is
refused before its password is looked at (the right one too), so guessing gains nothing
from it, and a refused attempt does not lengthen the wait. A successful sign-in, or an
unlock link from the user's email, ends an account's delay.

The counts live in the shared cache, as the API's throttles do (fleet/api/throttles.py):
Redis when several web processes run. An unreachable cache lets sign-ins through, with a
warning: axes' lockout, kept in the database, still holds.

Invariants (tests/portal/test_sign_in_security.py):
- only a password actually checked and wrong counts (not a refusal by axes or by a delay);
- in a delay, one attempt at a time: the attempt a delay allows is claimed with
  `cache.add`, so parallel requests cannot all slip through when it ends;
- the address is fleet.http.client_address's, the one rule for every limit and the audit log.
"""

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from fleet import policy
from fleet.api.throttles import CACHE_FAULTS
from fleet.http import client_address

logger = logging.getLogger(__name__)

ACCOUNT, ADDRESS = "account", "address"
# A browser that signed in as a user (or unlocked them by email) before carries this
# signed cookie: the account's delay does not apply to it, so a stranger filling the
# account's count never keeps its owner out (OWASP's "device cookie").
KNOWN_BROWSER_COOKIE = "agentina_known_browser"
KNOWN_BROWSER_SALT = "fleet.login_throttle.known_browser"
KNOWN_BROWSER_MAX_AGE = 365 * 24 * 3600
TURN_SECONDS = 30  # an attempt claimed in a delay that never reports frees its turn after this


@dataclass(frozen=True)
class LoginDelay:
    """Why and how long a sign-in attempt must wait."""

    scope: str  # ACCOUNT: this username, from anywhere; ADDRESS: this address, any username
    seconds: int


@dataclass(frozen=True)
class _Counter:
    scope: str
    key: str
    free: int
    window: int  # seconds the failures are remembered, from the first

    def failures_key(self) -> str:
        return f"login:{self.key}:failures"

    def last_key(self) -> str:
        return f"login:{self.key}:last"

    def turn_key(self, failures: int) -> str:
        return f"login:{self.key}:turn:{failures}"


def _digest(username: str) -> str:
    return hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _account(username: str) -> _Counter:
    return _Counter(
        ACCOUNT,
        f"{ACCOUNT}:{_digest(username)}",
        settings.LOGIN_ACCOUNT_FREE_FAILURES,
        int(policy.LOGIN_ACCOUNT_FAILURE_WINDOW.total_seconds()),
    )


def _counters(username: str, address: str | None, *, known_browser: bool) -> list[_Counter]:
    counters = [] if known_browser else [_account(username)]
    if address:
        counters.append(
            _Counter(
                ADDRESS,
                f"{ADDRESS}:{address}",
                settings.LOGIN_ADDRESS_FREE_FAILURES,
                int(policy.LOGIN_ADDRESS_FAILURE_WINDOW.total_seconds()),
            )
        )
    return counters


def login_delay_seconds(failures_past_free: int) -> float:
    """The wait after the n-th wrong password past the free ones (0 for the first)."""
    first = policy.LOGIN_DELAY_FIRST.total_seconds()
    return min(first * 2 ** min(failures_past_free, 32), settings.LOGIN_DELAY_MAX_SECONDS)


def _cache_failed(exc: Exception) -> None:
    logger.warning(
        "sign-in throttle cache unreachable, sign-ins go through unthrottled: %s: %s",
        type(exc).__name__,
        exc,
    )


def login_delay_claim(
    username: str, address: str | None, *, known_browser: bool = False
) -> LoginDelay | None:
    """None when `username` may try a password from `address` now; else how long it must
    wait. In a delay, the one attempt it allows is claimed here, so only one of several
    parallel attempts gets it (the others wait a second). A browser known to this user
    waits only for its address's delay, never the account's."""
    now = time.time()
    try:
        claims: list[str] = []
        for counter in _counters(username, address, known_browser=known_browser):
            failures = cache.get(counter.failures_key()) or 0
            if failures < counter.free:
                continue
            last = cache.get(counter.last_key()) or 0.0
            wait = last + login_delay_seconds(failures - counter.free) - now
            if wait <= 0 and cache.add(counter.turn_key(failures), 1, timeout=TURN_SECONDS):
                claims.append(counter.turn_key(failures))
                continue
            for claimed in claims:  # the attempt is not made: give back what it claimed
                cache.delete(claimed)
            return LoginDelay(counter.scope, max(1, math.ceil(wait)))
    except CACHE_FAULTS as exc:
        _cache_failed(exc)
    return None


def login_failure_record(username: str, address: str | None) -> None:
    """A wrong password for `username` from `address`: one more failure on each count."""
    now = time.time()
    try:
        for counter in _counters(username, address, known_browser=False):
            cache.add(counter.failures_key(), 0, timeout=counter.window)
            try:
                cache.incr(counter.failures_key())
            except ValueError:  # expired between add and incr
                cache.add(counter.failures_key(), 1, timeout=counter.window)
            cache.set(counter.last_key(), now, timeout=counter.window)
    except CACHE_FAULTS as exc:
        _cache_failed(exc)


def login_failures_clear(username: str) -> None:
    """The account's count starts again (a success, an unlock). An address's count is
    never cleared by a success: a sprayer would sign in to an account of its own."""
    counter = _account(username)
    try:
        cache.delete_many([counter.failures_key(), counter.last_key()])
    except CACHE_FAULTS as exc:
        _cache_failed(exc)


def known_browser_mark(request: HttpRequest, username: str) -> None:
    """This browser signed in as `username` (or unlocked them): known_browser_cookie sets
    the cookie on the way out."""
    request.known_browser = _digest(username)  # type: ignore[attr-defined]


def _known_browser(request: HttpRequest, username: str) -> bool:
    known = request.get_signed_cookie(
        KNOWN_BROWSER_COOKIE, default=None, salt=KNOWN_BROWSER_SALT, max_age=KNOWN_BROWSER_MAX_AGE
    )
    return known is not None and known == _digest(username)


def known_browser_cookie(get_response: Callable[[HttpRequest], HttpResponse]) -> Any:
    """Middleware: sets the known-browser cookie for a request known_browser_mark marked."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        digest = getattr(request, "known_browser", None)
        if digest:
            response.set_signed_cookie(
                KNOWN_BROWSER_COOKIE,
                digest,
                salt=KNOWN_BROWSER_SALT,
                max_age=KNOWN_BROWSER_MAX_AGE,
                secure=settings.SESSION_COOKIE_SECURE,
                httponly=True,
                samesite="Lax",
            )
        return response

    return middleware


class LoginThrottleBackend:
    """Checks the delays before a password is: listed after axes' backend and before
    Django's ModelBackend. Authenticates nobody itself; refuses (PermissionDenied, which
    stops authenticate()) an attempt made during a delay, and marks the request so the
    lockout page says how long to wait."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if request is None or username is None or password is None:
            return None
        delay = login_delay_claim(
            username, client_address(request), known_browser=_known_browser(request, username)
        )
        if delay is not None:
            request.login_delay = delay  # type: ignore[attr-defined]
            # As axes does for its own lockout: axes records no failure for a refused
            # attempt, and its middleware answers with the lockout page (AXES_LOCKOUT_CALLABLE).
            request.axes_locked_out = True  # type: ignore[attr-defined]
            raise PermissionDenied("wait before trying again")
        request.login_attempt = username  # type: ignore[attr-defined]
        return None


def record_failed_sign_in(
    sender: object, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """user_login_failed: counts only attempts whose password was checked (the backend
    above let them through), never one refused by axes or by a delay."""
    username = getattr(request, "login_attempt", None)
    if request is not None and username is not None and not hasattr(request, "login_delay"):
        login_failure_record(username, client_address(request))


def record_sign_in(sender: object, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """user_logged_in: the account's failures are forgiven, and this browser is known."""
    login_failures_clear(user.get_username())
    if request is not None:
        known_browser_mark(request, user.get_username())

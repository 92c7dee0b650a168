"""Bearer authentication for agents (their secret) and customer automation (an API key).
Secrets are checked for shape and checksum before any lookup, looked up by digest, and
never logged."""

from datetime import datetime, timedelta
from typing import Any, cast

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from fleet.agent_cache import agent_cached_for_secret
from fleet.choices import ApiKeyScope
from fleet.errors import ApiKeyExpired, InsufficientScope
from fleet.http import client_address
from fleet.models import Agent, CustomerApiKey
from fleet.selectors import api_key_for_secret

API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


class _Bearer(HttpBearer):
    def __call__(self, request: HttpRequest) -> Any | None:
        # Ninja's own version logs a malformed header in DEBUG, secret included; not here.
        scheme, _, credential = request.headers.get(self.header, "").partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return None
        return self.authenticate(request, credential.strip())


class AgentAuth(_Bearer):
    """The agent's own secret, issued at activation. A decommissioned agent (or an old
    secret) is refused by every web process within AGENT_CACHE_POLL_SECONDS."""

    def authenticate(self, request: HttpRequest, token: str) -> Agent | None:
        return agent_cached_for_secret(token)


class ApiKeyAuth(_Bearer):
    """A customer API key holding `scope`; `request.auth` is the key, its customer
    selected with it. An unknown or revoked key is None (401 `unauthorized`), an expired
    one 401 `api_key_expired`, one without the scope 403 `insufficient_scope`. The
    OpenAPI document lists the scope in the operation's security requirement."""

    def __init__(self, scope: ApiKeyScope) -> None:
        super().__init__()
        self.scope = ApiKeyScope(scope)

    def authenticate(self, request: HttpRequest, token: str) -> CustomerApiKey | None:
        key = api_key_for_secret(token)
        if key is None:
            return None
        now = timezone.now()
        if key.expired(now):
            raise ApiKeyExpired(
                f"This API key expired at {key.expires_at:%Y-%m-%d %H:%M} UTC; mint a new one."
            )
        if not key.has_scope(self.scope):
            raise InsufficientScope(required_scope=self.scope, key_scopes=key.scope_list)
        api_key_touch(key, now=now, address=client_address(request))
        return key


def api_key_touch(key: CustomerApiKey, *, now: datetime, address: str | None) -> None:
    """Record when and from where the key was last used: at most one write a minute per
    key, unless the address changed."""
    stale = key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL
    if stale or address != key.last_used_address:
        CustomerApiKey.objects.filter(pk=key.pk).update(last_used_at=now, last_used_address=address)
        key.last_used_at, key.last_used_address = now, address


agent_auth = AgentAuth()
# The customer API's authentication, one per scope: an operation names the one it needs.
key_read = ApiKeyAuth(ApiKeyScope.READ)
key_tokens = ApiKeyAuth(ApiKeyScope.TOKENS)
key_jobs = ApiKeyAuth(ApiKeyScope.JOBS)
key_agents = ApiKeyAuth(ApiKeyScope.AGENTS)
key_rollouts = ApiKeyAuth(ApiKeyScope.ROLLOUTS)
key_alerts = ApiKeyAuth(ApiKeyScope.ALERTS)
key_settings = ApiKeyAuth(ApiKeyScope.SETTINGS)


def authed_agent(request: HttpRequest) -> Agent:
    """The agent an `agent_auth` operation runs for."""
    return cast(Agent, request.auth)  # type: ignore[attr-defined]


def authed_key(request: HttpRequest) -> CustomerApiKey:
    """The API key a `key_*` operation runs for."""
    return cast(CustomerApiKey, request.auth)  # type: ignore[attr-defined]

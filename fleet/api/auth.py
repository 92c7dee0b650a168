"""Bearer authentication for agents (their secret) and customer automation (an API key).
Secrets are checked for shape and checksum before any lookup, looked up by digest, and
never logged."""

from datetime import timedelta
from typing import Any, cast

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from fleet.agent_cache import agent_cached_for_secret
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
    """A customer API key; `request.auth` is the key, its customer selected with it."""

    def authenticate(self, request: HttpRequest, token: str) -> CustomerApiKey | None:
        key = api_key_for_secret(token)
        if key is not None:
            now = timezone.now()
            if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL:
                CustomerApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key


agent_auth = AgentAuth()
api_key_auth = ApiKeyAuth()


def authed_agent(request: HttpRequest) -> Agent:
    """The agent an `agent_auth` operation runs for."""
    return cast(Agent, request.auth)  # type: ignore[attr-defined]


def authed_key(request: HttpRequest) -> CustomerApiKey:
    """The API key an `api_key_auth` operation runs for."""
    return cast(CustomerApiKey, request.auth)  # type: ignore[attr-defined]

"""Upgrade waves in the customer API (filled in next)."""

from ninja import Router

from fleet.api.auth import api_key_auth
from fleet.api.throttles import ApiKeyThrottle

router = Router(tags=["upgrade waves"], auth=api_key_auth, throttle=[ApiKeyThrottle()])

"""The product's own docs, public and generated where they can be so they cannot drift:
/docs/troubleshooting lists every error code from fleet/errors.py's catalogue, and
/docs/security reads its numbers from settings and each API key scope's operations from
the API itself."""

from datetime import timedelta
from functools import cache
from http import HTTPStatus
from itertools import groupby

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from fleet import policy
from fleet.choices import ApiKeyScope, MemberRole
from fleet.errors import ErrorEntry, error_catalogue


def _status_phrase(status: int) -> str:
    return HTTPStatus(status).phrase


def _minutes(value: object) -> int | None:
    return int(value.total_seconds() // 60) if isinstance(value, timedelta) else None


@cache
def api_key_scope_operations() -> dict[str, list[str]]:
    """Each scope's operations ("POST /api/v1/jobs"), read from the OpenAPI document:
    the scope an operation's security requirement names is the one its auth checks."""
    from config.api import api

    document = api.get_openapi_schema(path_prefix="/api/v1")
    by_scope: dict[str, list[str]] = {scope: [] for scope in ApiKeyScope.values}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for requirement in operation.get("security", []):
                for scope in requirement.get("ApiKeyAuth", []):
                    by_scope[scope].append(f"{method.upper()} {path}")
    by_scope[ApiKeyScope.READ].append("GET /metrics")
    return by_scope


@require_GET
def docs_index(request: HttpRequest) -> HttpResponse:
    return render(request, "docs/index.html")


@require_GET
def troubleshooting(request: HttpRequest) -> HttpResponse:
    """Every code an API error body can carry, grouped by status, each with what it means
    and what to do; the anchors are the codes, which every error body's docs_url names."""
    groups: list[tuple[int, str, list[ErrorEntry]]] = [
        (status, _status_phrase(status), list(entries))
        for status, entries in groupby(error_catalogue(), key=lambda e: e.status)
    ]
    return render(request, "docs/troubleshooting.html", {"groups": groups})


@require_GET
def security(request: HttpRequest) -> HttpResponse:
    """The security model, with the numbers this deployment runs with."""
    scopes = api_key_scope_operations()
    return render(
        request,
        "docs/security.html",
        {
            "scopes": [(scope, label, scopes[scope]) for scope, label in ApiKeyScope.choices],
            "roles": MemberRole,
            # The sign-in limits, as far as this deployment sets them.
            "login_failure_limit": getattr(settings, "AXES_FAILURE_LIMIT", None),
            "login_lockout_minutes": _minutes(getattr(settings, "AXES_COOLOFF_TIME", None)),
            "agent_cache_poll_seconds": settings.AGENT_CACHE_POLL_SECONDS,
            "num_proxies": settings.NINJA_NUM_PROXIES,
            "session_days": settings.SESSION_COOKIE_AGE // 86400,
            "token_lifetime_days": policy.TOKEN_LIFETIME.days,
            "token_lifetime_max_days": policy.TOKEN_LIFETIME_MAX.days,
            "body_limit_kib": settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024,
            "throttle_rates": settings.API_THROTTLE_RATES,
        },
    )


@require_GET
def updates(request: HttpRequest) -> HttpResponse:
    """The update lifecycle, with the wave defaults and limits this deployment runs with."""
    wave = policy.WAVE
    return render(
        request,
        "docs/updates.html",
        {
            "release_max_mb": settings.RELEASE_MAX_BYTES // (1024 * 1024),
            "wave": {
                "canary_soak_hours": int(wave.canary_soak.total_seconds() // 3600),
                "batch_percent": int(wave.batch_fraction * 100),
                "batch_watch_minutes": _minutes(wave.batch_watch),
                "tolerance_percent": int(100 - wave.throughput_drop_tolerance * 100),
                "floor_percent": int(wave.online_ratio_floor * 100),
                "agent_deadline_minutes": _minutes(wave.agent_deadline),
            },
        },
    )

"""The agent API at /api/v1: one NinjaAPI, its routers, and the one place errors map to
the shared JSON body {"code", "detail", ...}."""

import logging
from collections.abc import Callable
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, connections
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from fleet.api import activity, agents, alerts, anomalies, customers, jobs, rollouts
from fleet.api.schemas import ErrorOut
from fleet.errors import FleetError, ServiceUnavailable, database_fault_is_transient
from fleet.selectors.readiness import readiness

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"

api = NinjaAPI(
    title="Agentina Control Plane API",
    version="1",
    description="Agents activate with a single-use token, then heartbeat, claim and finish "
    "jobs, and report findings and upgrade results with their own secret. Customer "
    "automation mints tokens, submits jobs and reads the fleet's numbers with an API key. "
    "Every error has the body {code, detail, ...}.",
    urls_namespace="api-v1",
)
api.add_router("", agents.router)
api.add_router("", anomalies.router)
api.add_router("", jobs.router)
api.add_router("", customers.router)
api.add_router("", alerts.router)
api.add_router("", rollouts.router)
api.add_router("", activity.router)


class HealthOut(Schema):
    status: str


def _error(
    request: HttpRequest, status: int, code: str, detail: str, **extra: object
) -> HttpResponse:
    return api.create_response(request, {"code": code, "detail": detail, **extra}, status=status)


@api.exception_handler(FleetError)
def _fleet_error(request: HttpRequest, exc: FleetError) -> HttpResponse:
    response = api.create_response(request, exc.as_body(), status=exc.status)
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = []
    for error in exc.errors:
        location = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        errors.append(
            {
                "field": ".".join(location[1:] if location[:1] == ["body"] else location),
                "message": error.get("msg", "invalid"),
            }
        )
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
    return _error(request, 422, "invalid_input", detail, errors=errors)


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request, 401, "unauthorized", "Missing, malformed, revoked or unknown credentials."
    )


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    response = _error(request, 429, "rate_limited", "Too many requests; slow down.")
    if exc.wait:
        response["Retry-After"] = str(max(1, round(exc.wait)))
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:  # Ninja could not parse the body as JSON
        return _error(
            request,
            422,
            "invalid_json",
            "The body is not valid JSON.",
            errors=[{"field": "", "message": str(exc)}],
        )
    return _error(request, exc.status_code, f"http_{exc.status_code}", str(exc))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error(request, 413, "body_too_large", "The request body is over the size limit.")


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "not_found", "Not found.")


def _drop_broken_connections() -> None:
    """Close a connection the fault broke, so the next request connects afresh instead of
    failing on it again (what Django's request_finished does, done here too because a
    caller may not fire it, and at once). A connection inside a transaction is left to
    its owner."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        if not conn.is_usable():
            conn.close()


@api.exception_handler(DatabaseError)
def _database_error(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    """A passing database fault answers 503 with Retry-After, never 500, so clients (the
    reference agent's `complete` above all) retry instead of dropping their work. One
    warning line each, no traceback: an outage must not bury the logs."""
    if not database_fault_is_transient(exc):
        return _unexpected(request, exc)
    first_line = (str(exc).strip().splitlines() or [""])[0]
    logger.warning(
        "database unavailable on %s %s: %s: %s",
        request.method,
        request.path,
        type(exc).__name__,
        first_line,
    )
    try:
        _drop_broken_connections()
    except Exception:  # closing a dead connection must not turn the 503 into a 500
        logger.warning("could not close a broken database connection", exc_info=True)
    return _fleet_error(request, ServiceUnavailable())


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return _error(request, 500, "internal_error", "Something went wrong on our side.")


@api.get("/health", response={200: HealthOut}, tags=["meta"], auth=None)
def health(request: HttpRequest) -> HealthOut:
    """Liveness for load balancers: answers without touching the database."""
    return HealthOut(status="ok")


class CheckOut(Schema):
    ok: bool | None
    detail: str
    ms: float | None = None


class ReadyOut(Schema):
    status: str  # ready, degraded (serving; something optional is away or late), unavailable
    checks: dict[str, CheckOut]


class ReadyErrorOut(ErrorOut):
    """The error shape every API error has, with the checks that failed."""

    status: str
    checks: dict[str, CheckOut]


@api.get("/ready", response={200: ReadyOut, 503: ReadyErrorOut}, tags=["meta"], auth=None)
def ready(request: HttpRequest) -> Status[ReadyOut | ReadyErrorOut]:
    """Readiness for load balancers and people: 200 while the database answers (degraded
    when Redis, beat or the workers are away or late), 503 when it does not."""
    state = readiness()
    checks = {name: CheckOut(**vars(check)) for name, check in state.checks.items()}
    if not state.ready:
        response = ReadyErrorOut(
            code="service_unavailable",
            detail="The database is unreachable: this process cannot serve.",
            status="unavailable",
            checks=checks,
        )
        return Status(503, response)
    return Status(200, ReadyOut(status="degraded" if state.degraded else "ready", checks=checks))


_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    500: "internal_error",
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase + "."
    except ValueError:
        return "Error."


def api_error_body_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    """Errors that never reach a Ninja operation (an unknown path, a wrong method, a body
    too large for Django) still answer in the API's JSON shape under /api/."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            status = response.status_code
            replacement = JsonResponse(
                {"code": _CODES.get(status, f"http_{status}"), "detail": _phrase(status)},
                status=status,
            )
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response

    return middleware

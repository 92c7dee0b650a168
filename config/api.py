"""The agent API at /api/v1: one NinjaAPI, its routers, and the one place errors map to
the shared JSON body {"code", "detail", ...}."""

import logging
from collections.abc import Callable
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, connections
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_cache_control
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.openapi.schema import OpenAPISchema
from ninja.operation import Operation
from ninja.types import DictStrAny
from pydantic import Field

from fleet.api import (
    activity,
    agents,
    alerts,
    anomalies,
    customers,
    integrations,
    jobs,
    outcomes,
    questions,
    releases,
    rollouts,
)
from fleet.api.auth import ApiKeyAuth
from fleet.api.json_body import HostileJsonValue, StrictJsonParser
from fleet.api.schemas import ErrorOut
from fleet.errors import (
    BadRequest,
    BodyTooLarge,
    FleetError,
    InternalError,
    InvalidInput,
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    database_fault_is_transient,
    error_body,
)
from fleet.selectors.readiness import readiness

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


class _ScopedOpenAPISchema(OpenAPISchema):
    """Ninja's document, with the scope an API key needs in each operation's security
    requirement (OpenAPI 3.1 lets a bearer scheme name the roles it needs)."""

    def operation_security(self, operation: Operation) -> list[DictStrAny] | None:
        security = super().operation_security(operation)
        for requirement, auth in zip(security or [], operation.auth_callbacks, strict=False):
            if isinstance(auth, ApiKeyAuth):
                requirement[type(auth).__name__] = [str(auth.scope)]
        return security


class AgentinaApi(NinjaAPI):
    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: DictStrAny | None = None
    ) -> OpenAPISchema:
        if path_prefix is None:
            path_prefix = self.get_root_path(path_params or {})
        return _ScopedOpenAPISchema(self, path_prefix)


api = AgentinaApi(
    title="Agentina Control Plane API",
    version="1",
    description="Agents activate with a single-use token, then heartbeat, claim and finish "
    "jobs, and report findings and upgrade results with their own secret. Customer "
    "automation mints tokens, submits jobs and reads the fleet's numbers with an API key "
    "holding the scope each operation names in its security requirement. Every error has "
    "the body {code, detail, ..., docs_url}; docs_url leads to the code's entry on "
    "/docs/troubleshooting.",
    urls_namespace="api-v1",
    parser=StrictJsonParser(),
)
api.add_router("", agents.router)
api.add_router("", anomalies.router)
api.add_router("", jobs.router)
api.add_router("", outcomes.router)
api.add_router("", integrations.router)
api.add_router("", customers.router)
api.add_router("", alerts.router)
api.add_router("", rollouts.router)
api.add_router("", releases.router)
api.add_router("", activity.router)
api.add_router("", questions.router)


class HealthOut(Schema):
    status: str


@api.exception_handler(FleetError)
def _fleet_error(request: HttpRequest, exc: FleetError) -> HttpResponse:
    """Every error answer of the API, in the one body (error_body adds its docs_url)."""
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
    return _fleet_error(request, InvalidInput(detail, errors=errors))


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _fleet_error(
        request, Unauthorized("Missing, malformed, revoked or unknown credentials.")
    )


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    response = _fleet_error(request, RateLimited("Too many requests; slow down."))
    if exc.wait:
        response["Retry-After"] = str(max(1, round(exc.wait)))
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    hostile = exc.__cause__
    if isinstance(hostile, HostileJsonValue):  # parsed, but NaN or a lone surrogate in it
        return _fleet_error(
            request,
            InvalidInput(
                str(hostile), errors=[{"field": hostile.field, "message": hostile.message}]
            ),
        )
    if exc.status_code == 400:  # Ninja could not parse the body as JSON
        return _fleet_error(
            request,
            InvalidJson("The body is not valid JSON.", errors=[{"field": "", "message": str(exc)}]),
        )
    return _fleet_error(request, _error_for_status(exc.status_code, str(exc)))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _fleet_error(request, BodyTooLarge("The request body is over the size limit."))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _fleet_error(request, NotFound("Not found."))


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
    return _fleet_error(request, InternalError("Something went wrong on our side."))


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

    code: str = Field(json_schema_extra={"enum": [ServiceUnavailable.code]})
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
            **error_body(
                ServiceUnavailable.code, "The database is unreachable: this process cannot serve."
            ),
            status="unavailable",
            checks=checks,
        )
        return Status(503, response)
    return Status(200, ReadyOut(status="degraded" if state.degraded else "ready", checks=checks))


# The error an answer's status alone stands for (Django answered before any operation).
_STATUS_ERRORS: dict[int, type[FleetError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    413: BodyTooLarge,
    429: RateLimited,
    500: InternalError,
    503: ServiceUnavailable,
}


def _error_for_status(status: int, detail: str) -> FleetError:
    """An error of the catalogue for a bare status: its own, else the 4xx or 5xx one."""
    error_class = _STATUS_ERRORS.get(status) or (InternalError if status >= 500 else BadRequest)
    exc = error_class(detail)
    exc.status = status
    return exc


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
            error = _error_for_status(status, _phrase(status))
            replacement = JsonResponse(error.as_body(), status=status)
            if response.has_header("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response

    return middleware


def api_no_store_middleware(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    """Every answer under /api/ is `Cache-Control: no-store` (and `Pragma: no-cache` for
    HTTP/1.0 caches): some carry a secret shown once (minted tokens, an agent's secret at
    activation or rotation, a webhook's signing secret) and all carry one customer's data,
    so no browser, proxy or client cache may keep any. Set once here, so that no operation
    that returns a secret can forget it."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if request.path.startswith(API_PREFIX):
            patch_cache_control(response, no_store=True)  # keeps what an operation set
            response["Pragma"] = "no-cache"
        return response

    return middleware

"""The agent API at /api/v1: one NinjaAPI, its routers, and the one place errors map to
the shared JSON body {"code", "detail", ...}."""

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError

from fleet.errors import FleetError

api = NinjaAPI(
    title="Agentina Control Plane API",
    version="1",
    description="Agents activate, heartbeat, claim jobs and report here; customer "
    "automation submits jobs and reads fleet metrics.",
    urls_namespace="api-v1",
)


class ErrorOut(Schema):
    code: str
    detail: str


class HealthOut(Schema):
    status: str


@api.exception_handler(FleetError)
def _fleet_error(request: HttpRequest, exc: FleetError) -> HttpResponse:
    return api.create_response(request, exc.as_body(), status=exc.status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {
            "field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "payload")),
            "message": e.get("msg", "invalid"),
        }
        for e in exc.errors
    ]
    detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
    return api.create_response(
        request, {"code": "invalid_input", "detail": detail, "errors": errors}, status=422
    )


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(
        request, {"code": "unauthorized", "detail": "Missing or invalid credentials."}, status=401
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return api.create_response(
        request, {"code": f"http_{exc.status_code}", "detail": str(exc)}, status=exc.status_code
    )


@api.get("/health", response={200: HealthOut}, tags=["meta"], auth=None)
def health(request: HttpRequest) -> HealthOut:
    """Liveness for load balancers: answers without touching the database."""
    return HealthOut(status="ok")

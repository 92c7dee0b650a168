"""Errors services raise. Each has a stable machine-readable code and an HTTP status;
config/api.py maps them once to the shared JSON body, the portal and admin show them."""

from typing import Any


class FleetError(Exception):
    code = "fleet_error"
    status = 400

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def as_body(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, **self.extra}


class NotFound(FleetError):
    code = "not_found"
    status = 404


class InvalidVersion(FleetError):
    code = "invalid_version"
    status = 422


class ReleaseAlreadyPublished(FleetError):
    code = "release_exists"
    status = 409


class LicenseBelowActiveAgents(FleetError):
    """Lowering max_agents under the agents already active needs an explicit confirmation."""

    code = "license_below_active_agents"
    status = 409


class InvalidLicense(FleetError):
    code = "invalid_license"
    status = 422

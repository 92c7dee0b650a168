"""Errors services raise. Each has a stable machine-readable code and an HTTP status;
config/api.py maps them once to the shared JSON body, the portal and admin show them."""

from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError


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


class Unauthorized(FleetError):
    code = "unauthorized"
    status = 401


class ServiceUnavailable(FleetError):
    """A passing fault (the database or Redis unreachable, read-only or full): nothing
    was done, and the same request may be sent again after `retry_after` seconds."""

    code = "service_unavailable"
    status = 503

    def __init__(self, detail: str = "", *, retry_after: int = 5, **extra: object) -> None:
        super().__init__(
            detail or "The Control Plane is briefly unavailable; nothing was done. Retry.",
            **extra,
        )
        self.retry_after = retry_after


class AgentGone(Unauthorized):
    """The agent was decommissioned after this request authenticated it (another process
    had it cached): refused as its secret is from now on."""

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(
            detail
            or "This agent was decommissioned: its secret no longer works. Activate a new "
            "agent with a new token.",
            **extra,
        )


class TokenUnknown(FleetError):
    code = "token_unknown"
    status = 401


class TokenAlreadyRedeemed(FleetError):
    code = "token_already_redeemed"
    status = 409


class TokenExpired(FleetError):
    code = "token_expired"
    status = 410


class TokenRevoked(FleetError):
    code = "token_revoked"
    status = 410


class TokenNotOutstanding(FleetError):
    code = "token_not_outstanding"
    status = 409


class LicenseMissing(FleetError):
    code = "license_missing"
    status = 403


class LicenseSuspended(FleetError):
    code = "license_suspended"
    status = 403


class LicenseExpired(FleetError):
    code = "license_expired"
    status = 403


class SeatLimitReached(FleetError):
    code = "license_full"
    status = 403


class RoleMismatch(FleetError):
    code = "role_mismatch"
    status = 422


class UnitInUse(FleetError):
    code = "unit_in_use"
    status = 409


class StaleLease(FleetError):
    code = "stale_lease"
    status = 409


class JobAlreadyFinished(FleetError):
    code = "job_already_finished"
    status = 409


class NotAllowed(FleetError):
    code = "not_allowed"
    status = 403


class RolloutRefused(FleetError):
    """A rollout that must not start: all at once, a downgrade, nothing to do, one already on."""

    code = "rollout_refused"
    status = 409


class RolloutStateError(FleetError):
    code = "rollout_state"
    status = 409


class InvalidAlertChannel(FleetError):
    """Bad channel input found past the schema (a URL into our own network, a kind's
    missing field): 422 naming the field, as schema errors do."""

    code = "invalid_input"
    status = 422

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail, errors=[{"field": field, "message": detail}])
        self.field = field


class AlertDeliveryRefused(FleetError):
    code = "alert_delivery_refused"
    status = 409


class IdempotencyKeyReused(FleetError):
    code = "idempotency_key_reused"
    status = 409


# What a retry can outlive, by PostgreSQL SQLSTATE, for errors that psycopg does not class
# as operational: a read-only database (a replica promoted late, a full disk's safeguard)
# and a lock wait that timed out. Connection, serialization, deadlock, disk-full,
# too-many-connections and shutdown errors are OperationalError already.
_TRANSIENT_SQLSTATES = {"25006", "55P03"}
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")


def database_fault_is_transient(exc: DatabaseError) -> bool:
    """A fault a retry can outlive (the API answers 503), not a bug (500)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    sqlstate = str(getattr(exc.__cause__, "sqlstate", None) or "")
    return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES)


class AgentStateConflict(FleetError):
    """A control the agent's status does not allow now (pausing an upgrading or retired
    agent, resuming one that is not paused)."""

    code = "agent_state_conflict"
    status = 409


class JobNotStopping(FleetError):
    code = "job_not_stopping"
    status = 409


class AnomalyOpenElsewhere(FleetError):
    """A resolved finding whose fingerprint has a newer open finding stays resolved: the
    cause folds into that one now."""

    code = "anomaly_open_elsewhere"
    status = 409

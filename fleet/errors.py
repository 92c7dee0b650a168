"""Errors services raise. Each has a stable machine-readable code and an HTTP status;
config/api.py maps them once to the shared JSON body, the portal and admin show them.

Each class is also the entry for its code on /docs/troubleshooting: its docstring says
what the code means, `hint` what to do about it. The codes config/api.py answers itself
(a bad body, too many requests, an unknown path) have classes here too, so that page is
generated from this module and cannot drift from what the API answers."""

import inspect
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError
from django.urls import reverse


class FleetError(Exception):
    """An error with a stable code (the base of every other)."""

    code = "fleet_error"
    status = 400
    hint = ""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def as_body(self) -> dict[str, Any]:
        return error_body(self.code, self.detail, **self.extra)


def troubleshooting_url(code: str) -> str:
    """Where a code is explained: its entry on /docs/troubleshooting."""
    return f"{reverse('docs:troubleshooting')}#{code}"


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The one error body: {"code", "detail", ...what the error adds, "docs_url"}."""
    return {"code": code, "detail": detail, **extra, "docs_url": troubleshooting_url(code)}


# --- answered by config/api.py before or around an operation ----------------------------


class BadRequest(FleetError):
    """The request could not be read at all (a malformed request line or header, a host
    this server does not serve)."""

    code = "bad_request"
    status = 400
    hint = "Check the URL, the Host header and the headers your client sends."


class InvalidJson(FleetError):
    """The body is not JSON (or not a JSON object where one is expected)."""

    code = "invalid_json"
    status = 422
    hint = (
        "Send a JSON object with Content-Type: application/json; `errors` has the parser's message."
    )


class InvalidInput(FleetError):
    """A field is missing, of the wrong type, out of range or refused by a rule (a URL into
    a private network, a label with spaces, a date range that is empty). `errors` lists
    each field with its message."""

    code = "invalid_input"
    status = 422
    hint = (
        "Fix the fields named in `errors` (dotted paths into the body, or the query or "
        "path parameter's name); the operation's schema on /api/v1/docs lists what each "
        "takes. Nothing was done."
    )


class Unauthorized(FleetError):
    """The request has no credentials, or ones the server does not know: a missing or
    malformed `Authorization: Bearer` header, a mistyped, revoked or unknown API key or
    agent secret, or an agent that was decommissioned."""

    code = "unauthorized"
    status = 401
    hint = (
        "Send `Authorization: Bearer <key>`. An API key comes from the portal's API keys "
        "page (owners and admins mint them); an agent's secret from its activation. A "
        "revoked key or a decommissioned agent's secret never works again: mint a new key "
        "or activate a new agent."
    )


class ApiKeyExpired(Unauthorized):
    """The API key is past the expiry it was minted with."""

    code = "api_key_expired"
    hint = (
        "Mint a new key on the portal's API keys page (or `manage.py issue_api_key`), with "
        "the same scopes, and revoke the old one. An expiry cannot be extended."
    )


class InvalidSignature(FleetError):
    """A webhook (the GitHub receiver) whose `X-Hub-Signature-256` does not match its
    body under the customer's secret, or is missing, or whose URL names no receiver set
    up. Nothing was recorded."""

    code = "invalid_signature"
    status = 401
    hint = (
        "Set the webhook's secret to the one shown when it was minted (Settings, or POST "
        "/api/v1/integrations/github/secret mints a new one), content type "
        "application/json, and the URL with your customer slug."
    )


class InsufficientScope(FleetError):
    """The API key is valid but was not minted with the scope this operation needs
    (`required_scope`); `key_scopes` lists the ones it has."""

    code = "insufficient_scope"
    status = 403
    hint = (
        "Mint a key with the scope named in `required_scope` (the API keys page lists each "
        "key's scopes; /api/v1/docs names each operation's). A key's scopes cannot be "
        "changed: mint a new one and revoke the old."
    )

    def __init__(self, *, required_scope: str, key_scopes: list[str]) -> None:
        super().__init__(
            f"This API key lacks the {required_scope!r} scope this operation needs.",
            required_scope=required_scope,
            key_scopes=key_scopes,
        )


class NotFound(FleetError):
    """No such object for you: it does not exist, or it belongs to another customer (the
    answer is the same, so it confirms nothing). Also an unknown path."""

    code = "not_found"
    status = 404
    hint = (
        "Check the id (list the objects to find it) and the path; make sure the key or "
        "agent belongs to the customer that owns the object."
    )


class MethodNotAllowed(FleetError):
    """The path exists but not with this HTTP method; the `Allow` header lists the ones
    it takes."""

    code = "method_not_allowed"
    status = 405
    hint = "Use a method from the `Allow` header (e.g. POST, not PUT)."


class BodyTooLarge(FleetError):
    """The request body is over the size limit (1 MiB by default)."""

    code = "body_too_large"
    status = 413
    hint = (
        "Send less: keep job payloads and results small and put large artifacts in your "
        "own storage, sending their address."
    )


class RateLimited(FleetError):
    """Too many requests from this API key (or, unauthenticated, this address) in the
    current window."""

    code = "rate_limited"
    status = 429
    hint = (
        "Wait the seconds in `Retry-After`, then send it again; spread requests out. "
        "Nothing was done."
    )


class InternalError(FleetError):
    """A fault on our side that was not expected. It is logged with its traceback."""

    code = "internal_error"
    status = 500
    hint = (
        "Retrying may work, but a repeat is a bug: tell Agentina support the time, the "
        "method and the path."
    )


class ServiceUnavailable(FleetError):
    """A passing fault (the database or Redis unreachable, read-only or full): nothing
    was done, and the same request may be sent again after `retry_after` seconds."""

    code = "service_unavailable"
    status = 503
    hint = (
        "Send the same request again after `Retry-After` seconds (the reference agent "
        "does); nothing was done, so a retry is safe."
    )

    def __init__(self, detail: str = "", *, retry_after: int = 5, **extra: object) -> None:
        super().__init__(
            detail or "The Control Plane is briefly unavailable; nothing was done. Retry.",
            **extra,
        )
        self.retry_after = retry_after


# --- raised by services ----------------------------------------------------------------


class InvalidVersion(FleetError):
    """A release version or channel that is not valid (staff publishing a release)."""

    code = "invalid_version"
    status = 422
    hint = "Use a semantic version such as 1.10.0 and a known channel (stable, beta)."


class ReleaseAlreadyPublished(FleetError):
    """That release version is already published (staff, in the admin)."""

    code = "release_exists"
    status = 409
    hint = "Publish a new version number; a published release is never replaced."


class ReleaseSignatureInvalid(FleetError):
    """A release artifact's signature is not base64 of 64 bytes, or does not verify
    against the server's RELEASE_PUBLIC_KEY over this version, SHA-256 and size (a
    changed byte, another key, another version). Nothing was stored."""

    code = "release_signature_invalid"
    status = 422
    hint = (
        "Sign the artifact you publish with the private key whose public half is "
        "RELEASE_PUBLIC_KEY (`manage.py release_publish --signing-key` does both)."
    )


class ReleaseArtifactTooLarge(FleetError):
    """A release artifact is over RELEASE_MAX_BYTES (200 MB by default). Nothing was
    stored."""

    code = "release_artifact_too_large"
    status = 413
    hint = "Publish a smaller artifact (the agent's archive is well under a megabyte)."


class ReleaseSigningKeyMissing(FleetError):
    """The server has no RELEASE_PUBLIC_KEY, so it cannot check (or accept) a signed
    artifact."""

    code = "release_signing_key_missing"
    status = 409
    hint = (
        "Run `manage.py release_keygen --out DIR`, set the RELEASE_PUBLIC_KEY it prints in "
        "the server's environment and restart it; keep the private key off the server."
    )


class ReleaseNotFound(NotFound):
    """No release with that version can be downloaded: it was never published, was
    yanked, or has no artifact."""

    code = "release_not_found"
    hint = "Download the version the upgrade order names; a yanked release is not served."


class RangeNotSatisfiable(FleetError):
    """The `Range` header asks for bytes the artifact does not have (`size` says how many
    it has)."""

    code = "range_not_satisfiable"
    status = 416
    hint = "Ask for `Range: bytes=N-` with N below the artifact's size, or drop the header."


class LicenseBelowActiveAgents(FleetError):
    """Lowering max_agents under the agents already active needs an explicit confirmation
    (staff, in the admin)."""

    code = "license_below_active_agents"
    status = 409
    hint = "Confirm the change, or decommission agents first so they fit the new limit."


class InvalidLicense(FleetError):
    """License values that do not hold together (staff, in the admin): no seats, or an
    end before its start."""

    code = "invalid_license"
    status = 422
    hint = "Fix the field named in the message."


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
    """The activation token is not one the Control Plane minted: mistyped, truncated
    (its checksum fails before any lookup) or never issued."""

    code = "token_unknown"
    status = 401
    hint = "Copy the whole token again from the portal's Tokens page, or mint a new one."


class TokenAlreadyRedeemed(FleetError):
    """The token was used already: tokens are single-use. The body names the host and the
    time that claimed it; if that was not you, the token was shared (a finding is opened)."""

    code = "token_already_redeemed"
    status = 409
    hint = (
        "Mint one token per agent. To recover an agent whose activation answer was lost, "
        "retry with the same `install_key`, machine and unit within 15 minutes."
    )


class TokenExpired(FleetError):
    """The activation token is past its expiry."""

    code = "token_expired"
    status = 410
    hint = "Mint a new token (Tokens page or POST /api/v1/tokens) and activate with it."


class TokenRevoked(FleetError):
    """The activation token was revoked by someone of your customer."""

    code = "token_revoked"
    status = 410
    hint = "Mint a new token, or ask who revoked this one why."


class TokenNotOutstanding(FleetError):
    """Only an outstanding token can be revoked; this one was redeemed or expired."""

    code = "token_not_outstanding"
    status = 409
    hint = "Nothing to do: the token cannot be used any more. Decommission its agent instead."


class LicenseMissing(FleetError):
    """The customer has no license, so no agent can activate or work."""

    code = "license_missing"
    status = 403
    hint = "Contact Agentina sales for a license."


class LicenseSuspended(FleetError):
    """The customer's license is suspended by Agentina staff."""

    code = "license_suspended"
    status = 403
    hint = "Contact Agentina support; agents work again once it is resumed."


class LicenseExpired(FleetError):
    """The customer's license is past its end date."""

    code = "license_expired"
    status = 403
    hint = "Renew the license with Agentina sales."


class SeatLimitReached(FleetError):
    """Every seat of the license is taken: active agents (paused and draining ones too)
    already number `max_agents`, or fewer seats are free than tokens asked for."""

    code = "license_full"
    status = 403
    hint = (
        "Decommission agents you no longer need (their seats free at once), or ask for "
        "more seats. A refused token stays usable."
    )


class RoleMismatch(FleetError):
    """The agent activated with a role other than the one its token was minted for."""

    code = "role_mismatch"
    status = 422
    hint = "Activate with the token's role (`--role`), or mint a token for this role."


class UnitInUse(FleetError):
    """Another active agent on this host already runs under this unit name."""

    code = "unit_in_use"
    status = 409
    hint = (
        "Give the second agent its own unit and state dir "
        "(`--unit agentina@coder-2 --state-dir ...`)."
    )


class StaleLease(FleetError):
    """The job's lease is not the one sent: the lease lapsed and the job went to another
    agent, or it was cancelled."""

    code = "stale_lease"
    status = 409
    hint = (
        "Drop the result: the job is someone else's now. Keep heartbeating while a job "
        "runs so its lease is extended."
    )


class JobAlreadyFinished(FleetError):
    """The job already finished (completed, failed or cancelled) differently."""

    code = "job_already_finished"
    status = 409
    hint = "Nothing to do: read the job to see how it ended."


class NotAllowed(FleetError):
    """Your role does not allow this: only owners (and Agentina staff) start and steer
    upgrade waves."""

    code = "not_allowed"
    status = 403
    hint = "Ask an owner of your customer."


class RolloutRefused(FleetError):
    """A rollout that must not start: all at once, a downgrade, a yanked release, nothing
    to do, or another wave already under way. `field` names what to change."""

    code = "rollout_refused"
    status = 409
    hint = (
        "Read the detail: wait for (or abort) the wave under way, pick another release, a "
        "batch below 100%, or an online canary behind the release."
    )


class RolloutStateError(FleetError):
    """A control the wave's state does not allow now (resuming a running wave, steering a
    finished one). Sending a control twice is therefore safe."""

    code = "rollout_state"
    status = 409
    hint = "Read the wave (GET /rollouts/{id}): `actions` names the controls it allows now."


class InvalidAlertChannel(InvalidInput):
    """Bad channel input found past the schema (a URL into our own network, a kind's
    missing field): 422 naming the field, as schema errors do."""

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(detail, errors=[{"field": field, "message": detail}])
        self.field = field


class AlertDeliveryRefused(FleetError):
    """The alert cannot be delivered again: it was delivered already, or the channel is
    gone or disabled."""

    code = "alert_delivery_refused"
    status = 409
    hint = "Check the channel on the Alerts page; enable it again, or send a test."


class IdempotencyKeyReused(FleetError):
    """The `Idempotency-Key` was used for a different job submission."""

    code = "idempotency_key_reused"
    status = 409
    hint = "Use a new key for each distinct job; reuse one only to retry the same submit."


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
    agent, resuming one that is not paused, a bulk pause without a reason)."""

    code = "agent_state_conflict"
    status = 409
    hint = "Read the agent's status first; a decommissioned agent cannot be controlled."


class JobNotStopping(FleetError):
    """The agent reported a job stopped that nobody asked to stop."""

    code = "job_not_stopping"
    status = 409
    hint = "Finish the job with complete or fail instead."


class AnomalyOpenElsewhere(FleetError):
    """A resolved finding whose fingerprint has a newer open finding stays resolved: the
    cause folds into that one now."""

    code = "anomaly_open_elsewhere"
    status = 409
    hint = "Follow (and reopen or resolve) the newer open finding with the same cause."


# --- members and sign-in (the portal's Members and Two-factor pages) --------------------


class LastOwner(FleetError):
    """The change would leave the customer without an owner: its last owner cannot be
    removed or given another role."""

    code = "last_owner"
    status = 409
    hint = "Make another member an owner first, then change or remove this one."


class AlreadyMember(FleetError):
    """The address invited already belongs to a member of this customer."""

    code = "already_member"
    status = 409
    hint = "Change the member's role on the Members page instead of inviting them."


class InvitationUnusable(FleetError):
    """The invitation link was used already, withdrawn, or has expired: each link works
    once, for a week."""

    code = "invitation_unusable"
    status = 410
    hint = "Ask an owner of the customer to send a new invitation."


class InvitationNotSent(FleetError):
    """The invitation email could not be sent (the mail server refused or did not answer):
    nothing was saved."""

    code = "invitation_not_sent"
    status = 503
    hint = "Try again in a moment; if it keeps failing, check EMAIL_URL."


class SecondFactorRefused(FleetError):
    """The authenticator code or recovery code is wrong, was used already, or too many
    wrong codes were tried (each wrong code doubles the wait before the next)."""

    code = "second_factor_refused"
    status = 403
    hint = "Type the current 6-digit code from your authenticator app, or an unused recovery code."


# --- the catalogue /docs/troubleshooting shows ------------------------------------------


@dataclass(frozen=True)
class ErrorEntry:
    code: str
    status: int
    meaning: str
    hint: str


def _subclasses(cls: type[FleetError]) -> list[type[FleetError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def error_catalogue() -> list[ErrorEntry]:
    """Every code an error can carry, by status then code: one entry per class that sets
    its own code (subclasses that only refine the detail share their parent's entry)."""
    entries = {
        cls.code: ErrorEntry(
            code=cls.code,
            status=cls.status,
            meaning=" ".join((inspect.getdoc(cls) or "").split()),
            hint=cls.hint,
        )
        for cls in _subclasses(FleetError)
        if "code" in vars(cls)
    }
    return sorted(entries.values(), key=lambda e: (e.status, e.code))


def error_codes_for_status(status: int) -> list[str]:
    """The codes an error answer with this status may carry."""
    return [e.code for e in error_catalogue() if e.status == status]


class TokenLimitReached(FleetError):
    """The customer already holds as many outstanding activation tokens (unredeemed and
    unexpired) as it may at once: twice its license's seats. Tokens are minted for agents
    about to be enrolled, not stockpiled: each is a live secret."""

    code = "token_limit_reached"
    status = 409
    hint = (
        "Revoke tokens no agent will use (the portal's Tokens page, or DELETE "
        "/api/v1/tokens/{id}), or let them expire, then mint again."
    )


class ApiKeyLimitReached(FleetError):
    """The customer already has as many active API keys as it may (20)."""

    code = "api_key_limit_reached"
    status = 409
    hint = "Revoke keys no longer in use on the portal's API keys page, then mint again."


# --- questions (a running job asks a person) ---------------------------------------------


class JobNotHeld(FleetError):
    """Only the agent running a job may ask a question about it, while it runs."""

    code = "job_not_held"
    status = 409
    hint = "Ask while the job runs, from the agent that claimed it."


class QuestionNotOpen(FleetError):
    """The question was answered already; the first answer stands."""

    code = "question_not_open"
    status = 409
    hint = "Read the question again: its answer is on its page and in the API."


class QuestionNotAnswered(FleetError):
    """An agent acknowledged an answer that does not exist yet."""

    code = "question_not_answered"
    status = 409
    hint = "Acknowledge an answer only after a heartbeat delivered it."

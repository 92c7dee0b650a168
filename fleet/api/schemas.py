"""Request and response bodies of /api/v1. Inputs are strict: unknown fields, NUL bytes,
oversized strings and out-of-range numbers are refused with 422 naming the field."""

import math
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StringConstraints,
    create_model,
)

from fleet import policy
from fleet.choices import (
    AgentActivity,
    AgentRole,
    AgentStatus,
    AlertChannelKind,
    AlertEventType,
    AnomalySeverity,
    BudgetPeriod,
    BudgetScope,
    BulkActionKind,
    Channel,
    JobStatus,
    OutcomeVerdict,
    RollbackLevel,
    RolloutAction,
    RolloutState,
    TokenStatus,
    UpgradeOutcome,
)
from fleet.errors import error_codes_for_status
from fleet.labels import labels_check
from fleet.models import ActivationToken, Anomaly, Question, Rollout
from fleet.models.questions import (
    ANSWER_TEXT_MAX,
    QUESTION_OPTION_MAX,
    QUESTION_OPTIONS_MAX,
    QUESTION_TEXT_MAX,
)
from fleet.selectors import BatchProgress, rollout_batches
from fleet.services.detections import host_memory_budget_mb
from fleet.versions import SemVer


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


def _semver(value: str) -> SemVer:
    return SemVer(value)


def _utc_if_naive(value: datetime) -> datetime:
    """An agent's clock is reported, never punished: any time is taken (a naive one as
    UTC), however far off; the skew becomes a finding, not a refusal."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _no_nul_anywhere(value: Any) -> Any:
    """JSON from agents may nest; PostgreSQL's jsonb refuses NUL in any string of it."""
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(str(key))
            _no_nul_anywhere(item)
    elif isinstance(value, list):
        for item in value:
            _no_nul_anywhere(item)
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    return labels_check(value)


# key: value labels (fleet/labels.py): at most 32, keys and values short and plain.
Labels = Annotated[
    dict[str, str],
    AfterValidator(_labels),
    Field(
        default_factory=dict,
        description=f"Up to {policy.LABELS_MAX} key: value labels; keys 1-63 letters, digits, "
        "'.', '_', '/', '-'; values up to 63 letters, digits or '._:/+-'.",
        examples=[{"gpu": "a100", "os": "linux"}],
    ),
]


# Text fields: stripped, NUL-free; each field sets its max_length to fit its column.
Str = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_no_nul)]
RequiredStr = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_no_nul)
]


Version = Annotated[str, StringConstraints(max_length=64), AfterValidator(_semver)]

ACTIVITY_DETAIL_MAX = 500
# A model provider's name as agents report it: "anthropic", "openai", "azure-openai".
ProviderName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, max_length=50, pattern=r"^[A-Za-z0-9._-]*$"
    ),
]


def _naive(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a local time, without an offset (the time zone says where)")
    return value


LocalTime = Annotated[time, AfterValidator(_naive)]


class In(Schema):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(Schema):
    """Every error answer: a stable code, words for people, what the error adds (`errors`
    naming fields, `required_scope`...) and where the code is explained."""

    code: str
    detail: str
    docs_url: str = Field(
        description="The code's entry on /docs/troubleshooting: what it means, what to do.",
        examples=["/docs/troubleshooting#insufficient_scope"],
    )


class LicenseLimitsOut(Schema):
    plan: str
    max_agents: int
    seats_used: int
    max_concurrent_tasks_per_agent: int
    channel: str


# --- agents -----------------------------------------------------------------------------


class ActivateIn(In):
    token: RequiredStr = Field(max_length=200)
    machine_id: RequiredStr = Field(max_length=128)
    hostname: RequiredStr = Field(max_length=255)
    zone: Str = Field("", max_length=64)
    unit_name: RequiredStr = Field(max_length=128)
    state_dir: RequiredStr = Field(max_length=255)
    role: AgentRole
    version: Version
    name: Str = Field("", max_length=128)
    memory_mb: int | None = Field(None, ge=0, le=16_777_216)
    install_key: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_-]{32,128})?$",
        description="A random key (32 to 128 URL-safe characters) the agent keeps in its "
        "state dir. Only a retry that sends it again gets the agent back after a lost "
        "answer; without one, a lost answer means minting a new token.",
    )
    labels: Labels


class ActivateOut(Schema):
    agent_id: int
    agent_secret: str
    created: bool
    heartbeat_interval_seconds: int
    license: LicenseLimitsOut


class ReleaseHintOut(Schema):
    version: str
    channel: str


class UpgradeOrderOut(Schema):
    version: str
    rollout_id: int
    drain: bool
    sha256: str | None = Field(
        None, description="The artifact's SHA-256; null: the release has no artifact."
    )
    size: int | None = Field(None, description="The artifact's size in bytes.")
    signature: str | None = Field(
        None,
        description="Ed25519 signature (base64 of 64 bytes) over agentina.signing's "
        "release statement: version, sha256 and size.",
    )
    url: str | None = Field(None, description="Where to download the artifact (this server).")


class ReleaseOut(Schema):
    version: str
    channel: str
    sha256: str
    size: int
    signature: str
    url: str = Field(description="The artifact's path on this server; `Range` resumes.")


class SigningKeyOut(Schema):
    algorithm: str = Field(description="Always ed25519.")
    public_key: str | None = Field(
        description="Base64 of the 32 raw bytes; null: this server signs no releases."
    )


# --- usage (what a job's model calls cost) -----------------------------------------------

USAGE_ITEMS_MAX = 20
TOKENS_MAX = 10**12
COST_USD_MAX = 10**6
WALL_SECONDS_MAX = 10**7


def _json_number(value: Any) -> Any:
    """A cost is a JSON number, finite: a string, a boolean, NaN or Infinity is refused
    (Decimal would take "NaN" and "1e3" from a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError("must be a finite number")
    return Decimal(str(value))  # the digits as written, not the float's binary expansion


def _micro_dollars(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


CostUsd = Annotated[
    Decimal,
    BeforeValidator(_json_number),
    Field(ge=0, le=COST_USD_MAX, description="USD, kept to 6 decimal places."),
    AfterValidator(_micro_dollars),
]
Tokens = Annotated[StrictInt, Field(ge=0, le=TOKENS_MAX)]


class UsageIn(In):
    """One model's usage within a job."""

    model: RequiredStr = Field(max_length=100, examples=["claude-sonnet-4"])
    provider: Str = Field("", max_length=50, examples=["anthropic"])
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cost_usd: CostUsd = Decimal("0")


UsageList = Annotated[
    list[UsageIn],
    Field(
        default_factory=list,
        max_length=USAGE_ITEMS_MAX,
        description=f"One item per model used (at most {USAGE_ITEMS_MAX}); the job's totals "
        "are their sums.",
    ),
]
WallSeconds = Annotated[
    float | None,
    Field(None, ge=0, le=WALL_SECONDS_MAX, allow_inf_nan=False, description="Time it took."),
]


class HeartbeatIn(In):
    version: Version
    running_job_ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        default_factory=list, max_length=1000
    )
    load: float | None = Field(None, ge=0, le=10_000)
    sent_at: Annotated[datetime, AfterValidator(_utc_if_naive)] | None = Field(
        None,
        description="The agent's clock when it sent this (UTC when it has no time zone). "
        "Any time is accepted: a clock more than a minute off opens a finding.",
    )
    activity: AgentActivity | None = Field(
        None,
        description="What the agent is doing: working, idle, waiting_for_input (a person "
        "must answer its question), rate_limited or provider_error (its model provider), "
        "budget_exhausted (a claim said so). Omitted: unchanged.",
    )
    detail: Str = Field("", max_length=ACTIVITY_DETAIL_MAX, description="Words for people.")
    provider: ProviderName = Field(
        "", description="The model provider a rate_limited or provider_error blames."
    )
    usage: dict[
        Annotated[int, Field(ge=1, le=2**62)],
        Annotated[list[UsageIn], Field(max_length=USAGE_ITEMS_MAX)],
    ] = Field(
        default_factory=dict,
        max_length=1000,
        description="Usage so far of running jobs, by job id (each list replaces the last "
        "one reported); recorded with the lease renewal, every half lease.",
    )


class AnswerOut(Schema):
    """An answer to one of the agent's questions."""

    question_id: int
    job_id: int
    answer: str


class HeartbeatOut(Schema):
    server_time: datetime
    next_heartbeat_seconds: int
    jobs_pending: int = Field(
        description="Queued jobs of the agent's role (as of a few seconds ago): claim when "
        "this is above zero and a slot is free, instead of polling claim."
    )
    update_available: ReleaseHintOut | None
    upgrade: UpgradeOrderOut | None
    paused: bool = Field(
        False,
        description="An operator paused (or is draining) this agent: finish what runs, "
        "claim nothing; jobs_pending is 0 until it is resumed.",
    )
    cancel: list[int] = Field(
        default_factory=list,
        description="Running jobs of this agent to stop now (an operator cancelled them, or "
        "they ran past their max runtime): stop each and report it with "
        "POST /jobs/{id}/stopped.",
    )
    answers: list[AnswerOut] = Field(
        default_factory=list,
        description="Answers to the agent's questions, sent on every heartbeat until it "
        "acknowledges each (POST /questions/{id}/ack): at least once; drop a question id "
        "already taken.",
    )


class AgentMeOut(Schema):
    agent_id: int
    name: str
    role: str
    status: str
    ephemeral: bool = False
    labels: dict[str, str] = {}
    version: str
    unit_name: str
    state_dir: str
    host: str
    machine_id: str
    zone: str
    last_heartbeat_at: datetime | None
    license: LicenseLimitsOut | None
    latest_release: str | None
    update_available: ReleaseHintOut | None


class ExitOut(Schema):
    decommissioned: bool = Field(
        description="True for an ephemeral agent: it is retired and its seat is free."
    )


class SecretOut(Schema):
    agent_secret: str


class UpgradeResultIn(In):
    outcome: UpgradeOutcome
    from_version: Version
    to_version: Version
    detail: Str = Field("", max_length=2000)
    rolled_back_to: Version | None = Field(
        None, description="The version the agent runs after a rollback."
    )
    rollback_level: RollbackLevel | None = Field(
        None,
        description="previous: back to the version it ran; last_known_good: that one "
        "failed too, so the last version that passed a smoke check and ran a day.",
    )


class AnomalyIn(In):
    message: RequiredStr = Field(max_length=2000)
    severity: AnomalySeverity = AnomalySeverity.WARNING
    fingerprint: Str = Field("", max_length=150)
    job_id: int | None = Field(None, ge=1, le=2**62)


class AnomalyOut(Schema):
    id: int
    kind: str
    severity: str
    fingerprint: str
    message: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime


class OkOut(Schema):
    ok: bool


# --- jobs -------------------------------------------------------------------------------


class JobPayloadIn(In):
    repo: RequiredStr = Field(max_length=500)
    ref: Str = Field("main", max_length=255)
    task: RequiredStr = Field(max_length=10_000)


class JobSubmitIn(In):
    role: AgentRole
    payload: JobPayloadIn
    priority: int = Field(0, ge=-100, le=100)
    required_labels: Labels
    max_runtime_seconds: int | None = Field(
        None,
        ge=1,
        le=int(policy.JOB_MAX_RUNTIME_LIMIT.total_seconds()),
        description="Told to stop (and counted as timed out) after running this long; "
        "none: the customer's default, else 6 hours.",
    )


class JobOut(Schema):
    id: int
    role: str
    status: str
    priority: int
    payload: dict[str, Any]
    attempts: int
    agent_id: int | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any = None
    error: str
    required_labels: dict[str, str] = {}
    max_runtime_seconds: int | None = None
    stop_requested_at: datetime | None = None
    stop_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Field(
        Decimal("0"), description="USD, a decimal string (6 places): the usage's sum."
    )
    usage: list[dict[str, Any]] = Field(
        default_factory=list, description="As reported, one item per model used."
    )
    wall_seconds: float | None = None
    agent_version: str = Field("", description="Its agent's version when it finished.")
    pull_request: str = Field("", description="The pull request its result names.")
    verdict: str = Field(
        "", description="The latest verdict on its output, of any source; empty: not judged."
    )
    verdict_at: datetime | None = None


class ClaimOut(JobOut):
    lease_id: uuid.UUID
    lease_expires_at: datetime


class CompleteIn(In):
    lease_id: uuid.UUID
    result: Annotated[dict[str, Any] | list[Any] | str | None, AfterValidator(_no_nul_anywhere)] = (
        None
    )
    usage: UsageList
    wall_seconds: WallSeconds


class StoppedIn(In):
    lease_id: uuid.UUID


class FailIn(In):
    lease_id: uuid.UUID
    error: Str = Field("", max_length=10_000)
    retryable: bool = False
    usage: UsageList
    wall_seconds: WallSeconds


# --- outcomes (what happened to a job's output) ------------------------------------------


def _web_url(value: str) -> str:
    if value and not value.lower().startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    return value


class OutcomeIn(In):
    verdict: OutcomeVerdict
    source: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,49}$",
        description="Who judged: a short slug (github, gitlab, human, ...). One verdict per "
        "source: a new one from the same source replaces it.",
        examples=["human"],
    )
    url: Annotated[Str, AfterValidator(_web_url)] = Field(
        "",
        max_length=2000,
        description="Where the verdict was given (a pull request).",
    )
    note: Str = Field("", max_length=2000)


class OutcomeOut(Schema):
    job_id: int
    source: str
    verdict: str
    url: str
    note: str
    reported_at: datetime
    job_verdict: str = Field(description="The job's verdict now: the latest of any source.")

    @staticmethod
    def resolve_job_verdict(outcome: Any) -> str:
        return outcome.job.verdict


class GithubSecretOut(Schema):
    secret: str = Field(description="The webhook secret: in this response only.")
    secret_prefix: str
    url: str = Field(description="The Payload URL to give GitHub (content type JSON).")


class GithubDeliveryOut(Schema):
    verdict: str | None
    ignored: str = Field("", description="Why nothing was recorded, when nothing was.")
    job_ids: list[int]


# --- customer automation ----------------------------------------------------------------


class TokensMintIn(In):
    count: int = Field(1, ge=1, le=policy.TOKENS_PER_MINT_MAX)
    role: AgentRole | None = None
    expires_in_hours: int = Field(
        policy.TOKEN_LIFETIME // timedelta(hours=1),
        ge=1,
        le=policy.TOKEN_LIFETIME_MAX // timedelta(hours=1),
    )
    note: Str = Field("", max_length=200)
    labels: Labels
    ephemeral: bool = Field(
        False,
        description="Each agent from these tokens is decommissioned after its first job, or "
        "when it exits cleanly, freeing its seat at once.",
    )


class TokenOut(Schema):
    id: int
    display_prefix: str
    role: str
    status: TokenStatus
    note: str
    labels: dict[str, str] = {}
    ephemeral: bool = False
    created_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    redeemed_by_host: str | None = None
    redeemed_by_agent_id: int | None = None
    refused_attempts: int

    @staticmethod
    def resolve_status(token: "ActivationToken | TokenOut") -> str:
        # (A TokenOut nested in another schema is validated again, from itself.)
        return token.effective_status if isinstance(token, ActivationToken) else token.status

    @staticmethod
    def resolve_redeemed_by_host(token: ActivationToken) -> str | None:
        agent = getattr(token, "agent", None)
        return agent.host.hostname if agent else None

    @staticmethod
    def resolve_redeemed_by_agent_id(token: ActivationToken) -> int | None:
        agent = getattr(token, "agent", None)
        return agent.pk if agent else None


class MintedTokenOut(Schema):
    token: str  # the secret: shown here once, never again
    details: TokenOut


class SeatsOut(Schema):
    max_agents: int
    used: int
    free: int
    outstanding_tokens: int


class TokensMintedOut(Schema):
    tokens: list[MintedTokenOut]
    seats: SeatsOut


class FleetMetricsOut(Schema):
    at: datetime
    agents_active: int
    agents_online: int
    online_ratio: float | None
    jobs_completed_last_hour: int
    jobs_completed_previous_hour: int
    jobs_failed_last_hour: int
    jobs_timed_out_last_hour: int = Field(description="Stopped past their max runtime.")
    throughput_trend: float | None
    queue_depth: int
    jobs_running: int
    anomalies_unresolved: int
    latest_version: str | None
    agents_not_on_latest: int
    agents_minor_behind: int
    throughput_baseline: float | None
    idle_ratio: float | None
    wait_p50_seconds: float | None
    wait_p95_seconds: float | None
    snapshot_at: datetime | None
    acceptance: float | None = Field(
        None,
        description="Accepted ÷ judged, of the jobs finished in the last quality_window_days "
        "(each job's latest verdict); null: none judged.",
    )
    acceptance_previous: float | None = Field(None, description="The same, the window before.")
    jobs_judged: int = 0
    quality_window_days: int = 7
    cost_usd_last_hour: Decimal = Field(Decimal("0"), description="Of the jobs finished in it.")
    cost_per_accepted_job: Decimal | None = Field(
        None, description="What the window's jobs cost ÷ how many of them were accepted."
    )


class WorkOut(Schema):
    jobs: int
    tokens: int
    cost_usd: Decimal
    judged: int
    accepted: int
    acceptance: float | None
    cost_per_accepted_job: Decimal | None = Field(alias="cost_per_accepted")
    tokens_per_job: float | None


class TrendOut(Schema):
    now: WorkOut = Field(description="The last `days`: jobs finished in them, judged so far.")
    before: WorkOut = Field(description="The `days` before those.")


class CostlyJobOut(Schema):
    id: int
    role: str
    agent_id: int | None
    cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    verdict: str
    finished_at: datetime | None
    portal_path: str

    @staticmethod
    def resolve_portal_path(job: Any) -> str:
        return f"/portal/jobs/{job.pk}/"


class QualityFilters(Schema):
    days: int = Field(7, ge=1, le=90, description="The window: jobs finished in these days.")


class FleetQualityOut(Schema):
    days: int
    total: TrendOut
    by_role: dict[str, TrendOut]
    by_version: dict[str, TrendOut]
    by_agent: dict[int, TrendOut]
    cost_usd_last_hour: Decimal
    costliest: list[CostlyJobOut] = Field(description="The 10 costliest jobs of the last 24 h.")


# --- alerts -------------------------------------------------------------------------------


class AlertChannelIn(In):
    """A channel: `url` for webhook, slack and pagerduty (PagerDuty's own endpoint when
    left out), `email` for email, `routing_key` for pagerduty. `events` empty: all."""

    kind: AlertChannelKind
    name: Str = Field("", max_length=100)
    url: Str = Field("", max_length=2000)
    email: Str = Field("", max_length=254)
    routing_key: Str = Field("", max_length=64)
    events: list[AlertEventType] = Field(
        default_factory=list, max_length=policy.ALERT_EVENT_TYPES_MAX
    )
    min_severity: AnomalySeverity = AnomalySeverity.INFO


class AlertChannelOut(Schema):
    id: int
    kind: AlertChannelKind
    name: str
    url: str
    email: str
    events: list[str]
    min_severity: str
    secret_prefix: str
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str
    created_at: datetime


class AlertChannelCreatedOut(AlertChannelOut):
    secret: str | None = Field(
        None, description="The webhook signing secret: in this response only."
    )


class AlertTestOut(Schema):
    event_id: str
    type: str


class AgentPauseIn(In):
    reason: RequiredStr = Field(max_length=policy.AGENT_PAUSE_REASON_MAX)
    timeout_minutes: int | None = Field(
        None,
        ge=1,
        le=int(policy.AGENT_PAUSE_TIMEOUT_MAX.total_seconds() // 60),
        description="Beat resumes the agent this long after the pause; none: until resumed.",
    )
    drain: bool = Field(
        False,
        description="Draining: paused once its running jobs finish (at once when it runs none).",
    )


class UpdatePinRuleIn(In):
    labels: Labels = Field(description="The labels an agent must all have.")
    channel: Channel | None = None
    version: Version | None = Field(None, description="A published, unyanked release.")


class UpdatePinRuleOut(Schema):
    labels: dict[str, str]
    channel: str | None
    version: str | None


class CustomerSettingsIn(In):
    """Only the fields sent change; `null` turns a policy off (or back to the default)."""

    stale_cleanup_days: int | None = Field(
        None,
        ge=1,
        le=365,
        description="Days offline before beat cleans an agent up (restorable for 7 days); "
        "null: never.",
    )
    job_max_runtime_seconds: int | None = Field(
        None,
        ge=1,
        le=int(policy.JOB_MAX_RUNTIME_LIMIT.total_seconds()),
        description="Default max runtime of a job submitted without its own; null: 6 hours.",
    )
    time_zone: str | None = Field(
        None, max_length=64, description="IANA time zone the maintenance window is in."
    )
    maintenance_days: list[Annotated[int, Field(ge=1, le=7)]] | None = Field(
        None,
        max_length=7,
        description="ISO weekdays a maintenance window opens; []: no window (waves step at "
        "any time). Outside the window no wave step starts.",
    )
    update_pins: list[UpdatePinRuleIn] | None = Field(
        None, max_length=20, description="Pins by label (replaces every rule; [] clears)."
    )
    maintenance_start: LocalTime | None = Field(None, description="Local time the window opens.")
    maintenance_end: LocalTime | None = Field(
        None, description="Local time it closes (earlier than the start: the next day)."
    )


class CustomerSettingsOut(Schema):
    stale_cleanup_days: int | None
    stale_cleanup_since: datetime | None
    job_max_runtime_seconds: int | None
    time_zone: str
    maintenance_days: list[int] = Field(
        description="ISO weekdays (1 Monday … 7 Sunday) the maintenance window opens; []: "
        "no window, waves step at any time."
    )
    maintenance_start: time | None
    maintenance_end: time | None
    update_pins: list[UpdatePinRuleOut] = Field(
        description="Pins by label: an agent with every label of a rule follows its channel "
        "or version (the first rule that matches; its own pin comes first)."
    )


class AgentLabelsIn(In):
    labels: Labels


class AgentUpdatePinIn(In):
    channel: Channel | None = Field(
        None, description="The channel it follows; null: its license's."
    )
    version: Version | None = Field(
        None, description="Exactly this published release; null: no version pin."
    )


class AgentOut(Schema):
    id: int
    name: str
    role: str
    status: str
    version: str
    host: str
    last_heartbeat_at: datetime | None
    paused_reason: str
    paused_until: datetime | None
    labels: dict[str, str]
    update_channel: str | None = Field(
        description="The update channel it is pinned to; null: its license's."
    )
    pinned_version: str | None = Field(description="The release it is pinned to, if any.")
    activity: str = Field("", description="What it last reported doing; empty: never said.")
    activity_detail: str = ""
    activity_provider: str = ""
    activity_since: datetime | None = None

    @staticmethod
    def resolve_version(agent: Any) -> str:
        return str(agent.version)

    @staticmethod
    def resolve_update_channel(agent: Any) -> str | None:
        return agent.update_channel or None

    @staticmethod
    def resolve_pinned_version(agent: Any) -> str | None:
        return str(agent.pinned_version) if agent.pinned_version else None

    @staticmethod
    def resolve_host(agent: Any) -> str:
        return agent.host.hostname


class AgentFilters(Schema):
    """The Agents page's filters. Status `online` and `offline` count as every page does
    (heard from within the online window); `label` is `key=value` or just `key`."""

    status: AgentStatus | None = None
    role: Str = Field("", max_length=32)
    version: Str = Field("", max_length=64)
    host: Str = Field("", max_length=255)
    zone: Str = Field("", max_length=64)
    label: Str = Field("", max_length=130)
    q: Str = Field("", max_length=200, description="Part of a name, unit, hostname or machine id.")

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.model_dump().items() if v}


class AgentFiltersIn(AgentFilters, In):
    pass


class BulkActionIn(In):
    action: BulkActionKind
    filters: AgentFiltersIn | None = Field(
        None, description="Which agents: every one they match now (none: every agent)."
    )
    reason: Str = Field(
        "", max_length=policy.AGENT_PAUSE_REASON_MAX, description="Why (pause: required)."
    )
    labels: Labels


class BulkActionOut(Schema):
    id: int
    action: str = Field(alias="kind")
    state: str
    filters: dict[str, str]
    total: int
    processed: int
    changed: int = Field(description="Of the agents gone through, the ones it moved.")
    percent: int
    created_at: datetime
    finished_at: datetime | None


# --- hosts, jobs, anomalies and upgrade waves (customer automation) ---------------------


class HostFilters(Schema):
    """The Hosts page's filter: `label` (`key=value` or just `key`) keeps the hosts running
    an agent that carries it; `zone` keeps one zone's hosts."""

    label: Str = Field("", max_length=130)
    zone: Str = Field("", max_length=64)


class HostOut(Schema):
    id: int
    hostname: str
    machine_id: str
    zone: str
    memory_mb: int | None
    n_agents: int = Field(description="Agents holding a seat on the host.")
    n_testers: int
    n_online: int = Field(description="Of those, heard from within the online window.")
    memory_budget_mb: int = Field(
        description=f"The memory its agents want: {policy.IDLE_AGENT_MB} MB an agent, "
        f"{policy.TESTER_WORKLOAD_MB} MB more a tester."
    )
    last_seen_at: datetime | None

    @staticmethod
    def resolve_memory_budget_mb(host: Any) -> int:
        return host_memory_budget_mb(host.n_agents, host.n_testers)


class JobFilters(Schema):
    """The Jobs page's filters; `label` (`key=value` or just `key`) keeps the jobs that
    require it."""

    status: JobStatus | None = None
    role: AgentRole | None = None
    label: Str = Field("", max_length=130)


class AnomalyFilters(Schema):
    state: Literal["open", "resolved", "all"] = Field(
        "open", description="The Anomalies page's tabs: unresolved (`open`), `resolved`, `all`."
    )


class AnomalyNoteIn(In):
    note: RequiredStr = Field(max_length=2000, description="What you did, or why (audited).")


class AnomalyDetailOut(AnomalyOut):
    """A finding as the customer reads it: what, on which agent, and how it was closed."""

    cause: str = Field(
        description="What the findings of one incident share: the fingerprint without the "
        "agent or job it names."
    )
    agent_id: int | None
    agent_name: str | None
    job_id: int | None
    resolved_at: datetime | None
    resolved_by: str | None = Field(
        description="The member who resolved it; null when an API key or Agentina did."
    )
    resolution_note: str

    @staticmethod
    def resolve_agent_name(anomaly: Anomaly) -> str | None:
        return anomaly.agent.name if anomaly.agent else None

    @staticmethod
    def resolve_resolved_by(anomaly: Anomaly) -> str | None:
        return anomaly.resolved_by.get_username() if anomaly.resolved_by else None


WaveName = Annotated[Str, StringConstraints(min_length=1, max_length=255)]


class WaveScopeIn(In):
    """An agent is in the wave when it matches one of each list given and has every label
    given; agents pinned to another version are left out."""

    role: list[AgentRole] = Field(default_factory=list, max_length=len(AgentRole.values))
    zone: list[WaveName] = Field(default_factory=list, max_length=500)
    host: list[WaveName] = Field(default_factory=list, max_length=500, description="Hostnames.")
    labels: Labels = Field(default_factory=dict)


class RolloutStartIn(In):
    """The Upgrades page's form. The defaults are the product's promise: one canary soaked
    24 h, then batches of 25% of the rest, each watched 1 h, with 95% of the wave's agents
    online."""

    release: Version = Field(description="The version to move to: a release your channel sees.")
    canary_agent_id: int | None = Field(
        None,
        ge=1,
        le=2**62,
        description="An online agent behind the release; null: the healthiest online agent "
        "of the largest role.",
    )
    canary_soak_hours: int = Field(
        policy.WAVE.canary_soak // timedelta(hours=1), ge=0, le=policy.CANARY_SOAK_MAX_HOURS
    )
    batch_percent: int = Field(
        int(policy.WAVE.batch_fraction * 100),
        ge=1,
        le=99,
        description="Of the remaining agents, per batch (all at once is refused).",
    )
    batch_watch_minutes: int = Field(
        policy.WAVE.batch_watch // timedelta(minutes=1), ge=0, le=policy.BATCH_WATCH_MAX_MINUTES
    )
    online_floor_percent: int = Field(
        int(policy.WAVE.online_ratio_floor * 100),
        ge=0,
        le=100,
        description="The share of the wave's agents that must be online for it to go on.",
    )
    scope: WaveScopeIn | None = Field(
        None, description="The part of the fleet the wave upgrades; null: the whole fleet."
    )
    acceptance_drop_tolerance_percent: int = Field(
        int(policy.WAVE.acceptance_drop_tolerance * 100),
        ge=0,
        le=100,
        description="How much lower (relative) the upgraded agents' acceptance rate may be "
        "than on their earlier versions, once enough jobs were judged.",
    )
    cost_increase_tolerance_percent: int = Field(
        int(policy.WAVE.cost_increase_tolerance * 100),
        ge=0,
        le=1000,
        description="How much higher (relative) their cost per accepted job may be.",
    )
    reason: RequiredStr = Field(max_length=500, description="Why (audited).")


class RolloutSteerIn(In):
    reason: RequiredStr = Field(max_length=2000, description="Why (audited).")


class RolloutFloorIn(RolloutSteerIn):
    floor_percent: int = Field(
        ge=0, le=100, description="The share of the wave's agents that must be online."
    )


class GateCheckOut(Schema):
    name: str
    passed: bool
    text: str = Field(
        description="What was measured against which threshold, and the agents behind a failure."
    )


class GateOut(Schema):
    at: datetime | None = None
    passed: bool
    checks: list[GateCheckOut]


class RolloutBatchOut(Schema):
    number: int | None = Field(
        description="0: the canary; null: the agents the wave excluded (offline when it began)."
    )
    label: str
    total: int
    succeeded: int
    counts: dict[str, int] = Field(description="The step's agents in each state.")


class RolloutOut(Schema):
    id: int
    state: RolloutState
    release: str
    canary_agent_id: int | None
    canary_agent: str | None
    current_batch: int = Field(description="0 is the canary.")
    batches_total: int
    agents: int = Field(description="Agents in the wave (the excluded ones not counted).")
    agents_upgraded: int
    canary_soak_hours: float
    batch_percent: int
    batch_watch_minutes: float
    online_floor_percent: int
    throughput_drop_tolerance_percent: int
    acceptance_drop_tolerance_percent: int
    cost_increase_tolerance_percent: int
    scope: dict[str, Any] = Field(
        description="{role: [...], zone: [...], host: [hostnames], labels: {key: value}}: "
        "{} is the whole fleet."
    )
    paused_reason: str
    gates_waived_batch: int | None = Field(description="A step resumed anyway: its gates pass.")
    last_gate: GateOut | None = Field(description="The latest gate, each check in words.")
    actions: list[RolloutAction] = Field(
        description="What you may do to the wave now: POST /rollouts/{id}/<action> with `_` "
        "written `-`."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_release(rollout: Rollout) -> str:
        return str(rollout.release.version)

    @staticmethod
    def resolve_canary_agent(rollout: Rollout) -> str | None:
        return rollout.canary_agent.name if rollout.canary_agent else None

    @staticmethod
    def resolve_agents(rollout: Any) -> int:
        return rollout.n_targets  # rollout_list's annotation

    @staticmethod
    def resolve_agents_upgraded(rollout: Any) -> int:
        return rollout.n_done

    @staticmethod
    def resolve_canary_soak_hours(rollout: Rollout) -> float:
        return rollout.canary_soak / timedelta(hours=1)

    @staticmethod
    def resolve_batch_watch_minutes(rollout: Rollout) -> float:
        return rollout.batch_watch / timedelta(minutes=1)

    @staticmethod
    def resolve_batch_percent(rollout: Rollout) -> int:
        return int(rollout.batch_fraction * 100)

    @staticmethod
    def resolve_online_floor_percent(rollout: Rollout) -> int:
        return int(rollout.online_ratio_floor * 100)

    @staticmethod
    def resolve_throughput_drop_tolerance_percent(rollout: Rollout) -> int:
        return int(rollout.throughput_drop_tolerance * 100)

    @staticmethod
    def resolve_acceptance_drop_tolerance_percent(rollout: Rollout) -> int:
        return int(rollout.acceptance_drop_tolerance * 100)

    @staticmethod
    def resolve_cost_increase_tolerance_percent(rollout: Rollout) -> int:
        return int(rollout.cost_increase_tolerance * 100)

    @staticmethod
    def resolve_last_gate(rollout: Rollout) -> dict[str, Any] | None:
        checks = rollout.last_gate.get("checks") if rollout.last_gate else None
        if not checks:
            return None
        passed = all(check["passed"] for check in checks)
        return {"at": rollout.last_gate.get("at"), "passed": passed, "checks": checks}

    @staticmethod
    def resolve_actions(rollout: Rollout) -> list[str]:
        return [action.value for action in rollout.actions]


class RolloutDetailOut(RolloutOut):
    """One wave as its portal page shows it (its steps cost one more query: never list these)."""

    batches: list[RolloutBatchOut] = Field(description="Each step's progress; the canary first.")

    @staticmethod
    def resolve_batches(rollout: Rollout) -> list[BatchProgress]:
        return rollout_batches(rollout)


# --- questions (a running job asks a person) and budgets --------------------------------


class QuestionIn(In):
    text: RequiredStr = Field(max_length=QUESTION_TEXT_MAX, description="What the agent asks.")
    options: list[Annotated[RequiredStr, Field(max_length=QUESTION_OPTION_MAX)]] = Field(
        default_factory=list,
        max_length=QUESTION_OPTIONS_MAX,
        description="Suggested answers (the portal offers them as buttons); any text goes.",
    )


class AnswerIn(In):
    answer: RequiredStr = Field(max_length=ANSWER_TEXT_MAX)


class QuestionOut(Schema):
    id: int
    job_id: int
    agent_id: int | None
    text: str
    options: list[str]
    asked_at: datetime
    answer: str
    answered_at: datetime | None
    answered_by: str = Field(description="Who answered (a member, or an API key).")
    acked_at: datetime | None = Field(description="When the agent took the answer.")
    waited_seconds: float | None = Field(description="Asked → answered (→ now while open).")

    @staticmethod
    def resolve_answered_by(question: Question) -> str:
        return question.answered_by_label


class QuestionFilters(Schema):
    state: Literal["open", "answered", "all"] = "open"


class BudgetCapIn(In):
    scope: BudgetScope
    key: Str = Field(
        "",
        max_length=32,
        description="The role (scope role) or agent id (scope agent); empty for customer.",
    )
    period: BudgetPeriod
    max_cost_usd: CostUsd | None = Field(None, description="USD; null: no USD cap.")
    max_tokens: Tokens | None = Field(
        None, description="null: no token cap. Both null removes the cap."
    )


class BudgetsIn(In):
    caps: list[BudgetCapIn] = Field(max_length=50, description="Caps to set or remove.")


class BudgetOut(Schema):
    scope: str
    key: str
    period: str
    max_cost_usd: Decimal | None
    max_tokens: int | None
    spent_usd: Decimal = Field(description="Spent in the current day or month (UTC).")
    spent_tokens: int
    reached: bool


@cache
def error_out_for_status(status: int) -> type[ErrorOut]:
    """ErrorOut whose `code` lists (as an enum, in the document only) the codes of the
    error catalogue (fleet/errors.py) with this status."""
    codes: list[JsonValue] = [*error_codes_for_status(status)]
    return create_model(
        f"ErrorOut{status}",
        __base__=ErrorOut,
        __doc__=f"An error answer with status {status}: one of the codes listed, each "
        "explained at its docs_url.",
        code=(str, Field(json_schema_extra={"enum": codes})),
    )


def errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    """Declare the error statuses an operation can answer, so the OpenAPI document is true.
    Every operation may answer 503 `service_unavailable` with Retry-After (the database
    briefly unreachable, read-only or full: nothing was done, send it again), so 503 is
    always declared."""
    return {status: error_out_for_status(status) for status in (*statuses, 503)}

from django.db import models


class MemberRole(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    VIEWER = "viewer", "Viewer"


class Channel(models.TextChoices):
    STABLE = "stable", "Stable"
    BETA = "beta", "Beta"


class AgentRole(models.TextChoices):
    CODER = "coder", "Coder"
    REVIEWER = "reviewer", "Reviewer"
    TESTER = "tester", "Tester"
    INDEXER = "indexer", "Indexer"


class AgentStatus(models.TextChoices):
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    UPGRADING = "upgrading", "Upgrading"
    DRAINING = "draining", "Draining"
    PAUSED = "paused", "Paused"
    CLEANED_UP = "cleaned_up", "Cleaned up (undo within 7 days)"
    DECOMMISSIONED = "decommissioned", "Decommissioned"


class AgentActivity(models.TextChoices):
    """What an agent says it is doing (its heartbeat's `activity`); empty until it says."""

    WORKING = "working", "Working"
    IDLE = "idle", "Idle"
    WAITING_FOR_INPUT = "waiting_for_input", "Waiting for input"
    RATE_LIMITED = "rate_limited", "Rate-limited by its model provider"
    PROVIDER_ERROR = "provider_error", "Model provider failing"
    BUDGET_EXHAUSTED = "budget_exhausted", "Budget exhausted"


# Activities that blame the model provider: many agents of a customer in one of these for
# the same provider fold into one provider incident.
PROVIDER_TROUBLE = (AgentActivity.RATE_LIMITED, AgentActivity.PROVIDER_ERROR)


class BudgetScope(models.TextChoices):
    CUSTOMER = "customer", "The whole fleet"
    ROLE = "role", "A role"
    AGENT = "agent", "An agent"


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Per day (UTC)"
    MONTH = "month", "Per month (UTC)"


class TokenStatus(models.TextChoices):
    OUTSTANDING = "outstanding", "Outstanding"
    REDEEMED = "redeemed", "Redeemed"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class JobCancelReason(models.TextChoices):
    """Why a running job was told to stop."""

    OPERATOR = "operator", "Cancelled by an operator"
    TIMED_OUT = "timed_out", "Timed out (past its max runtime)"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class OutcomeVerdict(models.TextChoices):
    """What happened to a job's output later, as customer automation (or GitHub) reports."""

    ACCEPTED = "accepted", "Accepted"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    REJECTED = "rejected", "Rejected"
    REVERTED = "reverted", "Reverted"


class AnomalySeverity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class AnomalyKind(models.TextChoices):
    AGENT_REPORTED = "agent_reported", "Reported by an agent"
    AGENT_OFFLINE = "agent_offline", "Agent went offline"
    TOKEN_REUSE = "token_reuse", "Token shared across machines"
    ROLLBACK = "rollback", "Upgrade rolled back"
    ROLLOUT_GATE = "rollout_gate", "Rollout gate failed"
    THROUGHPUT_DROP = "throughput_drop", "Throughput dropped"
    LOW_ONLINE_RATIO = "low_online_ratio", "Online ratio below target"
    JOB_FAILURES = "job_failures", "Repeated job failures"
    JOB_ABANDONED = "job_abandoned", "Job failed after its last attempt"
    VERSION_SKEW = "version_skew", "Version skew"
    CLOCK_SKEW = "clock_skew", "Agent clock skew"
    ANTI_PATTERN = "anti_pattern", "Fleet anti-pattern"
    BUDGET_EXHAUSTED = "budget_exhausted", "Budget cap reached"
    PROVIDER_INCIDENT = "provider_incident", "Model provider incident"


class RolloutState(models.TextChoices):
    """A wave starts at its canary (it is planned and offered in one transaction) and ends
    completed or aborted; see Rollout.ACTIONS for what operators may do in each."""

    CANARY = "canary", "Canary"
    ROLLING = "rolling", "Rolling"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"


# A customer has at most one rollout in these states (a database constraint).
ACTIVE_ROLLOUT_STATES = (RolloutState.CANARY, RolloutState.ROLLING, RolloutState.PAUSED)
# Beat moves a rollout in these on (a paused one waits for its operator).
ADVANCING_ROLLOUT_STATES = (RolloutState.CANARY, RolloutState.ROLLING)


class RolloutAction(models.TextChoices):
    """What an owner (or staff) can do to a wave; Rollout.ACTIONS says in which states."""

    PAUSE = "pause", "Pause"
    RESUME = "resume", "Resume"
    RESUME_ANYWAY = "resume_anyway", "Resume anyway (waive the gates for this step)"
    SET_FLOOR = "set_floor", "Change the online-ratio floor"
    SKIP_SOAK = "skip_soak", "Skip the rest of the soak or watch"
    RETRY_FAILED = "retry_failed", "Retry failed agents"
    ABORT = "abort", "Abort"


class RolloutTargetState(models.TextChoices):
    PENDING = "pending", "Pending"
    OFFERED = "offered", "Offered"
    SUCCEEDED = "succeeded", "Succeeded"
    ROLLED_BACK = "rolled_back", "Rolled back"
    FAILED = "failed", "Failed"
    EXCLUDED = "excluded", "Excluded"


class UpgradeOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    SMOKE_CHECK_FAILED = "smoke_check_failed", "Smoke check failed"
    START_FAILED = "start_failed", "Start failed"
    VERIFY_FAILED = "verify_failed", "Download refused (checksum or signature)"


class RollbackLevel(models.TextChoices):
    """How far back an agent went after a failed upgrade."""

    PREVIOUS = "previous", "The version it ran before"
    LAST_KNOWN_GOOD = "last_known_good", "Its last known good version"


class AlertEventType(models.TextChoices):
    """What an alert channel can subscribe to (AlertEvent.type); fleet/services/alerts/
    events.py says each one's severity, title and PagerDuty action."""

    AGENTS_OFFLINE = "agents.offline", "Agents went offline"
    AGENTS_BACK_ONLINE = "agents.back_online", "An agent came back online"
    ONLINE_RATIO_LOW = "fleet.online_ratio_low", "Online ratio below the target"
    ONLINE_RATIO_RECOVERED = "fleet.online_ratio_recovered", "Online ratio recovered"
    ANOMALY_OPENED = "anomaly.opened", "Finding opened"
    ANOMALIES_DAILY_DIGEST = "anomalies.daily_digest", "Unresolved findings at end of day"
    ROLLOUT_PAUSED = "rollout.paused", "Upgrade wave paused"
    ROLLOUT_ROLLED_BACK = "rollout.rolled_back", "An agent rolled an upgrade back"
    ROLLOUT_COMPLETED = "rollout.completed", "Upgrade wave completed"
    TOKEN_REUSED = "token.reused", "A redeemed token was presented again"
    LICENSE_NEAR_CAP = "license.near_cap", "License nearly full"
    LICENSE_EXPIRING = "license.expiring", "License expiring"
    ALERT_TEST = "alert.test", "Test alert"
    ALERTS_SUMMARY = "alerts.summary", "Alerts held back by the per-minute limit"


class AlertChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (signed JSON)"
    SLACK = "slack", "Slack incoming webhook"
    EMAIL = "email", "Email"
    PAGERDUTY = "pagerduty", "PagerDuty (Events API v2)"


class AlertDeliveryState(models.TextChoices):
    """An attempt to deliver one event to one channel. At most one attempt of an (event,
    channel) is scheduled or sending, and at most one succeeded (database constraints)."""

    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    SUCCEEDED = "succeeded", "Delivered"
    RETRYING = "retrying", "Failed, retry scheduled"
    FAILED = "failed", "Failed for good"
    FOLDED = "folded", "Held back (per-minute limit), summarised"


class RollupResolution(models.TextChoices):
    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class BulkActionKind(models.TextChoices):
    PAUSE = "pause", "Pause"
    RESUME = "resume", "Resume"
    DECOMMISSION = "decommission", "Decommission"
    LABEL = "label", "Add labels"


class BulkActionState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"


class AuditAction(models.TextChoices):
    """Every kind of audit event, as the Activity page and the admin name it."""

    AGENT_ACTIVATE = "agent.activate", "Agent activated"
    AGENT_REACTIVATE = "agent.reactivate", "Agent recovered a lost activation"
    AGENT_ROTATE_SECRET = "agent.rotate_secret", "Agent secret rotated"
    AGENT_HEARTBEAT_STATE = "agent.heartbeat_state", "Agent state changed by its heartbeat"
    AGENT_OFFLINE = "agent.offline", "Agent went offline"
    AGENT_DECOMMISSION = "agent.decommission", "Agent decommissioned"
    AGENT_PAUSE = "agent.pause", "Agent paused"
    AGENT_DRAIN = "agent.drain", "Agent set to drain, then pause"
    AGENT_DRAINED = "agent.drained", "Agent drained: its last running job finished, now paused"
    AGENT_RESUME = "agent.resume", "Agent resumed"
    AGENT_LABELS = "agent.labels", "Agent labels changed"
    AGENTS_BULK = "agents.bulk", "Action on every agent matching a filter"
    AGENT_CLEAN_UP = "agent.clean_up", "Agent cleaned up after days offline"
    AGENT_RESTORE = "agent.restore", "Cleaned-up agent restored"
    AGENT_UPGRADE_SUCCEEDED = "agent.upgrade_succeeded", "Agent upgraded"
    AGENT_UPGRADE_SMOKE_CHECK_FAILED = (
        "agent.upgrade_smoke_check_failed",
        "Agent upgrade rolled back (smoke check failed)",
    )
    AGENT_UPGRADE_START_FAILED = (
        "agent.upgrade_start_failed",
        "Agent upgrade rolled back (start failed)",
    )
    AGENT_UPGRADE_VERIFY_FAILED = (
        "agent.upgrade_verify_failed",
        "Agent refused a release download (checksum or signature)",
    )
    AGENT_UPDATE_PIN = "agent.update_pin", "Agent's update channel or version pin changed"
    TOKEN_MINT = "token.mint", "Activation tokens minted"
    TOKEN_REVOKE = "token.revoke", "Activation token revoked"
    TOKEN_EXPIRE = "token.expire", "Activation token expired"
    TOKEN_REDEMPTION_REFUSED = "token.redemption_refused", "Token redemption refused"
    API_KEY_MINT = "api_key.mint", "API key minted"
    API_KEY_REVOKE = "api_key.revoke", "API key revoked"
    JOB_SUBMIT = "job.submit", "Job submitted"
    JOB_CLAIM = "job.claim", "Job claimed"
    JOB_SUCCEEDED = "job.succeeded", "Job succeeded"
    JOB_FAILED = "job.failed", "Job failed"
    JOB_REQUEUED = "job.queued", "Job failed and went back to the queue for another try"
    JOB_CANCEL = "job.cancel", "Job cancelled"
    JOB_CANCEL_REQUEST = "job.cancel_request", "Running job told to stop"
    JOB_TIMED_OUT = "job.timed_out", "Running job past its max runtime told to stop"
    JOB_STOPPED = "job.stopped", "Running job stopped by its agent"
    JOB_LEASE_EXPIRED = "job.lease_expired", "Job lease expired"
    JOB_OUTCOME = "job.outcome", "Job outcome reported"
    GITHUB_SECRET_ROTATE = "integration.github_secret", "GitHub webhook secret minted"
    ANOMALY_OPEN = "anomaly.open", "Finding opened"
    ANOMALY_RESOLVE = "anomaly.resolve", "Finding resolved"
    ANOMALY_REOPEN = "anomaly.reopen", "Finding reopened"
    CUSTOMER_CREATE = "customer.create", "Customer created"
    CUSTOMER_UPDATE = "customer.update", "Customer updated"
    MEMBERSHIP_CREATE = "membership.create", "Member added"
    MEMBERSHIP_UPDATE = "membership.update", "Member's role changed"
    MEMBERSHIP_REMOVE = "membership.remove", "Member removed"
    MEMBERSHIP_INVITE = "membership.invite", "Member invited by email"
    MEMBERSHIP_INVITE_WITHDRAW = "membership.invite_withdraw", "Invitation withdrawn"
    MEMBERSHIP_INVITE_ACCEPT = "membership.invite_accept", "Invitation accepted"
    USER_TWO_FACTOR_ENABLE = "user.two_factor_enable", "Two-factor sign-in turned on"
    USER_TWO_FACTOR_DISABLE = "user.two_factor_disable", "Two-factor sign-in turned off"
    USER_RECOVERY_CODES = "user.recovery_codes", "Recovery codes replaced"
    USER_RECOVERY_CODE_USED = "user.recovery_code_used", "Signed in with a recovery code"
    USER_PASSWORD_RESET = "user.password_reset", "Password reset by email"
    LICENSE_CREATE = "license.create", "License created"
    LICENSE_UPDATE = "license.update", "License updated"
    LICENSE_SUSPEND = "license.suspend", "License suspended"
    LICENSE_RESUME = "license.resume", "License resumed"
    RELEASE_PUBLISH = "release.publish", "Release published"
    RELEASE_UPDATE = "release.update", "Release updated"
    RELEASE_YANK = "release.yank", "Release yanked"
    ROLLOUT_START = "rollout.start", "Upgrade wave started"
    ROLLOUT_BATCH = "rollout.batch", "Upgrade wave moved to its next batch"
    ROLLOUT_PAUSE = "rollout.pause", "Upgrade wave paused"
    ROLLOUT_RESUME = "rollout.resume", "Upgrade wave resumed"
    ROLLOUT_FLOOR = "rollout.floor", "Upgrade wave online-ratio floor changed"
    ROLLOUT_ABORT = "rollout.abort", "Upgrade wave aborted"
    ROLLOUT_SKIP_SOAK = "rollout.skip_soak", "Upgrade wave soak skipped"
    ROLLOUT_RETRY_FAILED = "rollout.retry_failed", "Upgrade wave retried failed agents"
    ROLLOUT_COMPLETE = "rollout.complete", "Upgrade wave completed"
    ALERT_CHANNEL_CREATE = "alert_channel.create", "Alert channel created"
    ALERT_CHANNEL_DELETE = "alert_channel.delete", "Alert channel removed"
    ALERT_CHANNEL_TEST = "alert_channel.test", "Test alert sent"
    ALERT_CHANNEL_DISABLE = "alert_channel.disable", "Alert channel disabled after 24 h of failures"
    ALERT_CHANNEL_ENABLE = "alert_channel.enable", "Alert channel enabled again"
    ALERT_REDELIVER = "alert.redeliver", "Alert delivery retried by hand"
    QUESTION_ASK = "question.ask", "Agent asked a question"
    QUESTION_ANSWER = "question.answer", "Question answered"
    QUESTION_ACK = "question.ack", "Agent received an answer"
    BUDGET_UPDATE = "budget.update", "Budget caps changed"


class ApiKeyScope(models.TextChoices):
    """What a customer API key may do. `read` reads what the portal shows every member
    (never a secret); each other scope is one area's writes. /metrics takes `read`."""

    READ = "read", "Read: the fleet, jobs, findings, waves, settings, activity, metrics"
    TOKENS = "tokens", "Tokens: mint and revoke activation tokens"
    JOBS = "jobs", "Jobs: submit and cancel jobs, report their outcomes"
    AGENTS = "agents", "Agents: pause, resume, label, act in bulk"
    ALERTS = "alerts", "Alerts: alert channels (their URLs), resolve and reopen findings"
    ROLLOUTS = "rollouts", "Rollouts: start and steer upgrade waves (owners grant it)"
    SETTINGS = "settings", "Settings: change the fleet policies (owners grant it)"

    @classmethod
    def owners_grant(cls) -> frozenset[str]:
        """Scopes whose writes only owners make on the portal, so only owners mint them."""
        return frozenset({cls.ROLLOUTS, cls.SETTINGS})

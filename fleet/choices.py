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
    DECOMMISSIONED = "decommissioned", "Decommissioned"


class TokenStatus(models.TextChoices):
    OUTSTANDING = "outstanding", "Outstanding"
    REDEEMED = "redeemed", "Redeemed"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


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


class RolloutState(models.TextChoices):
    DRAFT = "draft", "Draft"
    CANARY = "canary", "Canary"
    ROLLING = "rolling", "Rolling"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"
    FAILED = "failed", "Failed"


# A customer has at most one rollout in these states (a database constraint).
ACTIVE_ROLLOUT_STATES = (RolloutState.CANARY, RolloutState.ROLLING, RolloutState.PAUSED)


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

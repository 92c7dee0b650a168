"""Jobs and their lifecycle: the one table of how a job's status may change."""

from django.db import models

from fleet.choices import AgentRole, JobCancelReason, JobStatus, OutcomeVerdict
from fleet.models.agents import Agent
from fleet.models.lifecycle import StatusQuerySet, Transition
from fleet.models.tenancy import Customer

QUEUED, RUNNING = JobStatus.QUEUED, JobStatus.RUNNING
# A job in one of these has its finished_at set, and keeps it.
FINISHED_JOB_STATUSES = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
# Queued or running, written as an OR (never an IN list): each status has its partial index,
# and only an OR lets the planner read both, however its row estimates come out.
OPEN_JOB = models.Q(status=QUEUED) | models.Q(status=RUNNING)
CLAIM = Transition("claim", frozenset({QUEUED}), RUNNING, "an online agent's claim, under its cap")
SUCCEED = Transition(
    "succeed", frozenset({RUNNING}), JobStatus.SUCCEEDED, "its agent's complete, under its lease"
)
FAIL = Transition(
    "fail",
    frozenset({RUNNING}),
    JobStatus.FAILED,
    "its agent's fail (not retryable, or its last attempt); beat, when a lease expires on "
    "the last attempt",
)
REQUEUE = Transition(
    "requeue",
    frozenset({RUNNING}),
    QUEUED,
    "its agent's retryable fail; beat, when its lease expires; its agent's decommission",
)
CANCEL = Transition(
    "cancel", frozenset({QUEUED}), JobStatus.CANCELLED, "an owner or admin, customer automation"
)
STOP = Transition(
    "stop",
    frozenset({RUNNING}),
    JobStatus.CANCELLED,
    "its agent's report that it stopped the job it was told to stop (an operator's cancel, "
    "or past its max runtime); beat, when the agent has not reported within a lease",
)
# Every status change there is; succeeded, failed and cancelled are final.
JOB_TRANSITIONS = (CLAIM, SUCCEED, FAIL, REQUEUE, CANCEL, STOP)


class JobQuerySet(StatusQuerySet["Job"]):
    def for_customer(self, customer: Customer | int) -> "JobQuerySet":
        return self.filter(customer=customer)


class Job(models.Model):
    """A unit of work for one role, held by at most one agent under a lease."""

    # No index of their own on customer and agent: job_customer_finished and
    # job_agent_status lead with them, and every index costs each claim and finish.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    role = models.CharField(max_length=16, choices=AgentRole.choices)
    payload = models.JSONField(default=dict, help_text="repo, ref, task")
    priority = models.SmallIntegerField(default=0, help_text="Higher runs first.")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs", db_index=False
    )
    attempts = models.PositiveIntegerField(default=0)
    lease_id = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    required_labels = models.JSONField(
        default=dict,
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        help_text="Only an agent with every one of these key: value labels claims it.",
    )
    max_runtime_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Told to stop (timed out) after running this long; empty: the customer's "
        "default, else the product's.",
    )
    stop_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When its agent was told to stop it (running jobs)."
    )
    stop_reason = models.CharField(
        max_length=16, choices=JobCancelReason.choices, blank=True, db_default=""
    )
    idempotency_key = models.CharField(
        max_length=100, blank=True, help_text="The client's key: a retried submit is one job."
    )
    # What its model calls cost, as its agent reported on complete or fail (a running
    # job's heartbeat may report it so far): the list as sent, and its sums.
    usage = models.JSONField(
        default=list,
        db_default=models.Value([], output_field=models.JSONField()),
        blank=True,
        help_text="One item per model used: model, provider, tokens, cost_usd.",
    )
    input_tokens = models.BigIntegerField(default=0, db_default=0)
    output_tokens = models.BigIntegerField(default=0, db_default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0, db_default=0)
    wall_seconds = models.FloatField(null=True, blank=True)
    agent_version = models.CharField(
        max_length=64, blank=True, db_default="", help_text="Its agent's version when it finished."
    )
    # The latest verdict on its output of any source (fleet/models/outcomes.py): what the
    # acceptance rate counts.
    verdict = models.CharField(
        max_length=24, choices=OutcomeVerdict.choices, blank=True, db_default=""
    )
    verdict_at = models.DateTimeField(null=True, blank=True)
    pull_request = models.CharField(
        max_length=500,
        blank=True,
        db_default="",
        help_text="The result's `pull_request` URL (the GitHub receiver matches it).",
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status=JobStatus.RUNNING) | models.Q(agent__isnull=False),
                name="job_running_has_agent",
            ),
            models.UniqueConstraint(
                fields=["customer", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="job_one_per_idempotency_key",
            ),
        ]
        indexes = [
            # The claim path: next queued job of a role, by priority then age (then id,
            # so the claim's ORDER BY reads the index as it is, without a sort).
            models.Index(
                "customer",
                "role",
                models.F("priority").desc(),
                "queued_at",
                "id",
                condition=models.Q(status=JobStatus.QUEUED),
                name="job_queue",
            ),
            # Queued jobs that require labels (few): the heartbeat counts by label set
            # read these rows only (fleet/agent_cache.py).
            models.Index(
                "customer",
                "role",
                condition=models.Q(status=JobStatus.QUEUED) & ~models.Q(required_labels={}),
                name="job_queue_labelled",
            ),
            models.Index(fields=["agent", "status"], name="job_agent_status"),
            # A customer's jobs newest first: the Jobs page (by queue time) and the API's
            # cursor pages (by id), each read from its index without a sort.
            models.Index(fields=["customer", "-queued_at", "-id"], name="job_customer_newest"),
            models.Index(fields=["customer", "id"], name="job_customer_id"),
            models.Index(
                fields=["customer", "status", "finished_at"], name="job_customer_finished"
            ),
            # Beat reads jobs by time across customers: the snapshot's completions and
            # waits, the hourly rollup, the prune.
            models.Index(
                fields=["finished_at"],
                include=["customer", "status"],  # the snapshot counts from the index alone
                condition=models.Q(finished_at__isnull=False),
                name="job_finished_at",
            ),
            models.Index(
                fields=["started_at"],
                condition=models.Q(started_at__isnull=False),
                name="job_started_at",
            ),
            # Running jobs (as many as agents can hold): the sweep's expired leases and
            # max runtimes, the snapshot's running counts.
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(status=JobStatus.RUNNING),
                name="job_running",
            ),
            # A customer's running jobs and their agents: who is busy (the dashboard).
            models.Index(
                fields=["customer", "agent"],
                condition=models.Q(status=JobStatus.RUNNING),
                name="job_running_customer",
            ),
            # Judged jobs (a few): a customer's acceptance rates read these; the minute
            # snapshot and the hourly rollup read them by time across customers.
            models.Index(
                fields=["customer", "verdict_at"],
                condition=models.Q(verdict_at__isnull=False),
                name="job_judged",
            ),
            models.Index(
                fields=["verdict_at"],
                condition=models.Q(verdict_at__isnull=False),
                name="job_judged_at",
            ),
            # The GitHub receiver finds the jobs whose result names a pull request.
            models.Index(
                fields=["customer", "pull_request"],
                condition=~models.Q(pull_request=""),
                name="job_pull_request",
            ),
        ]
        ordering = ["-queued_at"]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.role}, {self.status})"

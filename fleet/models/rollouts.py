from django.conf import settings
from django.db import models

from fleet.choices import (
    ACTIVE_ROLLOUT_STATES,
    ADVANCING_ROLLOUT_STATES,
    RolloutAction,
    RolloutState,
    RolloutTargetState,
)
from fleet.models.agents import Agent
from fleet.models.releases import Release
from fleet.models.tenancy import Customer
from fleet.policy import WAVE
from fleet.versions import SemVerField


class Rollout(models.Model):
    """An upgrade wave: one canary soaked, then batches of the rest, each watched."""

    # What operators may do in each state: the services refuse the rest (the admin's
    # actions report the refusal), the portal offers only these. (Beat moves canary →
    # rolling → completed, and pauses.)
    ACTIONS: dict[str, tuple[RolloutAction, ...]] = {
        RolloutState.CANARY: (
            RolloutAction.PAUSE,
            RolloutAction.SKIP_SOAK,
            RolloutAction.RETRY_FAILED,
            RolloutAction.SET_FLOOR,
            RolloutAction.ABORT,
        ),
        RolloutState.ROLLING: (
            RolloutAction.PAUSE,
            RolloutAction.SKIP_SOAK,
            RolloutAction.RETRY_FAILED,
            RolloutAction.SET_FLOOR,
            RolloutAction.ABORT,
        ),
        RolloutState.PAUSED: (
            RolloutAction.RESUME,
            RolloutAction.RESUME_ANYWAY,
            RolloutAction.RETRY_FAILED,
            RolloutAction.SET_FLOOR,
            RolloutAction.ABORT,
        ),
    }

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="rollouts")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="rollouts")
    state = models.CharField(
        max_length=16, choices=RolloutState.choices, default=RolloutState.CANARY
    )
    canary_soak = models.DurationField(default=WAVE.canary_soak)
    batch_fraction = models.DecimalField(
        max_digits=3, decimal_places=2, default=WAVE.batch_fraction
    )
    batch_watch = models.DurationField(default=WAVE.batch_watch)
    throughput_drop_tolerance = models.DecimalField(
        max_digits=3, decimal_places=2, default=WAVE.throughput_drop_tolerance
    )
    online_ratio_floor = models.DecimalField(
        max_digits=3, decimal_places=2, default=WAVE.online_ratio_floor
    )
    acceptance_drop_tolerance = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=WAVE.acceptance_drop_tolerance,
        db_default=WAVE.acceptance_drop_tolerance,
        help_text="How much (relative) the upgraded agents' acceptance rate may drop.",
    )
    cost_increase_tolerance = models.DecimalField(
        max_digits=4,
        decimal_places=2,
        default=WAVE.cost_increase_tolerance,
        db_default=WAVE.cost_increase_tolerance,
        help_text="How much (relative) their cost per accepted job may grow.",
    )
    agent_deadline = models.DurationField(
        default=WAVE.agent_deadline,
        help_text="How long an agent told to upgrade may take to report; silence is failure.",
    )
    canary_agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty: the healthiest online agent is chosen at start.",
    )
    scope = models.JSONField(
        default=dict,
        blank=True,
        help_text="A chosen part of the fleet: {role: [...], zone: [...], host: [...]}; {} is all.",
    )
    current_batch = models.PositiveIntegerField(default=0, help_text="0 is the canary.")
    batches_total = models.PositiveIntegerField(default=0)
    step_started_at = models.DateTimeField(null=True, blank=True)
    watch_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the current step's last agent upgraded."
    )
    skip_soak = models.BooleanField(default=False)
    gates_waived_batch = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="An owner resumed anyway: the gates pass for this step only (audited).",
    )
    paused_from = models.CharField(max_length=16, choices=RolloutState.choices, blank=True)
    paused_reason = models.TextField(blank=True)
    last_gate = models.JSONField(
        default=dict, blank=True, help_text="The latest gate: each check in words."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A finished wave's targets never change again: their counts are kept when it ends,
    # so lists of waves do not count a whole fleet's targets again for every wave.
    final_targets = models.PositiveIntegerField(null=True, blank=True, editable=False)
    final_done = models.PositiveIntegerField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=models.Q(state__in=ACTIVE_ROLLOUT_STATES),
                name="rollout_one_active_per_customer",
            ),
            models.CheckConstraint(
                condition=models.Q(batch_fraction__gt=0, batch_fraction__lt=1),
                name="rollout_batch_fraction_below_whole",
            ),
        ]
        indexes = [models.Index(fields=["finished_at"], name="rollout_finished")]  # the prune
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.customer} → {self.release.version} ({self.state})"

    @property
    def actions(self) -> tuple[RolloutAction, ...]:
        """What an operator may do to this wave now."""
        return self.ACTIONS.get(self.state, ())

    @property
    def is_advancing(self) -> bool:
        """Beat moves it on (and the portal keeps refreshing it)."""
        return self.state in ADVANCING_ROLLOUT_STATES


class RolloutTarget(models.Model):
    """One agent in a rollout's frozen membership."""

    # Indexed by rollout_target_state (and the unique pair), not on its own.
    rollout = models.ForeignKey(
        Rollout, on_delete=models.CASCADE, related_name="targets", db_index=False
    )
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="rollout_targets")
    batch = models.PositiveIntegerField(null=True, blank=True, help_text="0 is the canary.")
    state = models.CharField(
        max_length=16, choices=RolloutTargetState.choices, default=RolloutTargetState.PENDING
    )
    from_version = SemVerField()
    offered_at = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rollout", "agent"], name="rollout_target_unique"),
        ]
        indexes = [
            # A wave's targets in a state, counted from the index alone (every wave list).
            models.Index(fields=["rollout", "state"], name="rollout_target_state"),
        ]
        ordering = ["rollout", "batch", "agent__name"]

    def __str__(self) -> str:
        return f"{self.agent} in {self.rollout_id} ({self.state})"

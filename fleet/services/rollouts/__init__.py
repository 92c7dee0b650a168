"""Upgrade waves: one canary soaked (24 h), then batches of the rest (25%, each watched
1 h), each step behind gates on the upgraded agents' health and their real work. A failed
gate, a rollback or a silent agent pauses the wave and opens a finding; nobody else is
offered the version until an operator resumes.

planning: who is in a wave and in which batch; engine: beat's rollout_advance, the gates;
reports: what agents report; operators: pause, resume (or resume anyway, waiving the
gates for one step), change the floor, abort, skip a soak, retry."""

from fleet.services.rollouts.engine import Gate, GateCheck, rollout_advance, rollouts_advance_all
from fleet.services.rollouts.operators import (
    rollout_abort,
    rollout_pause,
    rollout_resume,
    rollout_resume_anyway,
    rollout_retry_failed,
    rollout_set_floor,
    rollout_skip_soak,
)
from fleet.services.rollouts.planning import (
    ALL_AT_ONCE_REASON,
    WavePlan,
    plan_batches,
    rollout_plan,
    rollout_scope_clean,
    rollout_start,
)
from fleet.services.rollouts.reports import rollout_record_result, rollout_targets_drop

__all__ = [
    "ALL_AT_ONCE_REASON",
    "Gate",
    "GateCheck",
    "WavePlan",
    "plan_batches",
    "rollout_abort",
    "rollout_advance",
    "rollout_pause",
    "rollout_plan",
    "rollout_record_result",
    "rollout_resume",
    "rollout_resume_anyway",
    "rollout_retry_failed",
    "rollout_scope_clean",
    "rollout_set_floor",
    "rollout_skip_soak",
    "rollout_start",
    "rollout_targets_drop",
    "rollouts_advance_all",
]

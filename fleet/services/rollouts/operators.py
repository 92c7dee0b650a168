"""What owners and staff do to a wave under way: pause, resume, abort, skip a soak,
retry the agents that failed. Each is allowed in the states the model's table says."""

from django.db import transaction
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    AuditAction,
    RolloutAction,
    RolloutState,
    RolloutTargetState,
)
from fleet.errors import RolloutStateError
from fleet.models import Rollout, RolloutTarget
from fleet.services.audit import Actor, audit_record
from fleet.services.rollouts.engine import pause_wave
from fleet.services.rollouts.planning import require_operator


def _locked(rollout: Rollout) -> Rollout:
    return Rollout.objects.select_for_update().select_related("release").get(pk=rollout.pk)


def _require_allowed(rollout: Rollout, action: RolloutAction) -> None:
    """Refuse an action the (locked) wave's state does not allow (Rollout.ACTIONS)."""
    if action not in rollout.actions:
        raise RolloutStateError(
            f"{action.label} is not possible on a {rollout.get_state_display().lower()} wave."
        )


@transaction.atomic
def rollout_pause(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    _require_allowed(rollout, RolloutAction.PAUSE)
    pause_wave(rollout, f"paused by {actor.label}: {reason}", {}, actor)
    return rollout


@transaction.atomic
def rollout_resume(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    _require_allowed(rollout, RolloutAction.RESUME)
    rollout.state = rollout.paused_from or RolloutState.CANARY
    rollout.paused_reason = ""
    rollout.save(update_fields=["state", "paused_reason"])
    agent_facts_changed(customer_id=rollout.customer_id)
    RolloutTarget.objects.filter(
        rollout=rollout, batch=rollout.current_batch, state=RolloutTargetState.OFFERED
    ).update(offered_at=timezone.now())  # a fresh deadline for agents told before the pause
    audit_record(
        actor=actor,
        action=AuditAction.ROLLOUT_RESUME,
        target=rollout,
        customer=rollout.customer_id,
        changes={"reason": [None, reason]},
    )
    return rollout


@transaction.atomic
def rollout_abort(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    _require_allowed(rollout, RolloutAction.ABORT)
    rollout.state = RolloutState.ABORTED
    rollout.finished_at = timezone.now()
    rollout.save(update_fields=["state", "finished_at"])
    RolloutTarget.objects.filter(
        rollout=rollout, state__in=[RolloutTargetState.PENDING, RolloutTargetState.OFFERED]
    ).update(state=RolloutTargetState.EXCLUDED, detail="The wave was aborted.")
    agent_facts_changed(customer_id=rollout.customer_id)
    audit_record(
        actor=actor,
        action=AuditAction.ROLLOUT_ABORT,
        target=rollout,
        customer=rollout.customer_id,
        changes={"reason": [None, reason]},
    )
    return rollout


@transaction.atomic
def rollout_skip_soak(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    """End the current soak or watch now; the gates still run before the next step."""
    require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    _require_allowed(rollout, RolloutAction.SKIP_SOAK)
    rollout.skip_soak = True
    rollout.save(update_fields=["skip_soak"])
    audit_record(
        actor=actor,
        action=AuditAction.ROLLOUT_SKIP_SOAK,
        target=rollout,
        customer=rollout.customer_id,
        changes={"reason": [None, reason]},
    )
    return rollout


@transaction.atomic
def rollout_retry_failed(*, rollout: Rollout, actor: Actor, reason: str) -> int:
    """Offer the version again to agents of the current step that failed or rolled back."""
    require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    _require_allowed(rollout, RolloutAction.RETRY_FAILED)
    retried = RolloutTarget.objects.filter(
        rollout=rollout,
        batch=rollout.current_batch,
        state__in=[RolloutTargetState.FAILED, RolloutTargetState.ROLLED_BACK],
    ).update(
        state=RolloutTargetState.OFFERED, offered_at=timezone.now(), reported_at=None, detail=""
    )
    rollout.watch_started_at = None
    rollout.save(update_fields=["watch_started_at"])
    agent_facts_changed(customer_id=rollout.customer_id)
    audit_record(
        actor=actor,
        action=AuditAction.ROLLOUT_RETRY_FAILED,
        target=rollout,
        customer=rollout.customer_id,
        changes={"agents": [None, retried], "reason": [None, reason]},
    )
    return retried

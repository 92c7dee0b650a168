"""What owners and staff do to a wave under way: pause, resume, abort, skip a soak,
retry the agents that failed. Each is allowed in the states the model's table says."""

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    AuditAction,
    RolloutAction,
    RolloutState,
    RolloutTargetState,
)
from fleet.errors import RolloutRefused, RolloutStateError
from fleet.models import Rollout, RolloutTarget
from fleet.services.audit import Actor, audit_record
from fleet.services.rollouts.engine import pause_wave, rollout_counts_keep
from fleet.services.rollouts.planning import require_operator
from fleet.services.rollouts.reports import rollout_targets_exclude


def _steered(rollout: Rollout, actor: Actor, action: RolloutAction) -> Rollout:
    """The wave, row-locked, once the actor may steer it and its state allows `action`
    (Rollout.ACTIONS); refused otherwise."""
    require_operator(actor, rollout.customer_id)
    rollout = Rollout.objects.select_for_update().select_related("release").get(pk=rollout.pk)
    if action not in rollout.actions:
        raise RolloutStateError(
            f"{action.label} is not possible on a {rollout.get_state_display().lower()} wave."
        )
    return rollout


def _audit(
    rollout: Rollout, actor: Actor, action: AuditAction, reason: str, **more: object
) -> None:
    audit_record(
        actor=actor,
        action=action,
        target=rollout,
        customer=rollout.customer_id,
        changes={**{k: [None, v] for k, v in more.items()}, "reason": [None, reason]},
    )


@transaction.atomic
def rollout_pause(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    rollout = _steered(rollout, actor, RolloutAction.PAUSE)
    pause_wave(rollout, f"paused by {actor.label}: {reason}", {}, actor)
    return rollout


@transaction.atomic
def rollout_resume(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    """Resume where the wave paused; the gates run again before its next step."""
    return _resume(rollout, actor, reason, RolloutAction.RESUME)


@transaction.atomic
def rollout_resume_anyway(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    """Resume and waive the gates for this step only: the owner has judged what they
    measured (the reason is audited); the next step is gated again."""
    return _resume(rollout, actor, reason, RolloutAction.RESUME_ANYWAY)


def _resume(rollout: Rollout, actor: Actor, reason: str, action: RolloutAction) -> Rollout:
    rollout = _steered(rollout, actor, action)
    anyway = action == RolloutAction.RESUME_ANYWAY
    rollout.state = rollout.paused_from or RolloutState.CANARY
    rollout.paused_reason = ""
    if anyway:
        rollout.gates_waived_batch = rollout.current_batch
    rollout.save(update_fields=["state", "paused_reason", "gates_waived_batch"])
    agent_facts_changed(customer_id=rollout.customer_id)
    RolloutTarget.objects.filter(
        rollout=rollout, batch=rollout.current_batch, state=RolloutTargetState.OFFERED
    ).update(offered_at=timezone.now())  # a fresh deadline for agents told before the pause
    more = {"gates_waived_for_batch": rollout.current_batch} if anyway else {}
    _audit(rollout, actor, AuditAction.ROLLOUT_RESUME, reason, **more)
    return rollout


@transaction.atomic
def rollout_set_floor(*, rollout: Rollout, actor: Actor, reason: str, floor: Decimal) -> Rollout:
    """Change the share of the wave's agents that must be online for it to go on."""
    if not Decimal("0") <= floor <= Decimal("1"):
        raise RolloutRefused("The floor is a share between 0% and 100%.", field="floor")
    rollout = _steered(rollout, actor, RolloutAction.SET_FLOOR)
    old = rollout.online_ratio_floor
    rollout.online_ratio_floor = floor
    rollout.save(update_fields=["online_ratio_floor"])
    audit_record(
        actor=actor,
        action=AuditAction.ROLLOUT_FLOOR,
        target=rollout,
        customer=rollout.customer_id,
        changes={"online_ratio_floor": [str(old), str(floor)], "reason": [None, reason]},
    )
    return rollout


@transaction.atomic
def rollout_abort(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    rollout = _steered(rollout, actor, RolloutAction.ABORT)
    rollout.state = RolloutState.ABORTED
    rollout.finished_at = timezone.now()
    rollout.save(update_fields=["state", "finished_at"])
    rollout_targets_exclude(
        RolloutTarget.objects.filter(rollout=rollout), detail="The wave was aborted."
    )
    rollout_counts_keep(rollout)
    agent_facts_changed(customer_id=rollout.customer_id)
    _audit(rollout, actor, AuditAction.ROLLOUT_ABORT, reason)
    return rollout


@transaction.atomic
def rollout_skip_soak(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    """End the current soak or watch now; the gates still run before the next step."""
    rollout = _steered(rollout, actor, RolloutAction.SKIP_SOAK)
    rollout.skip_soak = True
    rollout.save(update_fields=["skip_soak"])
    _audit(rollout, actor, AuditAction.ROLLOUT_SKIP_SOAK, reason)
    return rollout


@transaction.atomic
def rollout_retry_failed(*, rollout: Rollout, actor: Actor, reason: str) -> int:
    """Offer the version again to agents of the current step that failed or rolled back."""
    rollout = _steered(rollout, actor, RolloutAction.RETRY_FAILED)
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
    _audit(rollout, actor, AuditAction.ROLLOUT_RETRY_FAILED, reason, agents=retried)
    return retried

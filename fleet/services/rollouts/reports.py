"""What agents report about a wave: an upgrade result moves its target on (a rollback
pauses the wave), and a decommissioned agent leaves every wave still waiting for it."""

from django.db.models import QuerySet
from django.utils import timezone

from fleet.choices import (
    ACTIVE_ROLLOUT_STATES,
    AlertEventType,
    RolloutState,
    RolloutTargetState,
    UpgradeOutcome,
)
from fleet.models import Agent, RolloutTarget
from fleet.services.alerts import alert_emit
from fleet.services.audit import Actor
from fleet.services.rollouts.engine import pause_wave, rollout_alert_data
from fleet.versions import SemVer


def rollout_record_result(
    *,
    agent: Agent,
    outcome: str,
    to_version: SemVer,
    detail: str,
    actor: Actor,
    back_to: SemVer | None = None,
) -> None:
    """An agent's upgrade report moves its target on; a rollback, or a download the agent
    refused (verify_failed), pauses the wave."""
    target = (
        RolloutTarget.objects.select_for_update()
        .select_related("rollout__release")
        .filter(
            agent=agent, state=RolloutTargetState.OFFERED, rollout__state__in=ACTIVE_ROLLOUT_STATES
        )
        .first()
    )
    if target is None or target.rollout.release.version != to_version:
        return
    now = timezone.now()
    ok = outcome == UpgradeOutcome.SUCCEEDED
    target.state = RolloutTargetState.SUCCEEDED if ok else RolloutTargetState.ROLLED_BACK
    target.reported_at = now
    target.detail = detail or outcome
    target.save(update_fields=["state", "reported_at", "detail"])
    if not ok:
        rollout = target.rollout  # locked with the target (FOR UPDATE covers the join)
        alert_emit(
            customer=rollout.customer_id,
            type=AlertEventType.ROLLOUT_ROLLED_BACK,
            dedup_key=f"rollout.rolled_back:{target.pk}",
            data={
                **rollout_alert_data(rollout),
                "agent": agent.name,
                "outcome": outcome,
                "to_version": str(to_version),
                "back_to": str(back_to or agent.version),
                "detail": detail,
            },
        )
        if rollout.state != RolloutState.PAUSED:
            stayed = "kept running" if outcome == UpgradeOutcome.VERIFY_FAILED else "rolled back to"
            pause_wave(
                rollout,
                f"{agent.name} reported {outcome} and {stayed} "
                f"{back_to or agent.version}. No other agent is offered {to_version}.",
                {"agent": agent.name, "outcome": outcome, "detail": detail},
                actor,
            )


def rollout_targets_exclude(targets: QuerySet[RolloutTarget], *, detail: str) -> int:
    """Take the targets not yet done (pending or offered) out of their wave: they are
    offered nothing more, and no wave waits on their report."""
    return targets.filter(
        state__in=[RolloutTargetState.PENDING, RolloutTargetState.OFFERED]
    ).update(state=RolloutTargetState.EXCLUDED, detail=detail)


def rollout_targets_drop(*, agent_id: int) -> int:
    """A decommissioned agent leaves every wave still waiting for it (in the decommission's
    transaction)."""
    return rollout_targets_exclude(
        RolloutTarget.objects.filter(agent_id=agent_id), detail="The agent was decommissioned."
    )

"""Rollouts, their batches' progress, and an agent's upgrade history."""

from dataclasses import dataclass

from django.db.models import Count, F, IntegerField, Q, QuerySet
from django.db.models.functions import Coalesce

from fleet.choices import RolloutTargetState
from fleet.errors import NotFound
from fleet.models import Agent, Customer, Rollout, RolloutTarget
from fleet.paging import count_of


def targets_counted(where: Q) -> Coalesce:
    """A wave's targets matching `where`, counted for each wave a page shows."""
    return count_of(RolloutTarget.objects.filter(where), "rollout")


TARGETED = ~Q(state=RolloutTargetState.EXCLUDED)
DONE = Q(state=RolloutTargetState.SUCCEEDED)


def with_target_counts(waves: QuerySet[Rollout]) -> QuerySet[Rollout]:
    """n_targets and n_done of each wave: kept when it finished, else counted (COALESCE
    runs the count only for waves still going)."""
    return waves.annotate(
        n_targets=Coalesce("final_targets", targets_counted(TARGETED), output_field=IntegerField()),
        n_done=Coalesce("final_done", targets_counted(DONE), output_field=IntegerField()),
    )


def rollout_final_counts(rollout: Rollout) -> dict[str, int]:
    """A wave's targets and those upgraded, counted once (when it finishes)."""
    return RolloutTarget.objects.filter(rollout=rollout).aggregate(
        final_targets=Count("pk", filter=TARGETED), final_done=Count("pk", filter=DONE)
    )


def rollout_list(customer: Customer | int) -> QuerySet[Rollout]:
    return with_target_counts(
        Rollout.objects.filter(customer=customer).select_related("release", "canary_agent")
    ).order_by("-created_at")


def rollout_get(customer: Customer | int, rollout_id: int) -> Rollout:
    rollout = rollout_list(customer).filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound("No such rollout.")
    return rollout


@dataclass(frozen=True)
class BatchProgress:
    number: int | None  # None: excluded; 0: the canary
    total: int
    counts: dict[str, int]

    @property
    def label(self) -> str:
        if self.number is None:
            return "Excluded"
        return "Canary" if self.number == 0 else f"Batch {self.number}"

    @property
    def succeeded(self) -> int:
        return self.counts.get(RolloutTargetState.SUCCEEDED, 0)


def rollout_batches(rollout: Rollout) -> list[BatchProgress]:
    """Per batch: how many agents, and how many in each state (one query)."""
    rows = (
        RolloutTarget.objects.filter(rollout=rollout)
        .values("batch", "state")
        .annotate(n=Count("pk"))
        .order_by(F("batch").asc(nulls_last=True))
    )
    batches: dict[int | None, dict[str, int]] = {}
    for row in rows:
        batches.setdefault(row["batch"], {})[row["state"]] = row["n"]
    return [BatchProgress(n, sum(c.values()), c) for n, c in batches.items()]


def upgrade_history(agent: Agent) -> QuerySet[RolloutTarget]:
    return (
        RolloutTarget.objects.filter(agent=agent)
        .select_related("rollout__release")
        .order_by("-rollout__created_at")
    )

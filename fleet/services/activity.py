"""What agents say they are doing (a heartbeat's `activity`), and the provider incidents
folded from it: many agents of a customer rate-limited by (or failing at) one model
provider within minutes are one finding, not one each."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ActivityReport:
    """A heartbeat's `activity`, `provider` and `detail` (None when it sent no activity)."""

    activity: str
    provider: str = ""
    detail: str = ""

    def differs_from(self, agent: object) -> bool:
        """Whether the agent's row (as this process keeps it) says something else."""
        return (self.activity, self.provider, self.detail) != (
            getattr(agent, "activity", ""),
            getattr(agent, "activity_provider", ""),
            getattr(agent, "activity_detail", ""),
        )

    def as_fields(self) -> dict[str, str]:
        return {
            "activity": self.activity,
            "activity_provider": self.provider,
            "activity_detail": self.detail,
        }

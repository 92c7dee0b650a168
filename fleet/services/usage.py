"""What a job's model calls cost: the one place usage lists are summed."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class UsageTotals:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal("0")

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_fields(self) -> dict[str, Any]:
        """The Job columns these totals are stored in."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


def usage_totals(items: list[dict[str, Any]]) -> UsageTotals:
    """Sums over a usage list as reported (one item per model used), exact in Decimal.
    Items are already validated (fleet/api/schemas.py UsageIn): non-negative and finite."""
    return UsageTotals(
        input_tokens=sum(int(item.get("input_tokens", 0)) for item in items),
        output_tokens=sum(int(item.get("output_tokens", 0)) for item in items),
        cost_usd=sum((Decimal(str(item.get("cost_usd", 0))) for item in items), Decimal("0")),
    )


def usage_stored(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The list as kept on the job: JSON, its costs as decimal strings (no float drift)."""
    return [{**item, "cost_usd": str(item.get("cost_usd", 0))} for item in items]


def usage_fields(items: list[dict[str, Any]] | None, wall_seconds: float | None) -> dict[str, Any]:
    """The Job fields a finishing report writes: nothing when it reports no usage (a job
    keeps what its heartbeats reported so far), else the list and its sums."""
    fields: dict[str, Any] = {} if wall_seconds is None else {"wall_seconds": wall_seconds}
    if items:
        fields |= {"usage": usage_stored(items), **usage_totals(items).as_fields()}
    return fields

"""Seats: the current license, and the agents and tokens that use it."""

from dataclasses import dataclass

from django.utils import timezone

from fleet.choices import Channel
from fleet.models import ActivationToken, Agent, Customer, License


def customer_active_agent_count(customer: Customer | int) -> int:
    """Agents holding a seat: every agent not decommissioned."""
    return Agent.objects.for_customer(customer).holding_seat().count()


def license_current(customer: Customer | int) -> License | None:
    return License.objects.filter(customer=customer, is_current=True).first()


def customer_channel(customer: Customer | int) -> str:
    """The release channel the customer's license follows (stable without a license)."""
    license = license_current(customer)
    return license.channel if license else Channel.STABLE


@dataclass(frozen=True)
class Seats:
    license: License | None
    max_agents: int
    used: int
    outstanding_tokens: int

    @property
    def free(self) -> int:
        return max(0, self.max_agents - self.used)

    def as_dict(self) -> dict[str, int]:
        return {
            "max_agents": self.max_agents,
            "used": self.used,
            "free": self.free,
            "outstanding_tokens": self.outstanding_tokens,
        }


def license_seats(customer: Customer | int, *, used: int | None = None) -> Seats:
    """`used`: the agents holding a seat, when the caller counted them already (the
    dashboard's numbers did, in the same scan)."""
    license = license_current(customer)
    outstanding = ActivationToken.objects.for_customer(customer).usable(timezone.now()).count()
    return Seats(
        license=license,
        max_agents=license.max_agents if license else 0,
        used=customer_active_agent_count(customer) if used is None else used,
        outstanding_tokens=outstanding,
    )

"""Every shared read. Portal and API reads take the customer, so tenancy is in the query."""

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, Q, QuerySet

from fleet.choices import AgentStatus, Channel
from fleet.models import Agent, Customer, License, Membership, Release


def customer_active_agent_count(customer: Customer | int) -> int:
    """Agents holding a seat: every agent not decommissioned."""
    return (
        Agent.objects.filter(customer=customer).exclude(status=AgentStatus.DECOMMISSIONED).count()
    )


def license_current(customer: Customer | int) -> License | None:
    return License.objects.filter(customer=customer, is_current=True).first()


def release_latest(channel: str = Channel.STABLE) -> Release | None:
    """The newest non-yanked release a channel sees; beta also sees stable releases."""
    channels = [Channel.STABLE, Channel.BETA] if channel == Channel.BETA else [Channel.STABLE]
    return Release.objects.filter(channel__in=channels, yanked=False).order_by("-version").first()


def membership_list(user: User | AnonymousUser) -> QuerySet[Membership]:
    if not user.is_authenticated:
        return Membership.objects.none()
    return Membership.objects.filter(user=user).select_related("customer")


def agent_list(customer: Customer) -> QuerySet[Agent]:
    return Agent.objects.filter(customer=customer).select_related("host").order_by("status", "name")


def agent_status_counts(customer: Customer) -> dict[str, int]:
    """Agents by status in one query, every status present."""
    row = Agent.objects.filter(customer=customer).aggregate(
        **{status: Count("pk", filter=Q(status=status)) for status in AgentStatus.values}
    )
    return {status: row[status] for status in AgentStatus.values}

from django.db.models import QuerySet

from fleet.errors import NotFound
from fleet.models import AlertChannel, AlertDelivery, Customer


def alert_channel_list(customer: Customer | int) -> QuerySet[AlertChannel]:
    return AlertChannel.objects.filter(customer=customer).order_by("created_at", "id")


def alert_channel_get(customer: Customer | int, channel_id: int) -> AlertChannel:
    """The customer's channel; another customer's is as missing as one never made."""
    channel = alert_channel_list(customer).filter(pk=channel_id).first()
    if channel is None:
        raise NotFound("No such alert channel.")
    return channel


def alert_delivery_list(customer: Customer | int) -> QuerySet[AlertDelivery]:
    """Every attempt, newest first, with its event and channel."""
    return (
        AlertDelivery.objects.filter(customer=customer)
        .select_related("event", "channel")
        .order_by("-created_at", "-id")
    )


def alert_delivery_get(customer: Customer | int, delivery_id: int) -> AlertDelivery:
    delivery = AlertDelivery.objects.filter(customer=customer, pk=delivery_id).first()
    if delivery is None:
        raise NotFound("No such alert delivery.")
    return delivery

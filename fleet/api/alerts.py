"""Customer automation with an API key: alert channels."""

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router, Status
from ninja.pagination import paginate

from fleet.api.auth import authed_key, key_alerts
from fleet.api.customers import api_key_actor
from fleet.api.pagination import BoundedPagination
from fleet.api.schemas import (
    AlertChannelCreatedOut,
    AlertChannelIn,
    AlertChannelOut,
    AlertTestOut,
    errors,
)
from fleet.api.throttles import ApiKeyThrottle
from fleet.models import AlertChannel
from fleet.selectors import alert_channel_get, alert_channel_list
from fleet.services.alerts import alert_channel_create, alert_channel_delete, alert_channel_test

# Every operation, the list too, takes `alerts`: a webhook or Slack URL often carries a
# secret of its own, which a read-only key has no need to see.
router = Router(tags=["alerts"], auth=key_alerts, throttle=[ApiKeyThrottle()])


@router.post(
    "/alerts/channels",
    response={201: AlertChannelCreatedOut, **errors(401, 403, 413, 422, 429)},
    summary="Add an alert channel (a webhook's signing secret is in this answer only)",
)
def create_channel(request: HttpRequest, body: AlertChannelIn) -> Status[AlertChannelCreatedOut]:
    channel, secret = alert_channel_create(
        customer=authed_key(request).customer,
        kind=body.kind,
        name=body.name,
        url=body.url,
        email=body.email,
        routing_key=body.routing_key,
        events=[str(e) for e in body.events],
        min_severity=body.min_severity,
        actor=api_key_actor(request),
    )
    out = AlertChannelCreatedOut.from_orm(channel)
    out.secret = secret
    return Status(201, out)


@router.get(
    "/alerts/channels",
    response={200: list[AlertChannelOut], **errors(401, 403, 422, 429)},
    summary="The customer's alert channels, oldest first",
)
@paginate(BoundedPagination)
def list_channels(request: HttpRequest) -> QuerySet[AlertChannel]:
    return alert_channel_list(authed_key(request).customer_id)


@router.delete(
    "/alerts/channels/{channel_id}",
    response={204: None, **errors(401, 403, 404, 422, 429)},
    summary="Remove an alert channel and its delivery log",
)
def delete_channel(request: HttpRequest, channel_id: int) -> Status[None]:
    channel = alert_channel_get(authed_key(request).customer_id, channel_id)
    alert_channel_delete(channel=channel, actor=api_key_actor(request))
    return Status(204, None)


@router.post(
    "/alerts/channels/{channel_id}/test",
    response={202: AlertTestOut, **errors(401, 403, 404, 422, 429)},
    summary="Send an alert.test event to the channel now",
)
def test_channel(request: HttpRequest, channel_id: int) -> Status[AlertTestOut]:
    channel = alert_channel_get(authed_key(request).customer_id, channel_id)
    event = alert_channel_test(channel=channel, actor=api_key_actor(request))
    return Status(202, AlertTestOut(event_id=event.public_id, type=event.type))

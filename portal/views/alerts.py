"""Alerts: the customer's channels and every delivery attempt. Owners and admins add,
test, remove and redeliver; viewers see it all, with the controls disabled."""

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.errors import FleetError, InvalidAlertChannel
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.alerts import (
    alert_channel_create,
    alert_channel_delete,
    alert_channel_enable,
    alert_channel_test,
    alert_delivery_redeliver,
)
from portal.forms import AlertChannelForm
from portal.views.base import PortalRequest, member_view, page_context, partial_or_page

RECENT_DELIVERIES = 50


@never_cache
@member_view(steer=True, posts_only=True)
def alerts(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = AlertChannelForm()
    created = None
    if request.method == "POST":
        form = AlertChannelForm(request.POST)
        if form.is_valid():
            try:
                created = alert_channel_create(
                    customer=customer, actor=request_actor(request), **form.cleaned_data
                )
                form = AlertChannelForm()
            except InvalidAlertChannel as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.detail)
    return render(
        request,
        partial_or_page(request, "portal/alerts.html", "deliveries"),
        page_context(
            request,
            form=form,
            created=created,
            channels=selectors.alert_channel_list(customer),
            deliveries=selectors.alert_delivery_list(customer)[:RECENT_DELIVERIES],
            poll_seconds=settings.PORTAL_POLL_SECONDS,
        ),
        status=422 if form.errors else 200,
    )


@member_view(steer=True)
@require_POST
def alert_channel_action(
    request: PortalRequest, customer: Customer, channel_id: int, action: str
) -> HttpResponse:
    channel = selectors.alert_channel_get(customer, channel_id)
    actor = request_actor(request)
    if action == "test":
        alert_channel_test(channel=channel, actor=actor)
        messages.success(request, f"A test alert is on its way to {channel}.")
    elif action == "enable":
        alert_channel_enable(channel=channel, actor=actor)
        messages.success(request, f"{channel} is enabled again.")
    elif action == "delete":
        alert_channel_delete(channel=channel, actor=actor)
        messages.success(request, f"{channel} is removed.")
    else:
        return HttpResponse(status=404)
    return redirect("portal:alerts")


@member_view(steer=True)
@require_POST
def alert_redeliver_view(
    request: PortalRequest, customer: Customer, delivery_id: int
) -> HttpResponse:
    delivery = selectors.alert_delivery_get(customer, delivery_id)
    try:
        alert_delivery_redeliver(delivery=delivery, actor=request_actor(request))
        messages.success(request, "Sent again; the new attempt is at the top.")
    except FleetError as exc:
        messages.error(request, exc.detail)
    return redirect("portal:alerts")

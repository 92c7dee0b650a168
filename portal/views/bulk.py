"""Actions on every agent matching the Agents page's filters (not just the page shown):
asked for there, then watched on their own page, whose progress bar htmx refreshes every
second until the action is done."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import BulkActionKind, BulkActionState
from fleet.errors import FleetError
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.bulk import bulk_action_start
from portal.forms import BulkActionForm
from portal.views.base import PortalRequest, member_view, page_context, partial_or_page

AGENT_FILTERS = ("status", "role", "version", "host", "zone", "label", "q")
DONE_POLLING = 286  # htmx stops polling on this status (django-htmx's HttpResponseStopPolling)


@member_view(steer=True)
@require_POST
def agents_bulk(request: PortalRequest, customer: Customer) -> HttpResponse:
    filters = {k: request.POST.get(k, "").replace("\x00", "").strip()[:200] for k in AGENT_FILTERS}
    form = BulkActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect(reverse("portal:agents"))
    data = form.cleaned_data
    try:
        action = bulk_action_start(
            customer=customer,
            kind=data["kind"],
            filters=filters,
            params={"reason": data["reason"], "labels": data["labels"]},
            actor=request_actor(request),
        )
    except FleetError as exc:
        messages.error(request, exc.detail)
        return redirect(reverse("portal:agents"))
    return redirect("portal:bulk_detail", action_id=action.pk)


@member_view()
def bulk_detail(request: PortalRequest, customer: Customer, action_id: int) -> HttpResponse:
    action = selectors.bulk_action_get(customer, action_id)
    done = action.state == BulkActionState.DONE
    return render(
        request,
        partial_or_page(request, "portal/bulk_action.html", "progress"),
        page_context(request, action=action, done=done, kinds=BulkActionKind),
        status=DONE_POLLING if request.htmx and done else 200,
    )

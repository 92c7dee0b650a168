"""Anomalies: the unresolved ones as incidents (one per cause, its findings listed);
resolve an incident or one finding with a note, reopen one."""

from django.contrib import messages
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.anomalies import anomalies_reopen, anomalies_resolve
from portal.views.base import (
    PortalRequest,
    member_view,
    note_or_message,
    page_context,
    paginate,
)


@member_view()
def anomalies(request: PortalRequest, customer: Customer) -> HttpResponse:
    state = request.GET.get("state", "open")
    if state == "open":
        context = page_context(
            request, state=state, incidents=selectors.anomaly_incidents(customer)
        )
    else:
        context = page_context(
            request, state=state, page=paginate(request, selectors.anomaly_list(customer, state))
        )
    return render(request, "portal/anomalies.html", context)


@member_view(steer=True)
@require_POST
def incident_resolve_view(request: PortalRequest, customer: Customer) -> HttpResponse:
    """Resolve every open finding of one cause at once (each is audited)."""
    cause = request.POST.get("cause", "")
    incident = next((i for i in selectors.anomaly_incidents(customer) if i.cause == cause), None)
    note = note_or_message(request)
    if incident is not None and note is not None:
        resolved = anomalies_resolve(
            where=Q(customer=customer, pk__in=incident.ids),
            note=note,
            actor=request_actor(request),
        )
        messages.success(request, f"Resolved {resolved} finding{pluralize(resolved)}.")
    elif incident is None:
        messages.error(request, "Nothing open with that cause any more.")
    return redirect("portal:anomalies")


@member_view(steer=True)
@require_POST
def anomaly_resolve_view(
    request: PortalRequest, customer: Customer, anomaly_id: int
) -> HttpResponse:
    anomaly = selectors.anomaly_get(customer, anomaly_id)
    note = note_or_message(request)
    if note is not None:
        anomalies_resolve(where=Q(pk=anomaly.pk), note=note, actor=request_actor(request))
        messages.success(request, "Resolved.")
    return redirect("portal:anomalies")


@member_view(steer=True)
@require_POST
def anomaly_reopen_view(
    request: PortalRequest, customer: Customer, anomaly_id: int
) -> HttpResponse:
    anomaly = selectors.anomaly_get(customer, anomaly_id)
    note = note_or_message(request)
    if note is not None:
        if anomalies_reopen(ids=[anomaly.pk], note=note, actor=request_actor(request)):
            messages.success(request, "Reopened.")
        else:
            messages.error(request, "A newer finding with this fingerprint is already open.")
    return redirect(f"{reverse('portal:anomalies')}?state=resolved")

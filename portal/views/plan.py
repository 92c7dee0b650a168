"""Plan: a repository's size against the fleet and the license's free seats."""

from django.http import HttpResponse
from django.shortcuts import render

from fleet import selectors
from fleet.models import Customer
from portal.forms import PlanForm
from portal.views.base import PortalRequest, member_view, page_context


@member_view()
def plan(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = PlanForm(request.GET or None)
    roles = selectors.role_numbers(customer)  # the sizing and the advice read the same
    rows = (
        selectors.fleet_sizing(customer, form.cleaned_data["repo_loc"], roles=roles)
        if form.is_valid()
        else []
    )
    return render(
        request,
        "portal/plan.html",
        page_context(
            request,
            form=form,
            rows=rows,
            seats=selectors.license_seats(customer),
            advice=selectors.fleet_advice(customer, roles=roles),
            needed=sum(max(r.recommended_min - r.current, 0) for r in rows),
        ),
    )

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from fleet import selectors


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    memberships = list(selectors.membership_list(request.user))
    if not memberships:
        return render(request, "portal/no_customer.html", status=200)
    chosen = request.GET.get("customer")
    membership = next((m for m in memberships if m.customer.slug == chosen), memberships[0])
    customer = membership.customer
    context = {
        "memberships": memberships,
        "membership": membership,
        "customer": customer,
        "license": selectors.license_current(customer),
        "status_counts": selectors.agent_status_counts(customer),
        "agents": selectors.agent_list(customer)[:200],
    }
    return render(request, "portal/dashboard.html", context)

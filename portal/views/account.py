"""The member's account: which customer they act for, its API keys and its audit log."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import AuditAction
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.api_keys import api_key_mint, api_key_revoke
from fleet.services.customers import customer_settings_set
from portal.forms import ApiKeyForm, CustomerSettingsForm
from portal.views.base import (
    SESSION_CUSTOMER,
    PortalRequest,
    member_view,
    page_context,
    paginate,
    partial_or_page,
)


@login_required
@require_POST
def switch_customer(request: HttpRequest) -> HttpResponse:
    slug = request.POST.get("customer", "").replace("\x00", "")
    membership = selectors.membership_list(request.user).filter(customer__slug=slug).first()
    if membership is not None:
        request.session[SESSION_CUSTOMER] = membership.customer_id
    return redirect("portal:dashboard")


@never_cache
@member_view(steer=True, posts_only=True)
def api_keys(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = ApiKeyForm()
    minted = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            minted = api_key_mint(
                customer=customer, name=form.cleaned_data["name"], actor=request_actor(request)
            )
            form = ApiKeyForm()
    return render(
        request,
        partial_or_page(request, "portal/api_keys.html", "mint"),
        page_context(
            request,
            form=form,
            minted=minted,
            keys=selectors.api_key_list(customer),
        ),
        status=422 if form.errors else 200,
    )


@member_view(steer=True)
@require_POST
def api_key_revoke_view(request: PortalRequest, customer: Customer, key_id: int) -> HttpResponse:
    api_key_revoke(key=selectors.api_key_get(customer, key_id), actor=request_actor(request))
    messages.success(request, "The key is revoked; it stops working at once.")
    return redirect("portal:api_keys")


@member_view(owner=True, posts_only=True)
def customer_settings(request: PortalRequest, customer: Customer) -> HttpResponse:
    """The customer's policies: every member reads them, owners change them."""
    runtime = customer.job_max_runtime_seconds
    initial = {
        "stale_cleanup_days": customer.stale_cleanup_days,
        "job_max_runtime_minutes": runtime // 60 if runtime else None,
    }
    form = CustomerSettingsForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        minutes = form.cleaned_data["job_max_runtime_minutes"]
        customer_settings_set(
            customer=customer,
            stale_cleanup_days=form.cleaned_data["stale_cleanup_days"],
            job_max_runtime_seconds=minutes * 60 if minutes else None,
            actor=request_actor(request),
        )
        messages.success(request, "Settings saved.")
        return redirect("portal:settings")
    return render(
        request,
        "portal/settings.html",
        page_context(request, form=form),
        status=422 if form.errors else 200,
    )


# The areas of the action menu, by the part of an action's value before its dot.
ACTION_AREAS = {
    "agent": "Agents",
    "token": "Activation tokens",
    "api_key": "API keys",
    "job": "Jobs",
    "anomaly": "Findings",
    "customer": "Customer and members",
    "membership": "Customer and members",
    "license": "License",
    "release": "Releases",
    "rollout": "Upgrade waves",
    "alert_channel": "Alerts",
    "alert": "Alerts",
}


def _action_menu() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every action under its area; machine events say so."""
    areas: dict[str, list[tuple[str, str]]] = {}
    for value, label in AuditAction.choices:
        area = ACTION_AREAS.get(value.partition(".")[0], "Other")
        machine = " (machine)" if value in selectors.MACHINE_ACTIONS else ""
        areas.setdefault(area, []).append((value, f"{label}{machine}"))
    return list(areas.items())


@member_view()
def activity(request: PortalRequest, customer: Customer) -> HttpResponse:
    actor, action = request.GET.get("actor", ""), request.GET.get("action", "")
    filters = {
        "actor": actor if actor in selectors.ActorKind.values else "",
        "action": action if action in AuditAction.values else "",
        "machine": "1" if request.GET.get("machine") == "1" else "",
    }
    events = selectors.audit_search(
        customer,
        actor=filters["actor"],
        action=filters["action"],
        machine=bool(filters["machine"]),
    )
    return render(
        request,
        partial_or_page(request, "portal/activity.html", "events"),
        page_context(
            request,
            page=paginate(request, events),
            filters=filters,
            actors=selectors.ActorKind.choices,
            actions=_action_menu(),
            query=urlencode({k: v for k, v in filters.items() if v}),
            filtered=bool(filters["actor"] or filters["action"]),
            # Naming an action shows it, machine or not.
            machine_hidden=not (filters["machine"] or filters["action"]),
        ),
    )

"""The member's account: which customer they act for, its API keys and its audit log
(read on the Activity page, downloaded by owners and admins)."""

from dataclasses import dataclass
from datetime import timedelta
from typing import cast
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import AuditAction, MemberRole
from fleet.errors import FleetError, InvalidInput
from fleet.http import request_actor
from fleet.models import AuditEvent, Customer
from fleet.selectors.audit_export import (
    BOUND_MAX_LENGTH,
    ExportFormat,
    ExportRange,
    ExportRangeError,
    audit_export,
    audit_export_events,
    audit_in_range,
    export_range,
)
from fleet.services.api_keys import api_key_mint, api_key_revoke
from fleet.services.budgets import budgets_with_spend
from fleet.services.customers import customer_maintenance_window_set, customer_settings_set
from portal.forms import ApiKeyForm, CustomerSettingsForm, MaintenanceWindowForm
from portal.views.base import (
    SESSION_CUSTOMER,
    PortalRequest,
    member_view,
    page_context,
    paginate,
    partial_or_page,
)
from portal.views.budgets import BudgetCapForm


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
    """Mint (a member grants at most the scopes their role may use) and list keys."""
    owner = request.membership.role == MemberRole.OWNER
    form = ApiKeyForm(owner=owner)
    minted = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST, owner=owner)
        if form.is_valid():
            days = form.cleaned_data["expires_in_days"]
            try:
                minted = api_key_mint(
                    customer=customer,
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    expires_at=timezone.now() + timedelta(days=days) if days else None,
                    actor=request_actor(request),
                )
                form = ApiKeyForm(owner=owner)
            except FleetError as exc:  # at the cap of active keys
                form.add_error("name", exc.detail)
    return render(
        request,
        partial_or_page(request, "portal/api_keys.html", "mint"),
        page_context(
            request,
            form=form,
            minted=minted,
            page=paginate(request, selectors.api_key_list(customer)),
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
    """The customer's policies and its maintenance window: every member reads them,
    owners change them."""
    runtime = customer.job_max_runtime_seconds
    initial = {
        "stale_cleanup_days": customer.stale_cleanup_days,
        "job_max_runtime_minutes": runtime // 60 if runtime else None,
    }
    window_initial = {
        "time_zone": customer.time_zone,
        "days": customer.maintenance_days,
        "start": customer.maintenance_start,
        "end": customer.maintenance_end,
    }
    posted_window = request.method == "POST" and "maintenance_window" in request.POST
    form = CustomerSettingsForm(
        request.POST if request.method == "POST" and not posted_window else None,
        initial=initial,
    )
    window = MaintenanceWindowForm(request.POST if posted_window else None, initial=window_initial)
    if posted_window and window.is_valid():
        data = window.cleaned_data
        try:
            customer_maintenance_window_set(
                customer=customer,
                time_zone=data["time_zone"],
                days=data["days"],
                start=data["start"],
                end=data["end"],
                actor=request_actor(request),
            )
        except InvalidInput as exc:
            field = exc.extra.get("field")
            window.add_error(field if field in window.fields else None, exc.detail)
        else:
            messages.success(request, "Maintenance window saved.")
            return redirect("portal:settings")
    elif request.method == "POST" and not posted_window and form.is_valid():
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
        page_context(
            request,
            form=form,
            window=window,
            budgets=budgets_with_spend(customer),
            budget_form=BudgetCapForm(),
        ),
        status=422 if form.errors or window.errors else 200,
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
    "user": "Sign-in",
    "license": "License",
    "release": "Releases",
    "rollout": "Upgrade waves",
    "alert_channel": "Alerts",
    "alert": "Alerts",
    "question": "Questions",
    "budget": "Budgets",
}


def _action_menu() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every action under its area; machine events say so."""
    areas: dict[str, list[tuple[str, str]]] = {}
    for value, label in AuditAction.choices:
        area = ACTION_AREAS.get(value.partition(".")[0], "Other")
        machine = " (machine)" if value in selectors.MACHINE_ACTIONS else ""
        areas.setdefault(area, []).append((value, f"{label}{machine}"))
    return list(areas.items())


# The Activity page's range as its form names it, for messages about a bad one.
RANGE_FIELDS = {"since": "From", "until": "To", "format": "Format"}


@dataclass(frozen=True)
class ActivityFilters:
    """The Activity page's filters as the request gave them (unknown values dropped, the
    range's text kept to show back), and the range they name, or the reason they name none."""

    values: dict[str, str]
    period: ExportRange
    error: str = ""


def _activity_filters(request: PortalRequest) -> ActivityFilters:
    actor, action = request.GET.get("actor", ""), request.GET.get("action", "")
    since, until = request.GET.get("since", ""), request.GET.get("until", "")
    values = {
        "actor": actor if actor in selectors.ActorKind.values else "",
        "action": action if action in AuditAction.values else "",
        "machine": "1" if request.GET.get("machine") == "1" else "",
        # Shown back in the form as given, less what no form field can hold.
        "since": since.replace("\x00", "").strip()[:BOUND_MAX_LENGTH],
        "until": until.replace("\x00", "").strip()[:BOUND_MAX_LENGTH],
    }
    try:
        return ActivityFilters(values, export_range(since, until))
    except ExportRangeError as exc:
        return ActivityFilters(values, ExportRange(), f"“{RANGE_FIELDS[exc.field]}” {exc.message}.")


def _activity_events(customer: Customer, filters: ActivityFilters) -> QuerySet[AuditEvent]:
    """The customer's events the filters pick, without their range (an export closes it)."""
    return audit_export_events(
        customer,
        actor=filters.values["actor"],
        action=filters.values["action"],
        machine=bool(filters.values["machine"]),
    )


def _activity_page(
    request: PortalRequest, customer: Customer, filters: ActivityFilters, error: str = ""
) -> HttpResponse:
    error = error or filters.error
    events = audit_in_range(_activity_events(customer, filters), filters.period)
    values = filters.values
    return render(
        request,
        partial_or_page(request, "portal/activity.html", "events"),
        page_context(
            request,
            page=paginate(request, events),
            filters=values,
            actors=selectors.ActorKind.choices,
            actions=_action_menu(),
            query=urlencode({k: v for k, v in values.items() if v}),
            filtered=any(values[k] for k in ("actor", "action", "since", "until")),
            # Naming an action shows it, machine or not.
            machine_hidden=not (values["machine"] or values["action"]),
            range_error=error,
            export_formats=ExportFormat.choices,
        ),
        status=422 if error else 200,
    )


@member_view()
def activity(request: PortalRequest, customer: Customer) -> HttpResponse:
    return _activity_page(request, customer, _activity_filters(request))


@never_cache
@member_view(steer=True)
def activity_export(request: PortalRequest, customer: Customer) -> HttpResponse:
    """The events the Activity page shows with these filters, as a CSV or JSON Lines
    download, streamed. Owners and admins only: the log names people and their
    addresses. Bad input shows the page again with the reason (422)."""
    filters = _activity_filters(request)
    fmt = request.GET.get("format", "")
    if filters.error or fmt not in ExportFormat.values:
        return _activity_page(
            request, customer, filters, filters.error or "Choose CSV or JSON Lines to download."
        )
    export = audit_export(
        _activity_events(customer, filters),
        ExportFormat(fmt),
        name=customer.slug,
        period=filters.period,
    )
    response = StreamingHttpResponse(
        export.chunks,
        content_type=export.content_type,
        headers={"Content-Disposition": content_disposition_header(True, export.filename)},
    )
    # member_view is typed for HttpResponse; Django serves any HttpResponseBase.
    return cast(HttpResponse, response)

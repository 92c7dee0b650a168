"""Agents and hosts: find an agent among many, see its history, decommission it (which
frees its seat); hosts with their zone mix and memory budget."""

from datetime import timedelta
from typing import TYPE_CHECKING, TypedDict, cast

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import AgentRole, AgentStatus, JobStatus
from fleet.errors import AgentStateConflict, FleetError, InvalidVersion
from fleet.http import request_actor
from fleet.labels import labels_text
from fleet.models import Customer, Host
from fleet.policy import CLEANUP_UNDO_WINDOW
from fleet.services.agent_controls import (
    agent_labels_set,
    agent_pause,
    agent_resume,
    agent_update_pin_set,
)
from fleet.services.agents import agent_decommission
from fleet.services.cleanup import agent_cleanup_undo
from fleet.services.detections import host_memory_budget_mb

if TYPE_CHECKING:  # django-stubs-ext is a development dependency
    from django_stubs_ext import WithAnnotations

from portal.forms import AgentLabelsForm, AgentUpdatePinForm, BulkActionForm, PauseAgentForm
from portal.views.base import (
    PortalRequest,
    label_filter,
    member_view,
    page_context,
    paginate,
    partial_or_page,
    query_string,
    sort_links,
)

# The sortable columns (selectors.AGENT_SORTS).
SORT_COLUMNS = {
    "name": "Name",
    "role": "Role",
    "version": "Version",
    "host": "Host",
    "heard": "Last heartbeat",
}


@member_view()
def agents(request: PortalRequest, customer: Customer) -> HttpResponse:
    filters = {
        k: request.GET.get(k, "").replace("\x00", "").strip()[:200]
        for k in ("status", "role", "version", "host", "zone", "label", "q", "sort")
    }
    if filters["sort"].removeprefix("-") not in selectors.AGENT_SORTS:
        filters["sort"] = ""
    page = paginate(request, selectors.agent_search(customer, filters))
    return render(
        request,
        partial_or_page(request, "portal/agents.html", "agent_table"),
        page_context(
            request,
            page=page,
            filters=filters,
            choices=selectors.agent_filter_choices(customer),
            statuses=AgentStatus.choices,
            roles=AgentRole.choices,
            sorts={link.key: link for link in sort_links(SORT_COLUMNS, filters)},
            query=query_string(**{k: v for k, v in filters.items() if k != "sort"}),
            # The poll asks for this very view of the table: filters, sort and page.
            poll_query=query_string(**filters, page=page.number if page.number > 1 else ""),
            poll_seconds=settings.PORTAL_POLL_SECONDS,
            cleanup_due=[] if request.htmx else selectors.agents_cleanup_due(customer),
            bulk_form=BulkActionForm(),
            filter_fields={k: v for k, v in filters.items() if k != "sort" and v},
        ),
    )


@member_view()
def agent_detail(request: PortalRequest, customer: Customer, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    return render(
        request,
        "portal/agent_detail.html",
        page_context(
            request,
            agent=agent,
            pause_form=PauseAgentForm(),
            labels_form=AgentLabelsForm(initial={"labels": labels_text(agent.labels)}),
            pin_form=AgentUpdatePinForm(
                initial={
                    "channel": agent.update_channel,
                    "version": str(agent.pinned_version or ""),
                }
            ),
            cleanup_due=agent in selectors.agents_cleanup_due(customer),
            restore_until=agent.cleaned_up_at + CLEANUP_UNDO_WINDOW
            if agent.cleaned_up_at
            else None,
            running=agent.jobs.filter(status=JobStatus.RUNNING).count(),
            work=selectors.agent_work(agent.pk),
            jobs=agent.jobs.order_by("-queued_at")[:20],
            anomalies=agent.anomalies.order_by("-last_seen")[:20],
            upgrades=selectors.upgrade_history(agent)[:20],
            heartbeats=selectors.audit_list(customer).filter(
                target_type="fleet.agent", target_id=str(agent.pk)
            )[:20],
        ),
    )


@member_view(steer=True)
@require_POST
def agent_decommission_view(
    request: PortalRequest, customer: Customer, agent_id: int
) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    if agent_decommission(agent=agent, actor=request_actor(request)):
        messages.success(request, f"{agent.name} is decommissioned; its seat is free.")
    return redirect("portal:agent_detail", agent_id=agent.pk)


@member_view(steer=True)
@require_POST
def agent_pause_view(request: PortalRequest, customer: Customer, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    form = PauseAgentForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why you pause the agent (the reason is audited).")
        return redirect("portal:agent_detail", agent_id=agent.pk)
    minutes = form.cleaned_data["timeout_minutes"]
    try:
        status = agent_pause(
            agent=agent,
            reason=form.cleaned_data["reason"],
            timeout=timedelta(minutes=minutes) if minutes else None,
            drain=form.cleaned_data["drain"],
            actor=request_actor(request),
        )
    except AgentStateConflict as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"{agent.name} is draining: it finishes its running jobs, claims nothing, and "
            "is paused when they are done."
            if status == AgentStatus.DRAINING
            else f"{agent.name} is paused: it claims no jobs until resumed.",
        )
    return redirect("portal:agent_detail", agent_id=agent.pk)


@member_view(steer=True)
@require_POST
def agent_labels_view(request: PortalRequest, customer: Customer, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    form = AgentLabelsForm(request.POST)
    if not form.is_valid():
        problems = form.errors.get("labels") or ["Labels look like gpu=a100."]
        messages.error(request, " ".join(str(problem) for problem in problems))
    elif agent_labels_set(
        agent=agent, labels=form.cleaned_data["labels"], actor=request_actor(request)
    ):
        messages.success(
            request, f"{agent.name}'s labels are saved: it claims jobs that require them."
        )
    return redirect("portal:agent_detail", agent_id=agent.pk)


@member_view(steer=True)
@require_POST
def agent_update_pin_view(
    request: PortalRequest, customer: Customer, agent_id: int
) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    form = AgentUpdatePinForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a channel, and a version like 1.10.0 or nothing.")
        return redirect("portal:agent_detail", agent_id=agent.pk)
    try:
        changed = agent_update_pin_set(
            agent=agent,
            channel=form.cleaned_data["channel"],
            version=form.cleaned_data["version"].strip() or None,
            actor=request_actor(request),
        )
    except (InvalidVersion, AgentStateConflict) as exc:
        messages.error(request, exc.detail)
    else:
        if changed:
            messages.success(request, f"{agent.name}'s update pin is saved.")
    return redirect("portal:agent_detail", agent_id=agent.pk)


@member_view(steer=True)
@require_POST
def agent_resume_view(request: PortalRequest, customer: Customer, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    if agent_resume(agent=agent, actor=request_actor(request)):
        messages.success(request, f"{agent.name} is resumed: it claims jobs again.")
    return redirect("portal:agent_detail", agent_id=agent.pk)


@member_view(steer=True)
@require_POST
def agent_restore_view(request: PortalRequest, customer: Customer, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    try:
        agent_cleanup_undo(agent=agent, actor=request_actor(request))
    except FleetError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request,
            f"{agent.name} is restored: it holds a seat again and is back at its next heartbeat.",
        )
    return redirect("portal:agent_detail", agent_id=agent.pk)


class HostRow(TypedDict):
    """What a row of the hosts page carries beyond the Host: `selectors.host_list`'s
    counts, and the memory budget this view adds."""

    n_agents: int
    n_testers: int
    n_online: int
    budget_mb: int


@member_view()
def hosts(request: PortalRequest, customer: Customer) -> HttpResponse:
    # host_list annotates the counts but is typed as plain Hosts; name what it carries
    # (quoted: WithAnnotations with a TypedDict exists for type checkers only).
    label = label_filter(request)
    page = paginate(request, selectors.host_list(customer, label=label))
    for host in cast("list[WithAnnotations[Host, HostRow]]", page.object_list):
        host.budget_mb = host_memory_budget_mb(host.n_agents, host.n_testers)
    return render(
        request,
        "portal/hosts.html",
        page_context(
            request,
            page=page,
            zones=selectors.zone_mix(customer, label=label),
            label=label,
            query=query_string(label=label),
        ),
    )

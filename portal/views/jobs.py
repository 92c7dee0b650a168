"""Jobs: find one among many (by status and role, sorted by time or priority, the table
refreshing itself), see one whole (payload, result or error, attempts, timeline); submit,
and cancel a queued one."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import AgentRole, JobStatus
from fleet.errors import FleetError, NotFound
from fleet.http import request_actor
from fleet.models import Customer, Job
from fleet.services.jobs import job_cancel, job_submit
from portal.forms import SubmitJobForm
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

# The sortable columns (selectors.JOB_SORTS), in the table's order.
SORT_COLUMNS = {
    "priority": "Priority",
    "queued": "Queued",
    "started": "Started",
    "finished": "Finished",
}


@dataclass(frozen=True)
class StatusTab:
    """A status filter above the table, with how many jobs it holds."""

    value: str
    label: str
    count: int
    query: str
    on: bool


def _filters(request: PortalRequest) -> dict[str, str]:
    """status, role and sort from the query string; a value the page does not offer is
    dropped, as if unset."""
    status, role, sort = (request.GET.get(name, "") for name in ("status", "role", "sort"))
    return {
        "status": status if status in JobStatus.values else "",
        "role": role if role in AgentRole.values else "",
        "sort": sort if sort.removeprefix("-") in selectors.JOB_SORTS else "",
        "label": label_filter(request),
    }


def _status_tabs(filters: dict[str, str], counts: dict[str, int]) -> list[StatusTab]:
    """All, then each status, with its count; switching keeps the role and the sort."""
    keep = {"role": filters["role"], "sort": filters["sort"], "label": filters["label"]}
    tabs = [("", "All", sum(counts.values()))]
    tabs += [(value, label, counts[value]) for value, label in JobStatus.choices]
    return [
        StatusTab(
            value, label, count, query_string(status=value, **keep), filters["status"] == value
        )
        for value, label, count in tabs
    ]


@member_view(steer=True, posts_only=True)
def jobs(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = SubmitJobForm()
    if request.method == "POST":
        form = SubmitJobForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            job, _ = job_submit(
                customer=customer,
                role=data["role"],
                priority=data["priority"],
                payload={"repo": data["repo"], "ref": data["ref"], "task": data["task"]},
                required_labels=data["required_labels"],
                actor=request_actor(request),
            )
            messages.success(request, f"Job #{job.pk} is queued for a {job.role}.")
            return redirect(f"{reverse('portal:jobs')}?status={JobStatus.QUEUED}")
    filters = _filters(request)
    counts = selectors.job_counts(customer, role=filters["role"])
    page = paginate(request, selectors.job_list(customer, **filters))
    return render(
        request,
        partial_or_page(request, "portal/jobs.html", "job_table"),
        page_context(
            request,
            form=form,
            filters=filters,
            roles=AgentRole.choices,
            tabs=_status_tabs(filters, counts),
            sorts=sort_links(SORT_COLUMNS, filters),
            page=page,
            total=sum(counts.values()),
            query=query_string(**filters),
            # The poll asks for this very view of the table: filters, sort and page.
            poll_query=query_string(**filters, page=page.number if page.number > 1 else ""),
            poll_seconds=settings.PORTAL_POLL_SECONDS,
        ),
        status=422 if form.errors else 200,
    )


@dataclass(frozen=True)
class JobTimes:
    """How long a job waited for an agent, and ran (so far, while it still does); None
    where it never got that far."""

    waited: timedelta | None
    ran: timedelta | None


def _job_times(job: Job, now: datetime) -> JobTimes:
    if job.started_at is None:  # queued (again), or cancelled before any agent took it
        return JobTimes(waited=(job.finished_at or now) - job.queued_at, ran=None)
    return JobTimes(
        waited=job.started_at - job.queued_at, ran=(job.finished_at or now) - job.started_at
    )


def _as_text(value: Any) -> str:
    """A payload or result as it reads best: text as it is, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, indent=2, ensure_ascii=False)


@member_view()
def job_detail(request: PortalRequest, customer: Customer, job_id: int) -> HttpResponse:
    job = selectors.job_get(customer, job_id)
    return render(
        request,
        "portal/job_detail.html",
        page_context(
            request,
            job=job,
            times=_job_times(job, timezone.now()),
            payload=_as_text(job.payload),
            result=_as_text(job.result),
            max_attempts=settings.JOB_MAX_ATTEMPTS,
            timeline=selectors.audit_trail(customer, job)[:100],
        ),
    )


@member_view(steer=True)
@require_POST
def job_cancel_view(request: PortalRequest, customer: Customer, job_id: int) -> HttpResponse:
    try:
        job = job_cancel(customer=customer, job_id=job_id, actor=request_actor(request))
        messages.success(
            request,
            f"Job #{job_id} is told to stop: its agent stops it at its next heartbeat."
            if job.status == JobStatus.RUNNING
            else f"Job #{job_id} is cancelled.",
        )
    except NotFound:
        raise
    except FleetError as exc:
        messages.error(request, exc.detail)
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("portal:job_detail", args=[job_id])
    return redirect(back)

"""Jobs: queued (how long each waits), running, finished; submit and cancel."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import JobStatus
from fleet.errors import FleetError, NotFound
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.jobs import job_cancel, job_submit
from portal.forms import SubmitJobForm
from portal.views.base import PortalRequest, member_view, page_context, paginate


@member_view(steer=True, posts_only=True)
def jobs(request: PortalRequest, customer: Customer) -> HttpResponse:
    tab = request.GET.get("tab", JobStatus.QUEUED)
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
                actor=request_actor(request),
            )
            messages.success(request, f"Job {job.pk} is queued for a {job.role}.")
            return redirect(f"{reverse('portal:jobs')}?tab=queued")
    return render(
        request,
        "portal/jobs.html",
        page_context(
            request,
            tab=tab,
            form=form,
            counts=selectors.job_counts(customer),
            page=paginate(request, selectors.job_list(customer, tab)),
            now=timezone.now(),
        ),
        status=422 if form.errors else 200,
    )


@member_view(steer=True)
@require_POST
def job_cancel_view(request: PortalRequest, customer: Customer, job_id: int) -> HttpResponse:
    try:
        job_cancel(customer=customer, job_id=job_id, actor=request_actor(request))
        messages.success(request, f"Job {job_id} is cancelled.")
    except NotFound:
        raise
    except FleetError as exc:
        messages.error(request, exc.detail)
    return redirect(f"{reverse('portal:jobs')}?tab=queued")

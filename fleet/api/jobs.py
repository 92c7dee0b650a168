"""The job queue: agents claim and finish jobs; customer automation submits and reads them."""

from datetime import timedelta
from typing import Annotated

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import Header, Query, Router, Status
from ninja.pagination import paginate

from fleet.api.auth import agent_auth, authed_agent, authed_key, key_jobs, key_read
from fleet.api.pagination import KeysetPagination
from fleet.api.schemas import (
    ClaimOut,
    CompleteIn,
    FailIn,
    JobFilters,
    JobOut,
    JobSubmitIn,
    StoppedIn,
    errors,
)
from fleet.api.throttles import ApiKeyThrottle
from fleet.http import client_address
from fleet.models import Job
from fleet.selectors import agent_job_cap, job_get, job_list
from fleet.services.audit import Actor
from fleet.services.budgets import BUDGET_EXHAUSTED, IDLE_HEADER, budget_stop
from fleet.services.jobs import (
    job_cancel,
    job_claim_next,
    job_complete,
    job_fail,
    job_stopped,
    job_submit,
)

router = Router(tags=["jobs"])


@router.post(
    "/jobs/claim",
    auth=agent_auth,
    response={200: ClaimOut, 204: None, **errors(401)},
    summary="Claim the next queued job of the agent's role",
)
def claim(request: HttpRequest, response: HttpResponse) -> Status[Job | None]:
    """The oldest highest-priority queued job, under a lease; 204 when the agent already
    runs its license's max_concurrent_tasks_per_agent or nothing is queued. A budget cap
    reached (the customer's, the role's or the agent's, for the day or month) is 204 with
    `X-Agentina-Idle: budget_exhausted`: idle until the period turns or an owner raises
    the cap, not an error."""
    agent = authed_agent(request)
    if budget_stop(agent) is not None:
        response[IDLE_HEADER] = BUDGET_EXHAUSTED
        return Status(204, None)
    job = job_claim_next(agent=agent, max_concurrent=agent_job_cap(agent))
    return Status(200, job) if job is not None else Status(204, None)


@router.post(
    "/jobs/{job_id}/complete",
    auth=agent_auth,
    response={200: JobOut, **errors(401, 404, 409, 413, 422)},
    summary="Finish a held job successfully (idempotent)",
)
def complete(request: HttpRequest, job_id: int, body: CompleteIn) -> Job:
    return job_complete(
        agent=authed_agent(request),
        job_id=job_id,
        lease_id=body.lease_id,
        result=body.result,
        usage=[item.model_dump() for item in body.usage],
        wall_seconds=body.wall_seconds,
    )


@router.post(
    "/jobs/{job_id}/fail",
    auth=agent_auth,
    response={200: JobOut, **errors(401, 404, 409, 413, 422)},
    summary="Report a held job as failed (idempotent); retryable ones are requeued",
)
def fail(request: HttpRequest, job_id: int, body: FailIn) -> Job:
    return job_fail(
        agent=authed_agent(request),
        job_id=job_id,
        lease_id=body.lease_id,
        error=body.error,
        retryable=body.retryable,
        usage=[item.model_dump() for item in body.usage],
        wall_seconds=body.wall_seconds,
    )


@router.post(
    "/jobs/{job_id}/stopped",
    auth=agent_auth,
    response={200: JobOut, **errors(401, 404, 409, 413, 422)},
    summary="Report that a job the agent was told to stop is stopped (idempotent)",
)
def stopped(request: HttpRequest, job_id: int, body: StoppedIn) -> Job:
    """For a job named in a heartbeat's `cancel`: the job becomes cancelled. A job nobody
    asked to stop is 409 `job_not_stopping`."""
    return job_stopped(agent=authed_agent(request), job_id=job_id, lease_id=body.lease_id)


@router.post(
    "/jobs/{job_id}/cancel",
    auth=key_jobs,
    throttle=[ApiKeyThrottle()],
    response={200: JobOut, **errors(401, 403, 404, 409, 422, 429)},
    summary="Cancel a job: a queued one at once, a running one by its agent (idempotent)",
)
def cancel(request: HttpRequest, job_id: int) -> Job:
    """A running job gets `stop_requested_at`: its agent learns it from its next heartbeat,
    stops it and reports, and the job is then `cancelled`. A finished job is 409."""
    key = authed_key(request)
    job = job_cancel(
        customer=key.customer, job_id=job_id, actor=Actor.for_api_key(key, client_address(request))
    )
    job.refresh_from_db()
    return job


@router.post(
    "/jobs",
    auth=key_jobs,
    throttle=[ApiKeyThrottle()],
    response={200: JobOut, 201: JobOut, **errors(401, 403, 409, 413, 422, 429)},
    summary="Submit a job for a role",
)
def submit(
    request: HttpRequest,
    body: JobSubmitIn,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=100)] = "",
) -> Status[Job]:
    """201 with the new job; with an `Idempotency-Key` header, a retry of the same submit
    answers 200 with the first job instead of queueing it twice."""
    key = authed_key(request)
    job, created = job_submit(
        customer=key.customer,
        role=body.role,
        payload=body.payload.dict(),
        priority=body.priority,
        idempotency_key=idempotency_key.replace("\x00", ""),
        required_labels=body.required_labels,
        max_runtime=timedelta(seconds=body.max_runtime_seconds)
        if body.max_runtime_seconds
        else None,
        actor=Actor.for_api_key(key, client_address(request)),
    )
    return Status(201 if created else 200, job)


@router.get(
    "/jobs",
    auth=key_read,
    throttle=[ApiKeyThrottle()],
    response={200: list[JobOut], **errors(401, 403, 422, 429)},
    summary="The customer's jobs matching the Jobs page's filters, newest first",
)
@paginate(KeysetPagination)
def list_jobs(request: HttpRequest, filters: Query[JobFilters]) -> QuerySet[Job]:
    return job_list(
        authed_key(request).customer_id,
        filters.status or "",
        role=filters.role or "",
        label=filters.label,
    )


@router.get(
    "/jobs/{job_id}",
    auth=key_read,
    throttle=[ApiKeyThrottle()],
    response={200: JobOut, **errors(401, 403, 404, 422, 429)},
    summary="A job of this customer",
)
def get_job(request: HttpRequest, job_id: int) -> Job:
    return job_get(authed_key(request).customer_id, job_id)

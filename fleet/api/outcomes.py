"""What happened to a job's output: customer automation reports verdicts."""

from django.http import HttpRequest
from ninja import Router

from fleet.api.auth import authed_key, key_jobs, key_read
from fleet.api.schemas import OutcomeIn, OutcomeOut, errors
from fleet.api.throttles import ApiKeyThrottle
from fleet.http import client_address
from fleet.models import JobOutcome
from fleet.selectors import job_get
from fleet.services.audit import Actor
from fleet.services.outcomes import job_outcome_report

router = Router(tags=["outcomes"])


@router.post(
    "/jobs/{job_id}/outcome",
    auth=key_jobs,
    throttle=[ApiKeyThrottle()],
    response={200: OutcomeOut, **errors(401, 403, 404, 413, 422, 429)},
    summary="Report what happened to a job's output (idempotent per job and source)",
)
def report(request: HttpRequest, job_id: int, body: OutcomeIn) -> JobOutcome:
    """One verdict per (job, source): the same report again changes nothing and answers
    the same; a new verdict from the same source replaces it. The job's verdict (what the
    acceptance rate counts) is the latest report of any source."""
    key = authed_key(request)
    outcome, _ = job_outcome_report(
        customer=key.customer_id,
        job_id=job_id,
        verdict=body.verdict,
        source=body.source,
        url=body.url,
        note=body.note,
        actor=Actor.for_api_key(key, client_address(request)),
    )
    return outcome


@router.get(
    "/jobs/{job_id}/outcomes",
    auth=key_read,
    throttle=[ApiKeyThrottle()],
    response={200: list[OutcomeOut], **errors(401, 403, 404, 422, 429)},
    summary="Every source's verdict on a job, newest first",
)
def outcomes(request: HttpRequest, job_id: int) -> list[JobOutcome]:
    job = job_get(authed_key(request).customer_id, job_id)
    return list(job.outcomes.select_related("job")[:100])

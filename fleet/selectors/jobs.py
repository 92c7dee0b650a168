"""Jobs, scoped by customer."""

from django.db.models import Count, Q, QuerySet

from fleet.choices import JobStatus
from fleet.errors import NotFound
from fleet.models import Customer, Job


def job_get(customer: Customer | int, job_id: int) -> Job:
    """A job of this customer; another customer's job is as missing as a deleted one."""
    job = Job.objects.filter(customer=customer, pk=job_id).first()
    if job is None:
        raise NotFound("No such job.")
    return job


def job_list(customer: Customer | int, status: str) -> QuerySet[Job]:
    jobs = Job.objects.filter(customer=customer).select_related("agent")
    if status == "finished":
        return jobs.filter(
            status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
        ).order_by("-finished_at", "-pk")
    if status == JobStatus.RUNNING:
        return jobs.filter(status=JobStatus.RUNNING).order_by("started_at")
    return jobs.filter(status=JobStatus.QUEUED).order_by("-priority", "queued_at")


def job_counts(customer: Customer | int) -> dict[str, int]:
    row = Job.objects.filter(customer=customer).aggregate(
        queued=Count("pk", filter=Q(status=JobStatus.QUEUED)),
        running=Count("pk", filter=Q(status=JobStatus.RUNNING)),
        finished=Count(
            "pk", filter=Q(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
        ),
    )
    return dict(row)

"""Jobs, scoped by customer."""

from django.db.models import F, QuerySet
from django.db.models.expressions import OrderBy

from fleet import policy
from fleet.choices import AgentRole, JobStatus
from fleet.errors import NotFound
from fleet.models import Customer, Job
from fleet.selectors.agents import with_label

# The columns the portal sorts jobs by (`-` first for descending), and their fields.
JOB_SORTS = {
    "queued": "queued_at",
    "started": "started_at",
    "finished": "finished_at",
    "priority": "priority",
}

# Without a sort, the order that matters for the status: the queue in the order agents
# claim it, running jobs by how long they have run, finished ones newest first, and
# every job newest first. The id comes last, so pages never overlap or skip a job.
_NATURAL_ORDER: dict[str, list[str]] = {
    JobStatus.QUEUED: ["-priority", "queued_at", "pk"],
    JobStatus.RUNNING: ["started_at", "pk"],
    JobStatus.SUCCEEDED: ["-finished_at", "-pk"],
    JobStatus.FAILED: ["-finished_at", "-pk"],
    JobStatus.CANCELLED: ["-finished_at", "-pk"],
}
_NEWEST_FIRST = ["-queued_at", "-pk"]


def job_get(customer: Customer | int, job_id: int) -> Job:
    """A job of this customer; another customer's job is as missing as a deleted one."""
    job = Job.objects.select_related("agent").filter(customer=customer, pk=job_id).first()
    if job is None:
        raise NotFound("No such job.")
    return job


def _ordering(status: str = "", sort: str = "") -> list[str | OrderBy]:
    """ORDER BY for `job_list`: the `sort` column (unset times last either way), else the
    status's natural order; then the id."""
    column = JOB_SORTS.get(sort.removeprefix("-"))
    if column is None:
        return list(_NATURAL_ORDER.get(status, _NEWEST_FIRST))
    if sort.startswith("-"):
        return [F(column).desc(nulls_last=True), "-pk"]
    return [F(column).asc(nulls_last=True), "pk"]


def job_list(
    customer: Customer | int,
    status: str = "",
    *,
    role: str = "",
    sort: str = "",
    label: str = "",
) -> QuerySet[Job]:
    """The customer's jobs of a status and role (any, when empty or unknown), with their
    agents, in `_ordering`."""
    jobs = Job.objects.filter(customer=customer).select_related("agent")
    if status in JobStatus.values:
        jobs = jobs.filter(status=status)
    if role in AgentRole.values:
        jobs = jobs.filter(role=role)
    if label:  # jobs that require this label
        jobs = with_label(jobs, "required_labels", label)
    return jobs.order_by(*_ordering(status, sort))


def job_counts(customer: Customer | int, *, role: str = "") -> dict[str, int]:
    """How many of the customer's jobs (of a role, when given) are in each status, every
    status named."""
    jobs = Job.objects.filter(customer=customer)
    if role in AgentRole.values:
        jobs = jobs.filter(role=role)
    # One bounded count a status (COUNT_CAP + 1 at most, read from the customer's status
    # index): a year of finished jobs is never counted whole on a page view.
    return {
        status: jobs.filter(status=status)[: policy.COUNT_CAP + 1].count()
        for status in JobStatus.values
    }

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import JobStatus
from fleet.errors import NotFound
from fleet.models import Job
from fleet.selectors import job_counts, job_get, job_list
from tests import factories

pytestmark = pytest.mark.django_db


def job(customer, name, *, minutes_ago=0, **fields):
    created = Job.objects.create(customer=customer, role="coder", payload={"task": name}, **fields)
    Job.objects.filter(pk=created.pk).update(
        queued_at=timezone.now() - timedelta(minutes=minutes_ago)
    )
    return created


def tasks(jobs):
    return [j.payload["task"] for j in jobs]


def test_another_customers_job_is_as_missing_as_a_deleted_one(customer, other_customer):
    mine, theirs = job(customer, "mine"), job(other_customer, "theirs")
    assert job_get(customer, mine.pk) == mine
    with pytest.raises(NotFound) as foreign:
        job_get(customer, theirs.pk)
    with pytest.raises(NotFound) as missing:
        job_get(customer, theirs.pk + 1000)
    assert foreign.value.as_body() == missing.value.as_body()


@pytest.fixture
def jobs(customer, other_customer):
    agent = factories.agent(customer)
    now = timezone.now()
    job(customer, "old-low", minutes_ago=30)
    job(customer, "new-low", minutes_ago=5)
    job(customer, "new-high", minutes_ago=1, priority=5)
    job(customer, "run-late", status=JobStatus.RUNNING, agent=agent, started_at=now)
    job(
        customer,
        "run-early",
        status=JobStatus.RUNNING,
        agent=agent,
        started_at=now - timedelta(minutes=9),
    )
    for name, status, ago in [
        ("ok-early", JobStatus.SUCCEEDED, 30),
        ("failed", JobStatus.FAILED, 20),
        ("cancelled", JobStatus.CANCELLED, 10),
        ("ok-late", JobStatus.SUCCEEDED, 1),
    ]:
        job(customer, name, status=status, agent=agent, finished_at=now - timedelta(minutes=ago))
    job(other_customer, "elsewhere")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", ["new-high", "old-low", "new-low"]),  # priority first, then the oldest
        ("running", ["run-early", "run-late"]),
        ("succeeded", ["ok-late", "ok-early"]),  # newest first
        ("cancelled", ["cancelled"]),
    ],
)
def test_each_status_lists_the_customers_jobs_in_the_order_that_matters(
    customer, jobs, status, expected
):
    assert tasks(job_list(customer, status)) == expected


def test_every_status_or_an_unknown_one_lists_every_job_newest_first(customer, jobs):
    newest_first = [
        "ok-late",
        "cancelled",
        "failed",
        "ok-early",
        "run-early",
        "run-late",
        "new-high",
        "new-low",
        "old-low",
    ]
    assert tasks(job_list(customer)) == newest_first
    assert tasks(job_list(customer, "nonsense")) == newest_first


def test_the_counts_name_every_status(customer, jobs):
    assert job_counts(customer) == {
        "queued": 3,
        "running": 2,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 1,
    }

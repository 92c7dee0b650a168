"""Cancelling a running job: customer automation marks it, the agent's heartbeat names it
in `cancel`, the agent reports it stopped; max runtimes (the job's, the customer's, the
product's) time jobs out the same way."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from fleet.choices import JobCancelReason, JobStatus
from fleet.models import Job
from fleet.services.sweeps import jobs_stop_overdue, jobs_stop_unreported
from tests import factories
from tests.fleet.api.conftest import activate, beat

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _counts_at_once(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)


def running(agent, **job):
    factories.job(agent.agent.customer, **job)
    claimed = agent.api.post("/jobs/claim").json()
    return claimed["id"], claimed["lease_id"]


def test_cancel_a_running_job_then_the_agent_reports_it_stopped(key_api, agent, licensed):
    other = activate(licensed)
    job_id, lease = running(agent)
    assert beat(agent).json()["cancel"] == []
    response = key_api.post(f"/jobs/{job_id}/cancel")
    body = response.json()
    assert (response.status_code, body["status"], body["stop_reason"]) == (
        200,
        "running",
        "operator",
    )
    assert (
        key_api.post(f"/jobs/{job_id}/cancel").json()["stop_requested_at"]
        == (body["stop_requested_at"])
    )  # twice: the same request
    assert beat(agent).json()["cancel"] == [job_id]
    assert beat(other).json()["cancel"] == []  # only its holder is told
    response = agent.api.post(f"/jobs/{job_id}/stopped", {"lease_id": lease})
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    assert agent.api.post(f"/jobs/{job_id}/stopped", {"lease_id": lease}).status_code == 200
    assert beat(agent).json()["cancel"] == []
    assert key_api.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_a_job_nobody_asked_to_stop_is_not_stopped(agent):
    job_id, lease = running(agent)
    response = agent.api.post(f"/jobs/{job_id}/stopped", {"lease_id": lease})
    assert (response.status_code, response.json()["code"]) == (409, "job_not_stopping")
    assert Job.objects.get(pk=job_id).status == JobStatus.RUNNING
    assert agent.api.post(f"/jobs/{job_id}/stopped", {}).status_code == 422


def test_a_finished_job_cannot_be_cancelled(key_api, agent):
    job_id, lease = running(agent)
    agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease, "result": "ok"})
    response = key_api.post(f"/jobs/{job_id}/cancel")
    assert (response.status_code, response.json()["code"]) == (409, "job_already_finished")


def test_another_customers_job_is_a_404_and_no_key_a_401(key_api, anon, other_customer):
    theirs = factories.job(other_customer)
    missing = key_api.post("/jobs/999999/cancel")
    response = key_api.post(f"/jobs/{theirs.pk}/cancel")
    assert response.status_code == missing.status_code == 404
    assert response.json() == missing.json()
    assert anon.post(f"/jobs/{theirs.pk}/cancel").status_code == 401
    assert Job.objects.get(pk=theirs.pk).status == JobStatus.QUEUED


@pytest.mark.parametrize("seconds", [0, -5, 10**9, "soon"])
def test_a_bad_max_runtime_is_a_422_naming_the_field(key_api, seconds):
    response = key_api.post(
        "/jobs",
        {"role": "coder", "payload": {"repo": "a/b", "task": "t"}, "max_runtime_seconds": seconds},
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["max_runtime_seconds"]


def test_max_runtime_the_jobs_own_else_the_customers(key_api, agent, licensed):
    own = key_api.post(
        "/jobs",
        {"role": "coder", "payload": {"repo": "a/b", "task": "t"}, "max_runtime_seconds": 60},
    ).json()["id"]
    agent.api.post("/jobs/claim")
    licensed.job_max_runtime_seconds = 3600
    licensed.save()
    by_customer, _ = running(activate(licensed))
    elsewhere = factories.customer()
    factories.job(elsewhere, status="running", agent=factories.agent(elsewhere))
    Job.objects.filter(customer=elsewhere).update(started_at=timezone.now())
    now = timezone.now()

    def timed_out() -> set[int]:
        return set(
            Job.objects.filter(stop_reason=JobCancelReason.TIMED_OUT).values_list("pk", flat=True)
        )

    assert jobs_stop_overdue(now=now + timedelta(seconds=61)) == 1
    assert timed_out() == {own}
    assert jobs_stop_overdue(now=now + timedelta(seconds=3601)) == 1
    assert timed_out() == {own, by_customer}  # the other customer's runs 6 hours
    assert jobs_stop_overdue(now=now + timedelta(hours=5)) == 0  # each told once


def test_the_product_default_times_a_job_out_after_six_hours(agent):
    job_id, _ = running(agent)
    now = timezone.now()
    assert jobs_stop_overdue(now=now + timedelta(hours=5, minutes=59)) == 0
    assert jobs_stop_overdue(now=now + timedelta(hours=6, minutes=1)) == 1
    assert Job.objects.get(pk=job_id).stop_reason == JobCancelReason.TIMED_OUT


def test_an_agent_that_never_reports_the_stop_has_its_job_cancelled_after_a_lease(
    key_api, agent, settings
):
    job_id, lease = running(agent)
    key_api.post(f"/jobs/{job_id}/cancel")
    with time_machine.travel(timezone.now() + settings.JOB_LEASE - timedelta(seconds=5)):
        assert jobs_stop_unreported() == 0
    with time_machine.travel(timezone.now() + settings.JOB_LEASE + timedelta(seconds=5)):
        assert jobs_stop_unreported() == 1
    assert Job.objects.get(pk=job_id).status == JobStatus.CANCELLED
    late = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease, "result": "ok"})
    assert late.status_code == 409

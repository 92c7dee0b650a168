import uuid
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from fleet.choices import JobStatus
from fleet.models import AuditEvent, Job
from fleet.services.audit import SYSTEM
from tests import factories
from tests.fleet.api.conftest import activate

pytestmark = pytest.mark.django_db


def queue(customer, n=1, role="coder", **fields):
    return [factories.job(customer, role=role, **fields) for _ in range(n)]


def test_claim_takes_the_highest_priority_then_oldest_job_of_the_agents_role(agent, licensed):
    old, _new = queue(licensed, 2)
    urgent = queue(licensed, priority=5)[0]
    queue(licensed, role="tester", priority=9)
    other_customer = factories.customer()
    queue(other_customer, priority=50)
    claimed = [agent.api.post("/jobs/claim").json()["id"] for _ in range(2)]
    assert claimed == [urgent.pk, old.pk]
    job = Job.objects.get(pk=urgent.pk)
    assert (job.status, job.agent_id, job.attempts) == (JobStatus.RUNNING, agent.agent.pk, 1)
    assert job.lease_expires_at > timezone.now() + timedelta(minutes=4)


def test_claim_stops_at_the_licenses_cap_and_the_job_waits(agent, licensed):
    waiting = queue(licensed, 3)[-1]
    assert agent.api.post("/jobs/claim").status_code == 200
    assert agent.api.post("/jobs/claim").status_code == 200
    response = agent.api.post("/jobs/claim")
    assert response.status_code == 204
    assert Job.objects.get(pk=waiting.pk).status == JobStatus.QUEUED


def test_claim_on_an_empty_queue_is_204(agent):
    assert agent.api.post("/jobs/claim").status_code == 204


def test_claim_query_count_is_fixed(agent, licensed, assert_data_statements):
    queue(licensed, 2)
    agent.api.post("/agents/heartbeat", {"version": "1.9.3"})  # now known to this process
    # agent row lock, claim statement, audit insert: on PostgreSQL, one function call
    statements = 1 if connection.vendor == "postgresql" else 3
    with assert_data_statements(statements):
        job_id = agent.api.post("/jobs/claim").json()["id"]
    audit = AuditEvent.objects.get(action="job.claim")
    assert (audit.target_id, audit.customer_id) == (str(job_id), licensed.pk)
    assert audit.changes == {"status": ["queued", "running"], "attempt": [None, 1]}
    assert audit.actor_label == f"agent:{agent.agent.name}"
    Job.objects.filter(status=JobStatus.QUEUED).delete()
    with assert_data_statements(statements):
        assert agent.api.post("/jobs/claim").status_code == 204
    assert AuditEvent.objects.filter(action="job.claim").count() == 1


def claim(agent):
    body = agent.api.post("/jobs/claim").json()
    return body["id"], body["lease_id"]


def test_complete_is_idempotent_and_needs_the_lease(agent, licensed):
    queue(licensed)
    job_id, lease = claim(agent)
    stale = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": str(uuid.uuid4())})
    assert (stale.status_code, stale.json()["code"]) == (409, "stale_lease")
    assert Job.objects.get().status == JobStatus.RUNNING
    done = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease, "result": {"pr": 42}})
    again = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease, "result": {"pr": 43}})
    assert done.status_code == again.status_code == 200
    job = Job.objects.get()
    assert (job.status, job.result) == (JobStatus.SUCCEEDED, {"pr": 42})  # one effect
    assert AuditEvent.objects.filter(action="job.succeeded").count() == 1
    failed_late = agent.api.post(f"/jobs/{job_id}/fail", {"lease_id": lease})
    assert (failed_late.status_code, failed_late.json()["code"]) == (409, "job_already_finished")


def test_nul_anywhere_in_a_job_result_is_422(agent, licensed):
    factories.job(licensed, role="coder")
    job = agent.api.post("/jobs/claim").json()
    for result in ({"a": "x\u0000y"}, ["ok", {"k\u0000": 1}], "bad\u0000"):
        response = agent.api.post(
            f"/jobs/{job['id']}/complete", {"lease_id": job["lease_id"], "result": result}
        )
        assert response.status_code == 422
    assert Job.objects.get().status == "running"


def test_a_requeued_job_refuses_the_old_holders_late_result(agent, licensed):
    queue(licensed)
    job_id, lease = claim(agent)
    # The lease expired and the job went back to the queue (the beat sweep does this).
    Job.objects.update(status=JobStatus.QUEUED, agent=None, lease_id=None, lease_expires_at=None)
    second = activate(licensed)
    second_id, second_lease = claim(second)
    assert second_id == job_id
    late = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease})
    assert (late.status_code, late.json()["code"]) == (409, "stale_lease")
    assert (
        second.api.post(f"/jobs/{job_id}/complete", {"lease_id": second_lease}).status_code == 200
    )


def test_fail_retries_until_attempts_run_out(agent, licensed, settings):
    settings.JOB_MAX_ATTEMPTS = 2
    queue(licensed)
    job_id, lease = claim(agent)
    first = agent.api.post(
        f"/jobs/{job_id}/fail", {"lease_id": lease, "error": "flaky", "retryable": True}
    )
    assert first.json()["status"] == JobStatus.QUEUED
    repeat = agent.api.post(
        f"/jobs/{job_id}/fail", {"lease_id": lease, "error": "flaky", "retryable": True}
    )
    assert repeat.status_code == 200 and Job.objects.get().attempts == 1  # one effect
    job_id, lease = claim(agent)
    final = agent.api.post(
        f"/jobs/{job_id}/fail", {"lease_id": lease, "error": "flaky", "retryable": True}
    )
    job = Job.objects.get()
    assert final.json()["status"] == JobStatus.FAILED
    assert (job.status, job.attempts, job.error) == (JobStatus.FAILED, 2, "flaky")


def test_another_customers_agent_gets_404_like_a_missing_job(agent, licensed):
    queue(licensed)
    job_id, lease = claim(agent)
    outsider_customer = factories.customer()
    factories.license(outsider_customer)
    outsider = activate(outsider_customer)
    theirs = outsider.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease})
    missing = outsider.api.post("/jobs/999999/complete", {"lease_id": lease})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert Job.objects.get().status == JobStatus.RUNNING


def test_customer_automation_submits_and_reads_jobs(key_api, licensed):
    response = key_api.post(
        "/jobs",
        {
            "role": "reviewer",
            "priority": 3,
            "payload": {"repo": "acme/web", "ref": "feature-x", "task": "review #7"},
        },
    )
    assert response.status_code == 201
    job = response.json()
    assert (job["status"], job["role"], job["payload"]["ref"]) == (
        "queued",
        "reviewer",
        "feature-x",
    )
    assert key_api.get(f"/jobs/{job['id']}").json()["id"] == job["id"]
    assert AuditEvent.objects.get(action="job.submit").actor_label == "api-key:ci"


def test_a_retried_submit_with_an_idempotency_key_is_one_job(key_api, licensed):
    body = {"role": "coder", "payload": {"repo": "a/b", "task": "t"}}
    first = key_api.post("/jobs", body, HTTP_IDEMPOTENCY_KEY="build-42")
    again = key_api.post("/jobs", body, HTTP_IDEMPOTENCY_KEY="build-42")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = key_api.post("/jobs", {**body, "priority": 5}, HTTP_IDEMPOTENCY_KEY="build-42")
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    assert key_api.post("/jobs", body).status_code == 201  # no key: a new job each time
    assert Job.objects.count() == 2


def test_another_customers_key_gets_404_for_our_jobs(key_api, licensed):
    from fleet.services.api_keys import api_key_mint

    job = queue(licensed)[0]
    other = factories.customer()
    _, other_key = api_key_mint(customer=other, name="theirs", actor=SYSTEM)
    theirs = key_api.get(f"/jobs/{job.pk}", secret=other_key)
    missing = key_api.get("/jobs/987654", secret=other_key)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


@pytest.mark.parametrize(
    "body",
    [
        {"role": "coder", "payload": {"repo": "a/b"}},
        {"role": "coder", "payload": {"repo": "a/b", "task": "t", "shell": "rm -rf /"}},
        {"role": "coder", "payload": {"repo": "a/b", "task": "t"}, "priority": 10**20},
        {"role": "pilot", "payload": {"repo": "a/b", "task": "t"}},
        {"role": "coder", "payload": "not an object"},
    ],
)
def test_bad_job_submissions_are_422(key_api, licensed, body):
    response = key_api.post("/jobs", body)
    assert response.status_code == 422
    assert response.json()["errors"]
    assert not Job.objects.exists()


def test_agents_cannot_use_customer_endpoints_or_the_reverse(agent, key_api):
    assert (
        agent.api.post(
            "/jobs", {"role": "coder", "payload": {"repo": "a", "task": "t"}}
        ).status_code
        == 401
    )
    assert key_api.post("/jobs/claim").status_code == 401


def test_a_silent_agents_job_is_requeued_and_finished_by_another(agent, licensed):
    from tests.beat import sweep_until

    queue(licensed)
    job_id, lease = claim(agent)
    start = timezone.now()
    helper = activate(licensed)
    # The first agent goes silent; the second keeps heartbeating while beat sweeps.
    at = start
    while at < start + timedelta(minutes=6):
        at += timedelta(seconds=30)
        with time_machine.travel(at, tick=False):
            helper.api.post("/agents/heartbeat", {"version": "1.9.3"})
        sweep_until(at, start=at)
    assert agent.refresh().status == "offline"
    job = Job.objects.get()
    assert (job.status, job.agent_id, job.attempts) == (JobStatus.QUEUED, None, 1)
    with time_machine.travel(at, tick=False):
        second_id, second_lease = claim(helper)
        assert second_id == job_id
        late = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease})
        done = helper.api.post(f"/jobs/{job_id}/complete", {"lease_id": second_lease})
    assert (late.status_code, late.json()["code"]) == (409, "stale_lease")
    assert done.status_code == 200
    job.refresh_from_db()
    assert (job.status, job.agent_id, job.attempts) == (JobStatus.SUCCEEDED, helper.agent.pk, 2)

"""Verdicts on a job's output: idempotent per (job, source), the latest counts, another
customer's job is a 404; the GitHub receiver verifies its HMAC and maps pull-request
events to verdicts on the jobs whose result names that pull request."""

import hashlib
import hmac
import json

import pytest
from django.test import Client

from fleet.choices import AuditAction
from fleet.models import AuditEvent, GithubIntegration, Job, JobOutcome
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from fleet.services.outcomes import pull_request_named
from tests import factories
from tests.fleet.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

PR = "https://github.com/acme/app/pull/7"


@pytest.fixture
def done(licensed):
    return factories.job(licensed, status="succeeded", result={"pull_request": PR}, pull_request=PR)


def outcome_audits() -> int:
    return AuditEvent.objects.filter(action=AuditAction.JOB_OUTCOME).count()


def test_a_second_identical_report_changes_nothing_and_answers_the_same(key_api, done):
    body = {"verdict": "accepted", "source": "human", "url": PR, "note": "shipped"}
    first = key_api.post(f"/jobs/{done.pk}/outcome", body)
    assert first.status_code == 200, first.content
    second = key_api.post(f"/jobs/{done.pk}/outcome", body)
    assert (second.status_code, second.json()) == (200, first.json())
    assert JobOutcome.objects.count() == 1 and outcome_audits() == 1
    assert first.json()["job_verdict"] == "accepted"

    # A new verdict from the same source replaces it; another source's latest counts.
    key_api.post(f"/jobs/{done.pk}/outcome", {**body, "verdict": "reverted"})
    assert JobOutcome.objects.get().verdict == "reverted"
    gitlab = key_api.post(f"/jobs/{done.pk}/outcome", {"verdict": "accepted", "source": "gitlab"})
    assert gitlab.json()["job_verdict"] == "accepted"
    assert Job.objects.get(pk=done.pk).verdict == "accepted"
    assert JobOutcome.objects.count() == 2 and outcome_audits() == 3
    listed = key_api.get(f"/jobs/{done.pk}/outcomes").json()
    assert [(o["source"], o["verdict"]) for o in listed] == [
        ("gitlab", "accepted"),
        ("human", "reverted"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"verdict": "great", "source": "human"}, "verdict"),
        ({"verdict": "accepted", "source": "Has Spaces"}, "source"),
        ({"verdict": "accepted", "source": "x" * 51}, "source"),
        ({"verdict": "accepted", "source": "human", "url": "javascript:alert(1)"}, "url"),
        ({"verdict": "accepted", "source": "human", "note": "\x00"}, "note"),
        ({"verdict": "accepted"}, "source"),
    ],
)
def test_hostile_outcomes_are_refused_naming_the_field(key_api, done, body, field):
    response = key_api.post(f"/jobs/{done.pk}/outcome", body)
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "invalid_input"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert not JobOutcome.objects.exists()


def test_another_customers_job_is_a_404_on_every_route(key_api, other_customer):
    theirs = factories.job(other_customer, status="succeeded")
    body = {"verdict": "accepted", "source": "human"}
    assert key_api.post(f"/jobs/{theirs.pk}/outcome", body).status_code == 404
    assert key_api.get(f"/jobs/{theirs.pk}/outcomes").status_code == 404
    assert not JobOutcome.objects.exists()


def test_a_key_without_the_jobs_scope_cannot_judge(licensed, done):
    _, secret = api_key_mint(customer=licensed, name="ro", scopes=["read"], actor=SYSTEM)
    response = ApiClient(Client(), secret).post(
        f"/jobs/{done.pk}/outcome", {"verdict": "accepted", "source": "human"}
    )
    assert (response.status_code, response.json()["required_scope"]) == (403, "jobs")


# --- GitHub ---------------------------------------------------------------------------


def deliver(client, slug, secret, event, payload, *, signature=None):
    raw = json.dumps(payload).encode()
    mac = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(
        f"/api/v1/integrations/github/{slug}",
        raw,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT=event,
        HTTP_X_HUB_SIGNATURE_256=mac if signature is None else signature,
    )


def closed(merged: bool, url: str = PR) -> dict:
    return {"action": "closed", "pull_request": {"html_url": url, "merged": merged}}


def review(state: str) -> dict:
    return {"action": "submitted", "review": {"state": state}, "pull_request": {"html_url": PR}}


@pytest.fixture
def github(key_api):
    minted = key_api.post("/integrations/github/secret")
    assert minted.status_code == 200, minted.content
    return minted.json()


def test_github_events_become_verdicts_on_the_jobs_naming_the_pull_request(
    client, licensed, github, agent
):
    # The agent's result names the pull request: the job is found by it.
    factories.job(licensed, role="coder")
    claimed = agent.api.post("/jobs/claim").json()
    result = {"pull_request": PR, "summary": "fixed"}
    agent.api.post(
        f"/jobs/{claimed['id']}/complete", {"lease_id": claimed["lease_id"], "result": result}
    )
    job = Job.objects.get(pk=claimed["id"])
    assert (job.pull_request, job.agent_version) == (PR, "1.9.3")
    assert pull_request_named({"pull_request": "javascript:alert(1)"}) == ""  # shown as a link
    slug, secret = licensed.slug, github["secret"]
    assert github["url"].endswith(f"/api/v1/integrations/github/{slug}")

    changes = deliver(client, slug, secret, "pull_request_review", review("changes_requested"))
    assert (changes.status_code, changes.json()["job_ids"]) == (200, [job.pk])
    assert Job.objects.get(pk=job.pk).verdict == "changes_requested"
    assert deliver(client, slug, secret, "pull_request", closed(True)).status_code == 200
    job.refresh_from_db()
    assert job.verdict == "accepted"
    assert JobOutcome.objects.get().source == "github"  # one row: github's latest
    # Unmerged close of another pull request nobody's job names; pushes; comments: 202.
    other = deliver(client, slug, secret, "pull_request", closed(False, PR + "0"))
    assert (other.status_code, other.json()["job_ids"]) == (202, [])
    assert deliver(client, slug, secret, "push", {"ref": "main"}).status_code == 202
    assert (
        deliver(client, slug, secret, "pull_request_review", review("commented")).status_code == 202
    )
    assert Job.objects.get(pk=job.pk).verdict == "accepted"


def test_github_refuses_a_bad_signature_and_records_nothing(
    client, key_api, licensed, github, done, other_customer
):
    slug, secret = licensed.slug, github["secret"]
    for signature in ("sha256=" + "0" * 64, "", "sha1=abc"):
        response = deliver(client, slug, secret, "pull_request", closed(True), signature=signature)
        assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")
    # Signed with the right secret for another customer's URL (or a customer without a
    # receiver, or none at all): the same 401.
    for wrong in (other_customer.slug, "no-such-customer"):
        response = deliver(client, wrong, secret, "pull_request", closed(True))
        assert (response.status_code, response.json()["code"]) == (401, "invalid_signature")
    assert not JobOutcome.objects.exists()
    assert Job.objects.get(pk=done.pk).verdict == ""
    # The secret is derived, not stored; minting again makes the old one fail.
    stored = GithubIntegration.objects.values().get()
    assert secret not in json.dumps(stored, default=str)
    assert deliver(client, slug, secret, "pull_request", closed(True)).status_code == 200
    assert key_api.post("/integrations/github/secret").json()["secret"] != secret
    assert deliver(client, slug, secret, "pull_request", closed(True)).status_code == 401

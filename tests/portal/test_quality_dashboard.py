"""Acceptance and cost where operators read them: the dashboard's fifth number with its
chart, cost per accepted job and tokens per job per role, the costliest jobs linked; the
fleet metrics and quality API; the advice to review before adding agents."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from fleet.choices import JobStatus
from fleet.models import Job
from fleet.selectors import fleet_advice
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests import factories
from tests.fleet.api.conftest import ApiClient

pytestmark = pytest.mark.django_db


def judged(customer, role, *, accepted, rejected, days_ago, cost="0.50", agent=None):
    at = timezone.now() - timedelta(days=days_ago)
    Job.objects.bulk_create(
        factories.job_row(
            customer,
            role=role,
            agent=agent,
            status=JobStatus.SUCCEEDED,
            agent_version="1.9.3",
            finished_at=at,
            cost_usd=Decimal(cost),
            input_tokens=900,
            output_tokens=100,
            verdict="accepted" if i < accepted else "rejected",
            verdict_at=at,
        )
        for i in range(accepted + rejected)
    )


@pytest.fixture
def coders_slipping(customer):
    """Coders: 13 of 21 accepted this week (62%), 17 of 21 the week before (81%)."""
    factories.license(customer, max_agents=10, max_concurrent_tasks_per_agent=1)
    agent = factories.agent(customer, role="coder")
    judged(customer, "coder", accepted=13, rejected=8, days_ago=1, agent=agent)
    judged(customer, "coder", accepted=17, rejected=4, days_ago=8)
    return customer


def test_the_dashboard_shows_acceptance_cost_and_the_costliest_jobs(owner, coders_slipping):
    costly = Job.objects.filter(finished_at__gt=timezone.now() - timedelta(days=2)).first()
    Job.objects.filter(pk=costly.pk).update(
        cost_usd=Decimal("42.5"), finished_at=timezone.now() - timedelta(hours=2)
    )
    page = owner.get("/portal/").content.decode()
    assert 'data-number="acceptance">62%<' in page
    assert "13 of 21 judged jobs accepted in 7 days · 81% the 7 days before" in page
    # Cost per accepted job: (20 * $0.50 + $42.50) / 13 = $4.04; 1,000 tokens a job.
    assert "$4.04 per accepted job" in page
    assert f'href="/portal/jobs/{costly.pk}/">#{costly.pk}</a>' in page
    assert "$42.50" in page


def test_the_metrics_and_quality_api(coders_slipping, other_customer):
    judged(other_customer, "coder", accepted=0, rejected=9, days_ago=1)  # never counted
    _, secret = api_key_mint(customer=coders_slipping, name="ci", actor=SYSTEM)
    api = ApiClient(Client(), secret)
    metrics = api.get("/fleet/metrics").json()
    assert metrics["acceptance"] == pytest.approx(13 / 21)
    assert metrics["acceptance_previous"] == pytest.approx(17 / 21)
    assert metrics["jobs_judged"] == 21
    assert Decimal(metrics["cost_per_accepted_job"]) == Decimal("0.807692")  # 10.50 / 13
    quality = api.get("/fleet/quality?days=7").json()
    coder = quality["by_role"]["coder"]
    assert (coder["now"]["judged"], coder["now"]["accepted"]) == (21, 13)
    assert coder["now"]["tokens_per_job"] == 1000
    assert list(quality["by_version"]) == ["1.9.3"]
    assert len(quality["by_agent"]) == 1
    assert api.get("/fleet/quality?days=0").status_code == 422
    assert api.get("/fleet/quality?days=1e30").status_code == 422


def test_advice_to_add_coders_says_to_review_their_work_first(coders_slipping):
    Job.objects.bulk_create(  # coders' jobs wait with the one coder at its cap
        Job(customer=coders_slipping, role="coder", payload={}) for _ in range(4)
    )
    Job.objects.filter(status=JobStatus.QUEUED).update(
        queued_at=timezone.now() - timedelta(minutes=10)
    )
    factories.job(
        coders_slipping,
        role="coder",
        status=JobStatus.RUNNING,
        agent=Job.objects.filter(agent__isnull=False).first().agent,
    )
    advice = fleet_advice(coders_slipping)
    assert advice.verdict == "add_agents"
    assert advice.reasons[-1] == (
        "Acceptance 62% for coders this week, down from 81% — review their work before "
        "adding agents."
    )


def test_owners_mint_the_github_secret_on_settings_shown_once(owner, viewer, customer):
    assert viewer.post("/portal/settings/github/").status_code == 403
    page = owner.post("/portal/settings/github/").content.decode()
    secret = page.split('id="github-secret">', 1)[1].split("<", 1)[0]
    assert secret.startswith("ghsec_")
    assert f"/api/v1/integrations/github/{customer.slug}" in page
    settings_page = owner.get("/portal/settings/").content.decode()
    assert secret not in settings_page and secret[:12] in settings_page


def test_a_jobs_page_shows_its_cost_and_verdict(owner, customer):
    job = factories.job(
        customer,
        status=JobStatus.SUCCEEDED,
        finished_at=timezone.now(),
        usage=[{"model": "m1", "provider": "p", "cost_usd": "0.25"}],
        cost_usd=Decimal("0.25"),
        input_tokens=10,
        output_tokens=5,
        verdict="accepted",
        verdict_at=timezone.now(),
        pull_request="https://github.com/a/b/pull/1",
    )
    page = owner.get(f"/portal/jobs/{job.pk}/").content.decode()
    assert "$0.25 · 10 tokens in, 5 out · m1 (p) $0.25" in page
    assert "<strong>Accepted</strong>" in page and 'href="https://github.com/a/b/pull/1"' in page


def test_an_agents_page_shows_its_weeks_work(owner, coders_slipping):
    agent = Job.objects.filter(agent__isnull=False).first().agent
    page = owner.get(f"/portal/agents/{agent.pk}/").content.decode()
    assert "21 jobs · $10.50 · 62% accepted (13 of 21 judged) · $0.81 per accepted job" in page

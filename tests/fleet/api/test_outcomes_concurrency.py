"""Verdicts raced by real threads against PostgreSQL: the same report eight times at once
is one row and one audit event; different sources at once each keep their row."""

import pytest

from fleet.choices import AuditAction
from fleet.models import AuditEvent, Job, JobOutcome
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests import factories
from tests.fleet.api.test_concurrency import post, run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_racing_reports_of_one_source_are_one_verdict(customer):
    factories.license(customer)
    job = factories.job(customer, status="succeeded")
    _, secret = api_key_mint(customer=customer, name="ci", actor=SYSTEM)
    same = {"verdict": "accepted", "source": "human"}
    results = run_together([lambda: post(f"/jobs/{job.pk}/outcome", same, secret)] * 8)
    assert {status for status, _ in results} == {200}
    assert JobOutcome.objects.count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.JOB_OUTCOME).count() == 1
    sources = [{"verdict": "rejected", "source": f"bot-{n}"} for n in range(4)]
    run_together([lambda b=b: post(f"/jobs/{job.pk}/outcome", b, secret) for b in sources])
    assert JobOutcome.objects.count() == 5
    assert Job.objects.get(pk=job.pk).verdict == "rejected"  # the latest of any source

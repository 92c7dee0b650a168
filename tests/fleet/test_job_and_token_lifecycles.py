"""The job and token lifecycles: each one table of moves; every pair of statuses tried
against the database, the allowed moving the row and every forbidden one leaving it."""

from datetime import timedelta
from itertools import product

import pytest

from fleet.choices import JobStatus, TokenStatus
from fleet.models import ActivationToken, Job
from fleet.models.jobs import JOB_TRANSITIONS
from fleet.models.lifecycle import allowed_pairs
from fleet.models.tokens import TOKEN_TRANSITIONS
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories

pytestmark = pytest.mark.django_db


def test_the_tables_read_as_the_product_behaves():
    assert allowed_pairs(JOB_TRANSITIONS) == {
        ("queued", "running"),  # claimed
        ("running", "succeeded"),
        ("running", "failed"),
        ("running", "queued"),  # retried, lease expired, agent decommissioned
        ("queued", "cancelled"),
        ("running", "cancelled"),  # stopped by its agent when told to (cancel, timeout)
    }
    assert allowed_pairs(TOKEN_TRANSITIONS) == {
        ("outstanding", "redeemed"),
        ("outstanding", "revoked"),
        ("outstanding", "expired"),
    }


def _job(customer, status: str) -> Job:
    agent = factories.agent(customer) if status == JobStatus.RUNNING else None
    return factories.job(customer, role="coder", status=status, agent=agent)


@pytest.mark.parametrize(("source", "target"), list(product(JobStatus.values, repeat=2)))
def test_every_job_move_against_the_database(customer, source, target):
    job = _job(customer, source)
    allowed = (source, target) in allowed_pairs(JOB_TRANSITIONS)
    # Leaving running drops the agent; entering it needs one (a database constraint).
    fields = {"agent": factories.agent(customer)} if target == JobStatus.RUNNING else {}
    for move in (t for t in JOB_TRANSITIONS if t.target == target):
        moved = Job.objects.filter(pk=job.pk).transition(move, **fields)
        assert moved == (1 if source in move.sources else 0)
    job.refresh_from_db()
    assert job.status == (target if allowed else source)


@pytest.mark.parametrize(("source", "target"), list(product(TokenStatus.values, repeat=2)))
def test_every_token_move_against_the_database(customer, source, target):
    token, _ = token_mint(customer=customer, actor=SYSTEM)
    ActivationToken.objects.filter(pk=token.pk).update(status=source)
    allowed = (source, target) in allowed_pairs(TOKEN_TRANSITIONS)
    for move in (t for t in TOKEN_TRANSITIONS if t.target == target):
        moved = ActivationToken.objects.filter(pk=token.pk).transition(move)
        assert moved == (1 if source in move.sources else 0)
    token.refresh_from_db()
    assert token.status == (target if allowed else source)


def test_an_outstanding_token_past_its_expiry_reads_expired_before_beat_records_it(customer):
    token, _ = token_mint(customer=customer, expires_in=timedelta(seconds=-1), actor=SYSTEM)
    assert (token.status, token.effective_status) == ("outstanding", "expired")

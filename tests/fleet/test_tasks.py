from datetime import timedelta

import pytest
from django.utils import timezone

from fleet import tasks
from fleet.choices import AgentStatus, TokenStatus
from fleet.models import ActivationToken, Agent
from fleet.services.tokens import token_mint
from tests import factories

pytestmark = pytest.mark.django_db


def test_stale_sweep_marks_only_silent_agents_offline(customer, django_assert_num_queries):
    now = timezone.now()
    silent = factories.agent(customer, last_heartbeat_at=now - timedelta(minutes=4))
    fresh = factories.agent(customer, last_heartbeat_at=now - timedelta(minutes=2))
    gone = factories.agent(
        customer, status=AgentStatus.DECOMMISSIONED, last_heartbeat_at=now - timedelta(days=2)
    )
    with django_assert_num_queries(1):
        assert tasks.mark_stale_agents() == 1
    assert tasks.mark_stale_agents() == 0  # twice: same end state
    statuses = dict(Agent.objects.values_list("pk", "status"))
    assert statuses == {silent.pk: "offline", fresh.pk: "online", gone.pk: "decommissioned"}


def test_token_expiry_expires_only_overdue_outstanding_tokens(customer, django_assert_num_queries):
    overdue, _ = token_mint(customer=customer, expires_in=timedelta(seconds=-1))
    live, _ = token_mint(customer=customer)
    redeemed, _ = token_mint(customer=customer, expires_in=timedelta(seconds=-1))
    ActivationToken.objects.filter(pk=redeemed.pk).update(status=TokenStatus.REDEEMED)
    with django_assert_num_queries(1):
        assert tasks.expire_tokens() == 1
    assert tasks.expire_tokens() == 0
    statuses = dict(ActivationToken.objects.values_list("pk", "status"))
    assert statuses == {overdue.pk: "expired", live.pk: "outstanding", redeemed.pk: "redeemed"}

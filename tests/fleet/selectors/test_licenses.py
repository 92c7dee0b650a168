from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AgentStatus, TokenStatus
from fleet.models import License
from fleet.selectors import customer_active_agent_count, license_current, license_seats
from tests import factories

pytestmark = pytest.mark.django_db


def test_every_agent_but_a_decommissioned_one_holds_a_seat(customer, other_customer):
    for status in (AgentStatus.ONLINE, AgentStatus.OFFLINE, AgentStatus.UPGRADING):
        factories.agent(customer, status=status)
    factories.agent(customer, status=AgentStatus.DECOMMISSIONED)
    factories.agent(other_customer)
    assert customer_active_agent_count(customer) == 3
    assert customer_active_agent_count(customer.pk) == 3


def test_the_current_license_is_the_one_in_force_not_an_earlier_one(customer, other_customer):
    assert license_current(customer) is None
    earlier = factories.license(customer, max_agents=5)
    License.objects.filter(pk=earlier.pk).update(is_current=False)
    current = factories.license(customer, max_agents=20)
    factories.license(other_customer, max_agents=99)
    assert license_current(customer) == current
    assert license_current(customer.pk).max_agents == 20


def test_seats_count_agents_holding_one_and_tokens_still_redeemable(customer, other_customer):
    factories.license(customer, max_agents=5)
    factories.agent(customer)
    factories.agent(customer, status=AgentStatus.OFFLINE)
    factories.agent(customer, status=AgentStatus.DECOMMISSIONED)
    factories.agent(other_customer)
    factories.token(customer)
    factories.token(customer)
    factories.token(
        customer, expires_at=timezone.now() + timedelta(minutes=-1)
    )  # outstanding on paper, but expired
    factories.token(customer, status=TokenStatus.REDEEMED)
    factories.token(customer, status=TokenStatus.REVOKED)
    factories.token(other_customer)

    seats = license_seats(customer)

    assert seats.as_dict() == {"max_agents": 5, "used": 2, "free": 3, "outstanding_tokens": 2}
    assert seats.license == license_current(customer)


def test_an_overfull_fleet_has_no_free_seats_rather_than_a_negative_number(customer):
    factories.license(customer, max_agents=1)
    factories.agent(customer)
    factories.agent(customer)
    seats = license_seats(customer)
    assert (seats.used, seats.free) == (2, 0)


def test_without_a_license_there_are_no_seats(customer):
    factories.agent(customer)
    seats = license_seats(customer)
    assert seats.license is None
    assert seats.as_dict() == {"max_agents": 0, "used": 1, "free": 0, "outstanding_tokens": 0}

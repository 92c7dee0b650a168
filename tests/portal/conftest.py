import pytest
from django.test import Client

from fleet.choices import MemberRole
from fleet.services.anomalies import anomaly_open
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from fleet.services.customers import membership_set
from fleet.services.rollouts import rollout_start
from fleet.services.tokens import token_mint
from tests import factories


def member_client(customer, django_user_model, role, username):
    user = django_user_model.objects.create_user(username, password="pw-for-tests-1")
    membership_set(customer=customer, user=user, role=role, actor=SYSTEM)
    client = Client()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def owner(customer, django_user_model):
    return member_client(customer, django_user_model, MemberRole.OWNER, "olga")


@pytest.fixture
def viewer(customer, django_user_model):
    return member_client(customer, django_user_model, MemberRole.VIEWER, "vera")


@pytest.fixture
def stocked(customer):
    """One of every object the portal shows, for `customer`."""
    factories.license(customer, max_agents=10)
    factories.release("1.9.3")
    release = factories.release("1.10.0")
    agent = factories.agent(customer, version="1.9.3")
    factories.agent(customer, version="1.9.3", role="reviewer")
    token, _ = token_mint(customer=customer, actor=SYSTEM)
    key, _ = api_key_mint(customer=customer, name="ci", actor=SYSTEM)
    job = factories.job(customer, role="coder", payload={"repo": "a/b", "task": "t"})
    anomaly = anomaly_open(
        customer=customer, kind="agent_reported", fingerprint="f", message="m", actor=SYSTEM
    )
    rollout = rollout_start(customer=customer, release=release, actor=SYSTEM)
    return {
        "agent": agent,
        "token": token,
        "key": key,
        "job": job,
        "anomaly": anomaly,
        "rollout": rollout,
        "customer": customer,
    }

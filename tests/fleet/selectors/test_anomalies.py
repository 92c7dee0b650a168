from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AnomalyKind
from fleet.errors import NotFound
from fleet.models import Anomaly
from fleet.selectors import anomaly_get, anomaly_list

pytestmark = pytest.mark.django_db


def anomaly(customer, name, *, seen_ago, resolved_ago=None):
    now = timezone.now()
    return Anomaly.objects.create(
        customer=customer,
        kind=AnomalyKind.AGENT_REPORTED,
        fingerprint=name,
        message=name,
        last_seen=now - timedelta(minutes=seen_ago),
        resolved_at=None if resolved_ago is None else now - timedelta(minutes=resolved_ago),
    )


def messages(anomalies):
    return [a.message for a in anomalies]


@pytest.fixture
def anomalies(customer, other_customer):
    anomaly(customer, "open-old", seen_ago=30)
    anomaly(customer, "open-new", seen_ago=1)
    anomaly(customer, "fixed-long-ago", seen_ago=90, resolved_ago=60)
    anomaly(customer, "fixed-recently", seen_ago=50, resolved_ago=5)
    anomaly(other_customer, "elsewhere", seen_ago=0)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("open", ["open-new", "open-old"]),
        ("resolved", ["fixed-recently", "fixed-long-ago"]),
        ("all", ["open-new", "open-old", "fixed-recently", "fixed-long-ago"]),
    ],
)
def test_anomalies_are_listed_by_state_with_the_open_ones_first(
    customer, anomalies, state, expected
):
    assert messages(anomaly_list(customer, state)) == expected


def test_the_default_list_is_what_is_still_open(customer, anomalies):
    assert messages(anomaly_list(customer)) == ["open-new", "open-old"]


def test_another_customers_anomaly_is_as_missing_as_a_deleted_one(customer, other_customer):
    mine = anomaly(customer, "mine", seen_ago=0)
    theirs = anomaly(other_customer, "theirs", seen_ago=0)
    assert anomaly_get(customer, mine.pk) == mine
    with pytest.raises(NotFound) as foreign:
        anomaly_get(customer, theirs.pk)
    with pytest.raises(NotFound) as missing:
        anomaly_get(customer, theirs.pk + 1000)
    assert foreign.value.as_body() == missing.value.as_body()

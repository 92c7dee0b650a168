"""Findings group into incidents, one per cause: eleven agents offline are one incident
naming them, critical when they pull the fleet below its online target; resolving it
resolves every finding of that cause (each audited) and nothing else; per-agent findings
stay reachable, and resolvable one by one."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from fleet.choices import AnomalyKind, AnomalySeverity
from fleet.models import Anomaly, AuditEvent
from fleet.selectors import anomaly_incidents
from fleet.services.anomalies import agent_offline_fingerprint
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db


def offline_findings(customer, n, *, fleet=0):
    """`n` agents offline (each with its finding), in a fleet of `n + fleet` agents."""
    since = timezone.now() - timedelta(minutes=20)
    agents = [factories.agent(customer, name=f"sim-{i}") for i in range(n)]
    for _ in range(fleet):
        factories.agent(customer)
    for agent in agents:
        factories.anomaly(
            customer,
            kind=AnomalyKind.AGENT_OFFLINE,
            fingerprint=agent_offline_fingerprint(agent.pk),
            agent=agent,
            message=f"{agent.name} stopped sending heartbeats.",
            first_seen=since,
            severity=AnomalySeverity.WARNING,
        )
    return agents, since


def test_eleven_offline_agents_are_one_critical_incident_naming_them(customer, other_customer):
    agents, since = offline_findings(customer, 11, fleet=20)
    reporter = factories.agent(customer)
    factories.anomaly(
        customer, fingerprint=f"agent:{reporter.pk}:git-fetch", agent=reporter, message="fetch"
    )
    factories.anomaly(
        customer, fingerprint=f"agent:{agents[0].pk}:git-fetch", agent=agents[0], message="f2"
    )
    offline_findings(other_customer, 3)

    offline, fetch = anomaly_incidents(customer)
    assert offline.headline == f"11 agents offline since {since:%H:%M} UTC"
    assert offline.severity == AnomalySeverity.CRITICAL  # 21 of 32 online: below 95%
    assert sorted(a.name for a in offline.agents) == sorted(a.name for a in agents)
    assert (fetch.cause, len(fetch.findings)) == ("agent:git-fetch", 2)
    assert fetch.headline == "Reported by an agent: 2 agents"


def test_one_agent_offline_in_a_big_fleet_stays_a_warning(customer):
    offline_findings(customer, 1, fleet=40)
    [incident] = anomaly_incidents(customer)
    assert incident.headline.startswith("1 agent offline since ")
    assert incident.severity == AnomalySeverity.WARNING


def test_resolving_an_incident_resolves_its_findings_and_nothing_else(owner, customer):
    agents, _ = offline_findings(customer, 4, fleet=2)
    other = factories.anomaly(customer, message="disk full")
    page = owner.get(reverse("portal:anomalies")).content.decode()
    assert "4 agents offline since" in page and "Resolve all 4" in page
    assert all(f'href="/portal/agents/{a.pk}/"' in page for a in agents)  # reachable

    owner.post(
        reverse("portal:incident_resolve"),
        {"cause": "agent_offline", "note": "rebooted the rack"},
    )
    assert Anomaly.objects.filter(resolved_at__isnull=True).get() == other
    assert AuditEvent.objects.filter(action="anomaly.resolve").count() == 4
    again = owner.post(
        reverse("portal:incident_resolve"), {"cause": "agent_offline", "note": "x"}, follow=True
    )
    assert "Nothing open with that cause any more." in again.content.decode()


def test_a_viewer_cannot_resolve_an_incident_and_another_customer_cannot_reach_it(
    viewer, customer, other_customer, django_user_model
):
    offline_findings(customer, 2)
    assert (
        viewer.post(
            reverse("portal:incident_resolve"), {"cause": "agent_offline", "note": "no"}
        ).status_code
        == 403
    )
    stranger = member_client(other_customer, django_user_model, "owner", "mallory")
    stranger.post(reverse("portal:incident_resolve"), {"cause": "agent_offline", "note": "no"})
    assert Anomaly.objects.filter(resolved_at__isnull=True).count() == 2


def test_a_big_incident_lists_25_findings_and_says_how_many_more(owner, customer):
    offline_findings(customer, 40)
    page = owner.get(reverse("portal:anomalies")).content.decode()
    assert "40 agents offline since" in page and "Resolve all 40" in page
    assert page.count('<li id="anomaly-') == 25
    assert "and 15 more" in page and 'href="/portal/agents/?status=offline"' in page


def test_incidents_cost_two_queries_whatever_their_size(customer, django_assert_num_queries):
    offline_findings(customer, 30, fleet=5)
    with django_assert_num_queries(2):
        [incident] = anomaly_incidents(customer)
    assert len(incident.findings) == 30

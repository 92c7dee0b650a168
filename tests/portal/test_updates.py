"""The portal's update controls: the Upgrades page links the lifecycle docs."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_upgrades_page_links_to_the_update_lifecycle(owner):
    page = owner.get(reverse("portal:upgrades")).content.decode()
    assert 'href="/docs/updates"' in page


def test_an_owner_pins_an_agent_on_its_page_and_a_viewer_cannot(owner, viewer, customer):
    from fleet.models import Agent
    from tests import factories

    factories.license(customer)
    factories.release("1.10.0")
    agent = factories.agent(customer)
    url = reverse("portal:agent_update_pin", args=[agent.pk])
    page = owner.get(reverse("portal:agent_detail", args=[agent.pk])).content.decode()
    assert 'id="agent-update-pin"' in page
    owner.post(url, {"channel": "beta", "version": "1.10.0"})
    agent = Agent.objects.get(pk=agent.pk)
    assert (agent.update_channel, str(agent.pinned_version)) == ("beta", "1.10.0")
    refused = owner.post(url, {"channel": "", "version": "9.9.9"}, follow=True)
    assert "No published (unyanked) release 9.9.9" in refused.content.decode()
    assert viewer.post(url, {"channel": ""}).status_code == 403
    assert Agent.objects.get(pk=agent.pk).update_channel == "beta"


def test_an_owner_sets_the_maintenance_window_on_settings(owner, viewer, customer):
    from datetime import time

    from fleet.models import AuditEvent, Customer

    url = reverse("portal:settings")
    window = {
        "maintenance_window": "1",
        "time_zone": "Europe/Berlin",
        "days": ["6", "7"],
        "start": "23:00",
        "end": "02:00",
    }
    assert owner.post(url, window).status_code == 302
    saved = Customer.objects.get(pk=customer.pk)
    assert (saved.time_zone, saved.maintenance_days) == ("Europe/Berlin", [6, 7])
    assert (saved.maintenance_start, saved.maintenance_end) == (time(23), time(2))
    assert AuditEvent.objects.filter(action="customer.update").exists()
    refused = owner.post(url, {**window, "time_zone": "Atlantis/Nowhere"})
    assert refused.status_code == 422
    assert "Unknown time zone" in refused.content.decode()
    assert viewer.post(url, window).status_code == 403
    page = owner.get(url).content.decode()
    assert 'id="maintenance-window"' in page and 'value="Europe/Berlin"' in page


def test_an_owner_starts_a_wave_on_part_of_the_fleet(owner, customer):
    from fleet.models import Rollout
    from tests import factories

    factories.license(customer, max_agents=20)
    factories.release("1.9.3")
    target = factories.release("1.10.0")
    for role in ("coder", "coder", "reviewer", "tester"):
        factories.agent(customer, role=role, version="1.9.3", labels={"pool": "blue"})
    response = owner.post(
        reverse("portal:upgrades"),
        {
            "release": target.pk,
            "canary_soak_hours": 24,
            "batch_percent": 25,
            "batch_watch_minutes": 60,
            "online_floor_percent": 95,
            "scope_roles": ["coder"],
            "scope_labels": "pool=blue",
            "reason": "coders first",
        },
    )
    assert response.status_code == 302, response.context["form"].errors
    rollout = Rollout.objects.get()
    assert rollout.scope == {"role": ["coder"], "labels": {"pool": "blue"}}
    assert rollout.targets.count() == 2


def test_pinning_a_decommissioned_agent_is_refused_not_a_500(owner, customer):
    from fleet.services.agents import agent_decommission
    from fleet.services.audit import SYSTEM
    from tests import factories

    factories.release("1.10.0")
    agent = factories.agent(customer)
    agent_decommission(agent=agent, actor=SYSTEM)
    url = reverse("portal:agent_update_pin", args=[agent.pk])
    page = owner.post(url, {"channel": "beta", "version": ""}, follow=True)
    assert page.status_code == 200
    assert "decommissioned" in page.content.decode()

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

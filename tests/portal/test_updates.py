"""The portal's update controls: the Upgrades page links the lifecycle docs."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_upgrades_page_links_to_the_update_lifecycle(owner):
    page = owner.get(reverse("portal:upgrades")).content.decode()
    assert 'href="/docs/updates"' in page

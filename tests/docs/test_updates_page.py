"""/docs/updates: the update lifecycle in the product, linked from the Upgrades page, with
this deployment's numbers."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_updates_page_walks_the_lifecycle_with_this_deployments_numbers(client, settings):
    settings.RELEASE_MAX_BYTES = 50 * 1024 * 1024
    response = client.get("/docs/updates")
    assert response.status_code == 200
    html = response.content.decode()
    for section in ("releases", "channels", "waves", "maintenance-windows", "on-the-agent"):
        assert f'id="{section}"' in html
    for report in ("succeeded", "verify_failed", "smoke_check_failed", "start_failed"):
        assert f"<code>{report}</code>" in html
    assert "last known good" in html and "release_keygen" in html
    assert "an artifact over 50 MB" in html
    assert "soaked 24 hours" in html and "at most 25% of the wave" in html
    assert reverse("docs:updates") in client.get("/docs/").content.decode()

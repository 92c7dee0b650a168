"""Staff publish a signed artifact from the admin through the same service: a refusal is
a form error and stores nothing."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from fleet.models import AuditEvent, Release
from tests.fleet.conftest import artifact_bytes

pytestmark = pytest.mark.django_db
DATA = artifact_bytes("1.99.0", 50_000)


def upload(staff_client, signature, data=DATA, version="1.99.0"):
    return staff_client.post(
        reverse("admin:fleet_release_add"),
        {
            "version": version,
            "channel": "stable",
            "notes": "real upgrade",
            "artifact_file": SimpleUploadedFile("agentina-1.99.0.tar.gz", data),
            "artifact_signature": signature,
        },
    )


def test_staff_publish_an_artifact_and_see_its_hash(staff_client, release_keys):
    response = upload(staff_client, release_keys.sign("1.99.0", DATA))
    assert response.status_code == 302, response.content
    release = Release.objects.get()
    assert (release.size, release.artifact.name) == (len(DATA), "1.99.0/agentina-1.99.0.tar.gz")
    assert AuditEvent.objects.get(action="release.publish").changes["size"] == [None, len(DATA)]
    page = staff_client.get(reverse("admin:fleet_release_change", args=[release.pk]))
    assert release.sha256.encode() in page.content


def test_a_refused_upload_is_a_form_error_and_stores_nothing(staff_client, release_keys, settings):
    tampered = DATA[:-1] + b"\x00"
    refused = upload(staff_client, release_keys.sign("1.99.0", DATA), data=tampered)
    assert refused.status_code == 200
    assert b"does not verify" in refused.content
    short = upload(staff_client, "AAAA")
    assert b"64 bytes" in short.content
    settings.RELEASE_MAX_BYTES = 10_000
    big = upload(staff_client, release_keys.sign("1.99.0", DATA))
    assert b"RELEASE_MAX_BYTES" in big.content
    assert not Release.objects.exists()
    assert release_keys.stored_files() == []


def test_staff_pin_agents_with_an_admin_action(staff_client, customer):
    from fleet.models import Agent
    from tests import factories

    factories.release("1.10.0")
    agents = [factories.agent(customer) for _ in range(2)]
    response = staff_client.post(
        reverse("admin:fleet_agent_changelist"),
        {
            "action": "pin_updates",
            "_selected_action": [a.pk for a in agents],
            "apply": "1",
            "note": "beta 1.10.0",
        },
    )
    assert response.status_code == 302
    pins = set(Agent.objects.values_list("update_channel", "pinned_version"))
    assert {(c, str(v)) for c, v in pins} == {("beta", "1.10.0")}
    assert AuditEvent.objects.filter(action="agent.update_pin").count() == 2
    staff_client.post(
        reverse("admin:fleet_agent_changelist"),
        {"action": "pin_updates", "_selected_action": [agents[0].pk], "apply": "1", "note": "none"},
    )
    assert Agent.objects.get(pk=agents[0].pk).pinned_version is None

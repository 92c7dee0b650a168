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

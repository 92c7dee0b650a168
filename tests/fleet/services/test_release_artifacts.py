"""Publishing a signed artifact: stored only when its signature verifies over its version,
SHA-256 and size; every refusal stores nothing and reads no more than it must."""

import hashlib

import pytest

from fleet.errors import (
    InvalidVersion,
    ReleaseAlreadyPublished,
    ReleaseArtifactTooLarge,
    ReleaseSignatureInvalid,
    ReleaseSigningKeyMissing,
)
from fleet.models import AuditEvent, Release
from fleet.services.audit import SYSTEM
from fleet.services.releases import release_publish
from tests.fleet.conftest import artifact_bytes, as_upload

pytestmark = pytest.mark.django_db


class Endless:
    """A 2 GB upload that is never allocated: zeros, counted as they are read."""

    def __init__(self, total: int = 2 * 1024**3, declare: bool = False) -> None:
        self.total, self.read_bytes = total, 0
        if declare:
            self.size = total

    def read(self, n: int = -1) -> bytes:
        n = min(n if n > 0 else 1024 * 1024, self.total - self.read_bytes)
        self.read_bytes += n
        return bytes(n)


class Unreadable:
    name = "agentina.tar.gz"

    def read(self, n: int = -1) -> bytes:
        raise AssertionError("the artifact was read before the signature was checked")


def publish(data: bytes, signature: str, version: str = "1.99.0", **kwargs):
    return release_publish(
        version=version, artifact=as_upload(data), signature=signature, actor=SYSTEM, **kwargs
    )


def test_a_signed_artifact_is_stored_with_its_hash_size_and_signature(release_keys):
    data = artifact_bytes()
    signature = release_keys.sign("1.99.0", data)
    release = publish(data, signature, notes="real upgrade")
    release.refresh_from_db()
    assert (release.sha256, release.size, release.signature) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        signature,
    )
    assert release.artifact.name == "1.99.0/agentina-1.99.0.tar.gz"
    with release.artifact.open("rb") as stored:
        assert stored.read() == data
    event = AuditEvent.objects.get(action="release.publish")
    assert event.changes["sha256"] == [None, release.sha256]
    assert event.changes["size"] == [None, len(data)]


@pytest.mark.parametrize("what", ["tampered byte", "other key", "other version", "wrong length"])
def test_a_signature_that_does_not_verify_stores_nothing(release_keys, what):
    data = artifact_bytes()
    signature = release_keys.sign("1.99.0", data)
    if what == "tampered byte":
        data = data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]
    elif what == "other key":
        from agentina.signing import generate_keypair, sign_release

        other, _ = generate_keypair()
        signature = sign_release(other, "1.99.0", hashlib.sha256(data).hexdigest(), len(data))
    elif what == "other version":  # a signature for 1.98.0 replayed for 1.99.0
        signature = release_keys.sign("1.98.0", data)
    else:
        signature = signature[:-4] + "=="  # 63 bytes
    with pytest.raises(ReleaseSignatureInvalid) as refused:
        publish(data, signature)
    assert refused.value.code == "release_signature_invalid"
    assert refused.value.extra["field"] == "signature"
    assert not Release.objects.exists()
    assert release_keys.stored_files() == []
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("signature", ["", "not base64!", "AAAA", "A" * 10_000, "\x00" * 88])
def test_a_malformed_signature_is_refused_before_the_artifact_is_read(release_keys, signature):
    with pytest.raises(ReleaseSignatureInvalid):
        release_publish(version="1.99.0", artifact=Unreadable(), signature=signature, actor=SYSTEM)
    assert not Release.objects.exists()


def test_a_2_gb_upload_is_refused_after_reading_at_most_the_limit(release_keys, settings):
    settings.RELEASE_MAX_BYTES = 2 * 1024 * 1024
    upload = Endless()
    with pytest.raises(ReleaseArtifactTooLarge) as refused:
        release_publish(
            version="1.99.0",
            artifact=upload,
            signature=release_keys.sign("1.99.0", b"x"),
            actor=SYSTEM,
        )
    assert (refused.value.status, refused.value.extra["field"]) == (413, "artifact")
    assert upload.read_bytes <= settings.RELEASE_MAX_BYTES + 1024 * 1024
    declared = Endless(declare=True)  # an upload that says its size is not read at all
    with pytest.raises(ReleaseArtifactTooLarge):
        release_publish(
            version="1.99.0",
            artifact=declared,
            signature=release_keys.sign("1.99.0", b"x"),
            actor=SYSTEM,
        )
    assert declared.read_bytes == 0
    assert not Release.objects.exists()
    assert release_keys.stored_files() == []


@pytest.mark.parametrize("version", ["../x", "../../etc/passwd", "1.0.0/../../x", "1.0.0\x00", ""])
def test_a_version_that_is_not_one_is_refused_before_anything_is_read(release_keys, version):
    with pytest.raises(InvalidVersion):
        release_publish(version=version, artifact=Unreadable(), signature="", actor=SYSTEM)
    assert release_keys.stored_files() == []


def test_a_version_published_twice_keeps_the_first_artifact(release_keys):
    data = artifact_bytes()
    first = publish(data, release_keys.sign("1.99.0", data))
    other = artifact_bytes("other")
    with pytest.raises(ReleaseAlreadyPublished):
        publish(other, release_keys.sign("1.99.0", other))
    assert Release.objects.get().sha256 == first.sha256
    assert len(release_keys.stored_files()) == 1


def test_without_a_public_key_no_artifact_is_accepted(release_keys, settings):
    data = artifact_bytes()
    signature = release_keys.sign("1.99.0", data)
    settings.RELEASE_PUBLIC_KEY = ""
    with pytest.raises(ReleaseSigningKeyMissing):
        publish(data, signature)
    assert not Release.objects.exists()

"""manage.py release_keygen and release_publish: keys on disk (never in the database), a
signed publish from a file or from this repository's source."""

import io
import stat
import tarfile

import pytest
from django.core.management import CommandError, call_command

from agentina.signing import generate_keypair, save_private_key
from fleet.models import Release


def keygen(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    call_command("release_keygen", "--out", str(tmp_path / "keys"), stdout=out, stderr=err)
    return out.getvalue().splitlines()


def test_keygen_writes_a_private_key_only_its_owner_reads_and_prints_the_env_line(tmp_path):
    # No django_db mark: any database access would fail this test.
    public, env_line = keygen(tmp_path)
    private = tmp_path / "keys" / "release-signing.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "keys" / "release-signing.pub").read_text().strip() == public
    assert env_line == f"RELEASE_PUBLIC_KEY={public}"
    with pytest.raises(CommandError, match="never overwritten"):
        keygen(tmp_path)


@pytest.mark.django_db
def test_publish_from_source_builds_the_agent_stamped_with_the_version(
    tmp_path, settings, release_keys
):
    public, _ = keygen(tmp_path)
    settings.RELEASE_PUBLIC_KEY = public
    key = str(tmp_path / "keys" / "release-signing.pem")
    out = io.StringIO()
    call_command(
        "release_publish",
        "1.99.0",
        "--from-source",
        "--signing-key",
        key,
        "--notes",
        "demo",
        stdout=out,
    )
    release = Release.objects.get(version="1.99.0")
    assert f"sha256 {release.sha256}" in out.getvalue()
    with release.artifact.open("rb") as stored, tarfile.open(fileobj=stored) as archive:
        init = archive.extractfile("agentina/__init__.py").read().decode()
    assert '__version__ = "1.99.0"' in init
    # A file, on the beta channel:
    artifact = tmp_path / "agentina-2.0.0-beta.1.tar.gz"
    artifact.write_bytes(b"any archive bytes")
    call_command(
        "release_publish",
        "2.0.0-beta.1",
        "--channel",
        "beta",
        "--artifact",
        str(artifact),
        "--signing-key",
        key,
        stdout=io.StringIO(),
    )
    assert Release.objects.get(version="2.0.0-beta.1").size == len(b"any archive bytes")


@pytest.mark.django_db
def test_publish_with_a_key_the_server_does_not_trust_publishes_nothing(tmp_path, release_keys):
    stranger, _ = generate_keypair()
    key = save_private_key(stranger, tmp_path / "stranger.pem")
    with pytest.raises(CommandError, match="not the key RELEASE_PUBLIC_KEY names"):
        call_command("release_publish", "1.99.0", "--from-source", "--signing-key", str(key))
    trusted = save_private_key(release_keys.private, tmp_path / "trusted.pem")
    with pytest.raises(CommandError, match="No artifact file"):
        call_command(
            "release_publish",
            "1.99.0",
            "--artifact",
            str(tmp_path / "missing.tar.gz"),
            "--signing-key",
            str(trusted),
        )
    assert not Release.objects.exists()
    assert release_keys.stored_files() == []

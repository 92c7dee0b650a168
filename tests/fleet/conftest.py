"""Release fixtures: a signing key the server trusts and artifact storage in a temporary
directory (never the repository's var/releases)."""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentina.signing import generate_keypair, sign_release


@dataclass
class ReleaseKeys:
    private: Ed25519PrivateKey
    public: str
    root: Path  # where the releases storage writes

    def sign(self, version: str, data: bytes) -> str:
        return sign_release(self.private, version, hashlib.sha256(data).hexdigest(), len(data))

    def stored_files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()]


@pytest.fixture
def release_keys(settings, tmp_path) -> ReleaseKeys:
    private, public = generate_keypair()
    root = tmp_path / "releases"
    settings.RELEASE_PUBLIC_KEY = public
    settings.STORAGES = {
        **settings.STORAGES,
        "releases": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    return ReleaseKeys(private, public, root)


def artifact_bytes(version: str = "1.99.0", size: int = 300_000) -> bytes:
    """An archive-sized body, different for each version."""
    seed = hashlib.sha256(version.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def as_upload(data: bytes, name: str = "agentina-1.99.0.tar.gz") -> io.BytesIO:
    upload = io.BytesIO(data)
    upload.name = name
    return upload

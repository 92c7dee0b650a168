"""Release signatures: Ed25519 over a statement that binds version, SHA-256 and size.

Ed25519 cannot sign a stream, so the signature covers a short statement instead of the
file; the file is then checked against the statement's hash and size. One module builds
the statement, for the server that verifies a publish and the agent that verifies a
download: the format lives in one place.

Keys: the private key is a PEM PKCS8 file (mode 0600) that never enters a database; the
public key is the base64 of its 32 raw bytes, one line. A signature on the wire is the
base64 (standard, padded) of its 64 raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

STATEMENT_HEADER = b"agentina-release v1\n"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
SIGNATURE_B64_LENGTH = 88  # base64 of 64 bytes, padded
_SHA256 = re.compile(r"[0-9a-f]{64}")
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+\-]{0,63}")


class SignatureInvalid(ValueError):
    """The signature, the key or the statement it would cover is not acceptable."""


def release_statement(version: str, sha256: str, size: int) -> bytes:
    """The bytes a release signature covers."""
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise SignatureInvalid(f"version {version!r} is not a release version")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise SignatureInvalid("sha256 must be 64 lowercase hex characters")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise SignatureInvalid("size must be a non-negative integer")
    return STATEMENT_HEADER + f"version={version}\nsha256={sha256}\nsize={size}\n".encode()


def _b64decode(value: str, expected_length: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureInvalid(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid(f"{what} is not valid base64") from exc
    if len(raw) != expected_length:
        raise SignatureInvalid(f"{what} must be {expected_length} bytes, got {len(raw)}")
    return raw


def load_public_key(public_key_b64: str) -> Ed25519PublicKey:
    raw = _b64decode(public_key_b64, PUBLIC_KEY_BYTES, "public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def decode_signature(signature_b64: str) -> bytes:
    """The 64 raw bytes of a signature; anything else (wrong length, not base64) raises."""
    return _b64decode(signature_b64, SIGNATURE_BYTES, "signature")


def verify_release(
    public_key_b64: str, version: str, sha256: str, size: int, signature_b64: str
) -> None:
    """Raise SignatureInvalid unless the signature covers this version, hash and size."""
    key = load_public_key(public_key_b64)
    signature = decode_signature(signature_b64)
    try:
        key.verify(signature, release_statement(version, sha256, size))
    except InvalidSignature as exc:
        raise SignatureInvalid("signature does not match the release") from exc


def sign_release(private_key: Ed25519PrivateKey, version: str, sha256: str, size: int) -> str:
    signature = private_key.sign(release_statement(version, sha256, size))
    return base64.b64encode(signature).decode("ascii")


def generate_keypair() -> tuple[Ed25519PrivateKey, str]:
    """A new private key and its public key as base64."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, public_key_b64(private_key)


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def save_private_key(private_key: Ed25519PrivateKey, path: str | Path) -> Path:
    """Written with mode 0600 from the start; an existing file is never overwritten."""
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(private_key))
    return target


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except ValueError as exc:
        raise SignatureInvalid(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureInvalid(f"{path} is not an Ed25519 private key")
    return key

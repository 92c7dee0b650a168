"""Secrets: activation tokens, agent secrets and customer API keys.

A secret reads `<kind prefix><32 base62 random chars><6 base62 CRC32 chars>`: ~190 bits
of randomness, a prefix that says what it is (and lets secret scanners find it), and a
checksum so a mistyped or truncated secret is refused without touching the database.
Only the SHA-256 digest and a short display prefix are stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass
from enum import StrEnum

_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LEN = 32
_CHECKSUM_LEN = 6
DISPLAY_PREFIX_LEN = 6  # random characters kept in the clear after the kind prefix


class SecretKind(StrEnum):
    """The readable prefix of each kind (prefixes, not secrets)."""

    ACTIVATION_TOKEN = "agtn_act_"  # noqa: S105
    AGENT_SECRET = "agtn_agt_"  # noqa: S105
    API_KEY = "agtn_key_"
    INVITATION = "agtn_inv_"


@dataclass(frozen=True)
class MintedSecret:
    plaintext: str  # shown once, never stored
    display_prefix: str
    digest: str


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


def secret_digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def secret_mint(kind: SecretKind) -> MintedSecret:
    body = kind.value + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LEN))
    plaintext = body + _checksum(body)
    return MintedSecret(
        plaintext=plaintext,
        display_prefix=plaintext[: len(kind.value) + DISPLAY_PREFIX_LEN],
        digest=secret_digest(plaintext),
    )


def secret_is_well_formed(plaintext: str, kind: SecretKind) -> bool:
    """Shape and checksum only: cheap, and needs no database."""
    if len(plaintext) != len(kind.value) + _RANDOM_LEN + _CHECKSUM_LEN or not plaintext.isascii():
        return False
    if not plaintext.startswith(kind.value):
        return False
    body, checksum = plaintext[:-_CHECKSUM_LEN], plaintext[-_CHECKSUM_LEN:]
    if any(c not in _ALPHABET for c in plaintext[len(kind.value) :]):
        return False
    return hmac.compare_digest(checksum, _checksum(body))


def secret_matches(plaintext: str, digest: str) -> bool:
    return hmac.compare_digest(secret_digest(plaintext), digest)


# Recovery codes: 16 characters of lowercase base32 (80 bits), shown in groups of four;
# stored as a 16-character digest (96 bits of SHA-256: django-otp's token column holds 16).
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_RECOVERY_LEN = 16


def recovery_code_mint() -> str:
    code = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LEN))
    return "-".join(code[i : i + 4] for i in range(0, _RECOVERY_LEN, 4))


def recovery_code_normalize(text: str) -> str:
    """A code as typed (any case, with or without dashes and spaces), as minted."""
    return "".join(c for c in text.lower() if c in _RECOVERY_ALPHABET)


def recovery_code_digest(code: str) -> str:
    digest = hashlib.sha256(recovery_code_normalize(code).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:16]

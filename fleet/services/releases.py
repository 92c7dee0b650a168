"""Releases: publish (with a signed artifact, or none), yank, edit notes."""

import hashlib
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction
from django.utils import timezone

from agentina.signing import SignatureInvalid, decode_signature, verify_release
from fleet.agent_cache import agent_facts_changed
from fleet.choices import AuditAction, Channel
from fleet.errors import (
    InvalidVersion,
    ReleaseAlreadyPublished,
    ReleaseArtifactTooLarge,
    ReleaseSignatureInvalid,
    ReleaseSigningKeyMissing,
)
from fleet.models import Release
from fleet.models.releases import release_storage
from fleet.services.audit import Actor, audit_record, model_changes
from fleet.versions import SemVer

CHUNK = 1024 * 1024
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".whl", ".zip")


def release_version_parse(version: str) -> SemVer:
    """A release's version: semantic, without build metadata (which has no precedence)."""
    try:
        parsed = SemVer(version)
    except (ValueError, TypeError) as exc:
        raise InvalidVersion(str(exc), field="version") from exc
    if parsed.build:
        raise InvalidVersion(
            "A release's version takes no build metadata (+…): it has no order.", field="version"
        )
    return parsed


@dataclass(frozen=True)
class _Measured:
    file: IO[bytes]  # a local temporary copy, at its start
    sha256: str
    size: int


@contextmanager
def _measured_copy(artifact: IO[bytes], limit: int) -> Iterator[_Measured]:
    """The artifact copied to a temporary file a chunk at a time, hashed and counted on
    the way; refused as soon as it passes `limit` bytes (a huge upload is never read
    whole, never held in memory). The copy is deleted on leaving, whatever happens."""
    declared = getattr(artifact, "size", None)
    if isinstance(declared, int) and declared > limit:
        raise release_too_large(limit)
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile(prefix="agentina-release-") as copy:
        while chunk := artifact.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise release_too_large(limit)
            digest.update(chunk)
            copy.write(chunk)
        copy.seek(0)
        yield _Measured(copy, digest.hexdigest(), size)


def release_too_large(limit: int) -> ReleaseArtifactTooLarge:
    return ReleaseArtifactTooLarge(
        f"The artifact is over the {limit} bytes a release may have (RELEASE_MAX_BYTES); "
        "nothing was stored.",
        field="artifact",
        max_bytes=limit,
    )


def _artifact_name(version: SemVer, original: str) -> str:
    """Where it is stored: under its version, named by the archive type it claims (the
    uploaded name never chooses a path)."""
    lowered = PurePath(original or "").name.lower()
    suffix = next((s for s in _ARCHIVE_SUFFIXES if lowered.endswith(s)), ".bin")
    safe = re.sub(r"[^0-9A-Za-z.\-]", "_", str(version))
    return f"{safe}/agentina-{safe}{suffix}"


def _signature_checked_early(signature: str) -> str:
    """The signature's form, before a byte of the artifact is read."""
    if not settings.RELEASE_PUBLIC_KEY:
        raise ReleaseSigningKeyMissing(
            "This server has no RELEASE_PUBLIC_KEY, so it cannot accept a signed artifact."
        )
    try:
        decode_signature(signature)
    except SignatureInvalid as exc:
        raise ReleaseSignatureInvalid(
            f"The signature is not usable: {exc}. It must be the base64 of the 64 bytes "
            "of an Ed25519 signature.",
            field="signature",
        ) from exc
    return signature.strip()


def release_publish(
    *,
    version: str,
    channel: str = Channel.STABLE,
    notes: str = "",
    artifact: IO[bytes] | None = None,
    artifact_name: str = "",
    signature: str = "",
    actor: Actor,
) -> Release:
    """Publish a version, with its artifact when given: streamed into the releases
    storage while its SHA-256 and size are computed, kept only if `signature` verifies
    against RELEASE_PUBLIC_KEY over agentina.signing.release_statement. A refusal
    (a bad signature, too big, a version already published) stores nothing."""
    parsed = release_version_parse(version)
    if channel not in Channel.values:
        raise InvalidVersion(f"Unknown channel {channel!r}.", field="channel")
    if artifact is None:
        if signature:
            raise ReleaseSignatureInvalid(
                "A signature without an artifact signs nothing.", field="signature"
            )
        return _release_create(parsed, channel, notes, actor, {})
    signature = _signature_checked_early(signature)
    if Release.objects.filter(version=parsed).exists():
        raise _already(parsed)
    with _measured_copy(artifact, settings.RELEASE_MAX_BYTES) as measured:
        try:
            verify_release(
                settings.RELEASE_PUBLIC_KEY,
                str(parsed),
                measured.sha256,
                measured.size,
                signature,
            )
        except SignatureInvalid as exc:
            raise ReleaseSignatureInvalid(
                f"The signature does not verify for {parsed} (sha256 {measured.sha256}, "
                f"{measured.size} bytes) against this server's release key: {exc}. "
                "Nothing was stored.",
                field="signature",
                sha256=measured.sha256,
                size=measured.size,
            ) from exc
        stored = release_storage.save(
            _artifact_name(parsed, artifact_name or getattr(artifact, "name", "") or ""),
            File(measured.file),
        )
    fields = {
        "artifact": stored,
        "sha256": measured.sha256,
        "size": measured.size,
        "signature": signature,
    }
    try:
        return _release_create(parsed, channel, notes, actor, fields)
    except BaseException:
        with suppress(Exception):
            release_storage.delete(stored)  # nothing is left of a refused publish
        raise


def _already(version: SemVer) -> ReleaseAlreadyPublished:
    return ReleaseAlreadyPublished(f"Release {version} is already published.")


@transaction.atomic
def _release_create(
    version: SemVer, channel: str, notes: str, actor: Actor, artifact: dict
) -> Release:
    try:
        with transaction.atomic():
            release = Release.objects.create(
                version=version,
                channel=channel,
                notes=notes,
                published_at=timezone.now(),
                **artifact,
            )
    except IntegrityError as exc:
        raise _already(version) from exc
    agent_facts_changed(everyone=True)  # every agent's "latest release" may move
    changes: dict = {"version": [None, str(version)], "channel": [None, channel]}
    if artifact:
        changes |= {"sha256": [None, artifact["sha256"]], "size": [None, artifact["size"]]}
    audit_record(
        actor=actor,
        action=AuditAction.RELEASE_PUBLISH,
        target=release,
        customer=None,
        changes=changes,
    )
    return release


@transaction.atomic
def release_yank(*, release: Release, reason: str, actor: Actor) -> Release:
    """A yanked release is never 'latest' again; agents already on it keep running."""
    updated = Release.objects.filter(pk=release.pk, yanked=False).update(
        yanked=True, yanked_at=timezone.now(), yanked_reason=reason[:500]
    )
    release.refresh_from_db()
    if updated:
        agent_facts_changed(everyone=True)
        audit_record(
            actor=actor,
            action=AuditAction.RELEASE_YANK,
            target=release,
            customer=None,
            changes={"yanked": [False, True], "reason": [None, reason]},
        )
    return release


@transaction.atomic
def release_update(*, release: Release, actor: Actor) -> Release:
    """Only the notes of a published release change; its version and channel are history."""
    before = Release.objects.select_for_update().get(pk=release.pk)
    changes = model_changes(before, release, ["notes"])
    if changes:
        release.save(update_fields=["notes"])
        audit_record(
            actor=actor,
            action=AuditAction.RELEASE_UPDATE,
            target=release,
            customer=None,
            changes=changes,
        )
    return release

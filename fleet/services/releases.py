from django.db import IntegrityError, transaction
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import AuditAction, Channel
from fleet.errors import InvalidVersion, ReleaseAlreadyPublished
from fleet.models import Release
from fleet.services.audit import Actor, audit_record, model_changes
from fleet.versions import SemVer


def release_version_parse(version: str) -> SemVer:
    """A release's version: semantic, without build metadata (which has no precedence)."""
    try:
        parsed = SemVer(version)
    except ValueError as exc:
        raise InvalidVersion(str(exc), field="version") from exc
    if parsed.build:
        raise InvalidVersion(
            "A release's version takes no build metadata (+…): it has no order.", field="version"
        )
    return parsed


@transaction.atomic
def release_publish(
    *, version: str, channel: str = Channel.STABLE, notes: str = "", actor: Actor
) -> Release:
    parsed = release_version_parse(version)
    if channel not in Channel.values:
        raise InvalidVersion(f"Unknown channel {channel!r}.", field="channel")
    try:
        with transaction.atomic():
            release = Release.objects.create(
                version=parsed, channel=channel, notes=notes, published_at=timezone.now()
            )
    except IntegrityError as exc:
        raise ReleaseAlreadyPublished(f"Release {parsed} is already published.") from exc
    agent_facts_changed(everyone=True)  # every agent's "latest release" may move
    audit_record(
        actor=actor,
        action=AuditAction.RELEASE_PUBLISH,
        target=release,
        customer=None,
        changes={"version": [None, str(parsed)], "channel": [None, channel]},
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

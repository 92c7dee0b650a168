"""Releases: the latest one each channel sees."""

from django.db.models import QuerySet

from fleet.choices import Channel
from fleet.errors import InvalidVersion, ReleaseNotFound
from fleet.models import Release
from fleet.versions import SemVer


def releases_newest_first(channels: list[Channel]) -> QuerySet[Release]:
    """The non-yanked releases of exactly these channels, newest first."""
    return Release.objects.filter(channel__in=channels, yanked=False).order_by("-version")


def release_list_for(channel: str = Channel.STABLE) -> QuerySet[Release]:
    """The non-yanked releases a channel sees, newest first; beta also sees stable ones."""
    channels = [Channel.STABLE, Channel.BETA] if channel == Channel.BETA else [Channel.STABLE]
    return releases_newest_first(channels)


def release_latest(channel: str = Channel.STABLE) -> Release | None:
    """The newest non-yanked release a channel sees."""
    return release_list_for(channel).first()


def release_for_download(version: str) -> Release:
    """A release an agent may download: published, not yanked, with an artifact. The
    version is parsed as a version (never used as a path): anything else is 422."""
    try:
        parsed = SemVer(version)
    except (ValueError, TypeError) as exc:
        raise InvalidVersion(
            f"{version[:80]!r} is not a release version.", field="version"
        ) from exc
    release = Release.objects.filter(version=parsed, yanked=False).exclude(artifact="").first()
    if release is None:
        raise ReleaseNotFound(f"No downloadable release {parsed}.", field="version")
    return release


def release_artifact_path(version: SemVer | str) -> str:
    """Where an agent downloads a release's artifact (a path on this server)."""
    return f"/api/v1/releases/{version}/artifact"

"""Releases: the latest one each channel sees."""

from django.db.models import QuerySet

from fleet.choices import Channel
from fleet.models import Release


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

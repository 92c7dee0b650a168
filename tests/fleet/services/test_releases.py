import pytest

from fleet.choices import Channel
from fleet.errors import InvalidVersion, ReleaseAlreadyPublished
from fleet.models import AuditEvent, Release
from fleet.selectors import release_latest
from fleet.services.audit import SYSTEM, Actor
from fleet.services.releases import release_publish, release_update, release_yank

pytestmark = pytest.mark.django_db


def test_publish_records_the_release_and_an_audit_event(admin_user):
    release = release_publish(
        version="1.10.0",
        notes="faster indexing",
        actor=Actor(user=admin_user, label=admin_user.username),
    )
    assert Release.objects.get().version == "1.10.0"
    event = AuditEvent.objects.get()
    assert (event.action, event.target_id, event.actor_label) == (
        "release.publish",
        str(release.pk),
        admin_user.username,
    )


def test_publishing_a_version_twice_is_refused():
    release_publish(version="1.10.0", actor=SYSTEM)
    with pytest.raises(ReleaseAlreadyPublished):
        release_publish(version="v1.10.0", actor=SYSTEM)
    assert Release.objects.count() == 1


@pytest.mark.parametrize(
    "bad", ["1.10", "latest", "1.0.0; DROP TABLE fleet_release", "\x00", "1.0.0+build.5"]
)
def test_malformed_version_is_refused(bad):
    with pytest.raises(InvalidVersion):
        release_publish(version=bad, actor=SYSTEM)
    assert not Release.objects.exists()


def test_latest_is_semver_newest_unyanked_and_beta_sees_stable():
    for version in ("1.9.3", "1.10.0", "1.2.0"):
        release_publish(version=version, actor=SYSTEM)
    beta = release_publish(version="1.11.0-beta.1", channel=Channel.BETA, actor=SYSTEM)
    assert release_latest(Channel.STABLE).version == "1.10.0"
    assert release_latest(Channel.BETA) == beta
    release_yank(
        release=Release.objects.get(version="1.10.0"), reason="crash on start", actor=SYSTEM
    )
    assert release_latest(Channel.STABLE).version == "1.9.3"


def test_yank_twice_is_one_event():
    release = release_publish(version="1.0.0", actor=SYSTEM)
    release_yank(release=release, reason="bad", actor=SYSTEM)
    release_yank(release=release, reason="bad", actor=SYSTEM)
    assert release.yanked
    assert AuditEvent.objects.filter(action="release.yank").count() == 1


def test_only_notes_change_after_publishing():
    release = release_publish(version="1.0.0", actor=SYSTEM)
    release.notes = "now with notes"
    release_update(release=release, actor=SYSTEM)
    assert Release.objects.get().notes == "now with notes"
    assert AuditEvent.objects.get(action="release.update").changes == {
        "notes": ["", "now with notes"]
    }

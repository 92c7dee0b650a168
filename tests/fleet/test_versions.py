import random

import pytest

from fleet.models import Release
from fleet.versions import SemVer
from tests import factories

# In semver precedence order (semver.org §11's example plus multi-digit parts).
ORDERED = [
    "0.9.0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.2.0",
    "1.9.3",
    "1.10.0",
    "1.10.1",
    "2.0.0",
    "10.0.0",
]


def test_versions_order_by_precedence_not_characters():
    assert SemVer("1.10.0") > SemVer("1.9.3")
    assert "1.10.0" < "1.9.3"  # what plain strings would say
    shuffled = ORDERED[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(SemVer(v) for v in shuffled) == ORDERED


@pytest.mark.parametrize(
    "text", ["1.2", "01.2.3", "1.2.3.4", "v", "latest", "1.2.3-", "", "1.2.3-01"]
)
def test_malformed_versions_are_refused(text):
    with pytest.raises(ValueError, match="not a semantic version"):
        SemVer(text)


def test_build_metadata_and_v_prefix():
    v = SemVer("v1.4.2+build.7")
    assert (v.major, v.minor, v.patch, v.build) == (1, 4, 2, "build.7")
    assert str(v) == "1.4.2+build.7"


def test_minors_behind():
    assert SemVer("1.8.0").minors_behind(SemVer("1.10.0")) == 2
    assert SemVer("1.10.0").minors_behind(SemVer("1.10.3")) == 0
    assert SemVer("0.9.0").minors_behind(SemVer("1.0.0")) >= 2


@pytest.mark.django_db
def test_database_orders_and_compares_versions_semantically():
    releases = [v for v in ORDERED if "-" not in v]  # prereleases of one x.y.z tie in SQL
    for version in random.Random(3).sample(releases, len(releases)):
        factories.release(version)
    assert [str(r.version) for r in Release.objects.order_by("version")] == releases
    newer = Release.objects.filter(version__gt="1.9.3").order_by("version")
    assert [str(r.version) for r in newer] == ["1.10.0", "1.10.1", "2.0.0", "10.0.0"]
    loaded = Release.objects.get(version="1.10.0")
    assert isinstance(loaded.version, SemVer)
    assert loaded.version.minor == 10


@pytest.mark.django_db
def test_prerelease_sorts_below_its_release_in_sql():
    factories.release("2.0.0")
    factories.release("2.0.0-rc.1")
    factories.release("1.99.0")
    assert [str(r.version) for r in Release.objects.order_by("version")] == [
        "1.99.0",
        "2.0.0-rc.1",
        "2.0.0",
    ]


@pytest.mark.django_db
def test_admin_search_finds_versions_by_their_text():
    factories.release("1.10.0")
    factories.release("1.9.3")
    assert [str(r.version) for r in Release.objects.filter(version__icontains="1.10")] == ["1.10.0"]


@pytest.mark.django_db
def test_sql_orders_prereleases_by_precedence_and_latest_beta_follows():
    from fleet.choices import Channel
    from fleet.selectors import release_latest

    for version in random.Random(5).sample(ORDERED, len(ORDERED)):
        factories.release(version, channel=Channel.BETA if "-" in version else Channel.STABLE)
    assert [str(r.version) for r in Release.objects.order_by("version")] == ORDERED
    factories.release("11.0.0-beta.9", channel=Channel.BETA)
    factories.release("11.0.0-beta.10", channel=Channel.BETA)
    assert release_latest(Channel.BETA).version == "11.0.0-beta.10"
    assert release_latest(Channel.STABLE).version == "10.0.0"
    assert Release.objects.filter(version__lt="1.0.0-beta.11").count() == 6


@pytest.mark.parametrize("text", ["1.0.0-" + "9" * 21, "1.0.0-\u00b2"])
def test_versions_that_would_not_encode_are_refused(text):
    with pytest.raises(ValueError):  # noqa: PT011 - both messages say why
        SemVer(text)

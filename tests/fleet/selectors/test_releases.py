import pytest

from fleet.choices import Channel
from fleet.selectors import release_latest
from tests import factories

pytestmark = pytest.mark.django_db


def test_nothing_published_means_no_latest():
    assert release_latest(Channel.STABLE) is None
    assert release_latest(Channel.BETA) is None


def test_stable_sees_the_semver_newest_stable_release_and_never_a_beta():
    factories.release("1.9.3")
    newest = factories.release("1.10.0")
    factories.release("2.0.0-beta.1", channel=Channel.BETA)
    assert release_latest(Channel.STABLE) == newest
    assert release_latest() == newest  # stable is the default


def test_beta_sees_its_own_releases_and_a_stable_one_newer_than_them():
    beta = factories.release("1.11.0-beta.2", channel=Channel.BETA)
    factories.release("1.11.0-beta.10", channel=Channel.BETA, yanked=True)
    factories.release("1.10.0")
    assert release_latest(Channel.BETA) == beta
    stable = factories.release("1.11.0")
    assert release_latest(Channel.BETA) == stable


def test_a_yanked_release_is_never_latest():
    factories.release("1.0.0", yanked=True)
    assert release_latest(Channel.STABLE) is None
    older = factories.release("0.9.0")
    assert release_latest(Channel.STABLE) == older

"""Sign-in under attack: the lockout holds behind the proxy, guessing one account from many
addresses or many accounts from one address is slowed (never a lockout anyone can put on
someone else), and a locked-out user unlocks themselves by email."""

import re
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.core import mail
from django.urls import reverse
from django.utils import timezone

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.1"  # the one trusted proxy in front of the web process
PASSWORD = "right-password-1"


@pytest.fixture
def behind_proxy(settings):
    settings.NINJA_NUM_PROXIES = 1  # NUM_PROXIES=1, as the README's production runs
    settings.AXES_FAILURE_LIMIT = 5


@pytest.fixture
def ada(django_user_model):
    return django_user_model.objects.create_user("ada", email="ada@example.com", password=PASSWORD)


def sign_in(client, username, password, *, address, path=None):
    """A sign-in through the proxy: REMOTE_ADDR is the proxy, the client is in the header."""
    return client.post(
        path or reverse("portal:login"),
        {"username": username, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=address,
    )


def test_behind_the_proxy_one_address_cannot_lock_the_user_out_from_another(
    client, ada, behind_proxy
):
    for _ in range(4):
        assert sign_in(client, "ada", "wrong", address="203.0.113.66").status_code == 200
    assert sign_in(client, "ada", "wrong", address="203.0.113.66").status_code == 429
    # The attacker's address is locked out of ada's account, even with her password...
    locked = sign_in(client, "ada", PASSWORD, address="203.0.113.66")
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content
    # ...and the lockout is recorded against the client's address, not the proxy's.
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.66"}
    # Ada, at another address behind the same proxy, signs in.
    welcome = sign_in(client, "ada", PASSWORD, address="198.51.100.7")
    assert welcome.status_code == 302
    assert welcome["Location"] == reverse("portal:dashboard")


def test_the_admin_sign_in_counts_the_clients_address_too(client, ada, behind_proxy):
    ada.is_staff = True
    ada.save()
    admin_login = reverse("admin:login")
    for _ in range(5):
        sign_in(client, "ada", "wrong", address="203.0.113.66", path=admin_login)
    assert (
        sign_in(client, "ada", PASSWORD, address="203.0.113.66", path=admin_login).status_code
        == 429
    )
    assert (
        sign_in(client, "ada", PASSWORD, address="198.51.100.7", path=admin_login).status_code
        == 302
    )


@pytest.fixture
def throttled(settings, behind_proxy):
    settings.LOGIN_ACCOUNT_FREE_FAILURES = 10
    settings.LOGIN_ADDRESS_FREE_FAILURES = 30
    settings.LOGIN_DELAY_MAX_SECONDS = 900


def addresses(n, start=1):
    return [f"203.0.113.{i}" for i in range(start, start + n)]


def test_guessing_one_account_from_many_addresses_waits_longer_after_each_failure(
    client, ada, throttled
):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for address in addresses(10):  # one each: far from axes' lockout of any address
            assert sign_in(client, "ada", "wrong", address=address).status_code == 200
        # The free failures are spent: from anywhere, the next attempt waits 2 seconds,
        # even with the right password (a guesser learns nothing during the wait).
        waiting = sign_in(client, "ada", PASSWORD, address="198.51.100.7")
        assert waiting.status_code == 429
        assert waiting["Retry-After"] == "2"
        assert b"Try again in 2 seconds" in waiting.content
        assert b"ask an owner" not in waiting.content.lower()
        # A refused attempt does not lengthen the wait.
        sign_in(client, "ada", "wrong", address="203.0.113.99")
        clock.shift(2)
        assert sign_in(client, "ada", "wrong", address="203.0.113.50").status_code == 200
        # Each further wrong password doubles the wait: 4 s now.
        assert sign_in(client, "ada", PASSWORD, address="198.51.100.7")["Retry-After"] == "4"
        clock.shift(3)
        assert sign_in(client, "ada", PASSWORD, address="198.51.100.7")["Retry-After"] == "1"
        clock.shift(1)
        # The wait is over: the right password signs in, and the count starts again.
        assert sign_in(client, "ada", PASSWORD, address="198.51.100.7").status_code == 302
        client.logout()
        assert sign_in(client, "ada", "wrong", address="203.0.113.51").status_code == 200
        assert sign_in(client, "ada", PASSWORD, address="198.51.100.7").status_code == 302


def test_the_delay_is_capped_and_ends_by_itself(client, ada, throttled, settings):
    settings.LOGIN_DELAY_MAX_SECONDS = 60
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for address in addresses(10):
            sign_in(client, "ada", "wrong", address=address)
        for address in addresses(8, start=20):  # 2, 4, ... 256 s, capped at 60
            clock.shift(60)
            assert sign_in(client, "ada", "wrong", address=address).status_code == 200
        assert sign_in(client, "ada", PASSWORD, address="198.51.100.7")["Retry-After"] == "60"
        clock.shift(60)
        assert sign_in(client, "ada", PASSWORD, address="198.51.100.7").status_code == 302


def test_one_address_trying_many_usernames_is_slowed(client, ada, throttled, settings):
    settings.LOGIN_ADDRESS_FREE_FAILURES = 5
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for n in range(5):
            response = sign_in(client, f"user-{n}", "Winter2026!", address="203.0.113.9")
            assert response.status_code == 200
        sprayed = sign_in(client, "user-5", "Winter2026!", address="203.0.113.9")
        assert sprayed.status_code == 429
        assert b"came from your address" in sprayed.content
        # Only that address waits: ada signs in from her own.
        assert sign_in(client, "ada", PASSWORD, address="198.51.100.7").status_code == 302
        clock.shift(2)
        assert sign_in(client, "user-5", "Winter2026!", address="203.0.113.9").status_code == 200
        assert sign_in(client, "user-6", "Winter2026!", address="203.0.113.9")["Retry-After"] == "4"


def test_parallel_attempts_get_one_try_when_a_delay_ends(ada, throttled):
    from fleet.login_throttle import login_delay_claim, login_failure_record

    with time_machine.travel(timezone.now(), tick=False) as clock:
        for address in addresses(10):
            login_failure_record("ada", address)
        clock.shift(2)
        first = login_delay_claim("ada", "203.0.113.70")
        second = login_delay_claim("ada", "203.0.113.71")
        assert first is None
        assert second is not None and second.scope == "account"


def unlock_link(outbox_message):
    return re.search(r"https?://\S+/portal/login/unlock/\S+/", outbox_message.body).group(0)


def test_a_locked_out_user_unlocks_signing_in_by_email(client, ada, throttled):
    for _ in range(5):
        sign_in(client, "ada", "wrong", address="203.0.113.66")
    for address in addresses(6):
        sign_in(client, "ada", "wrong", address=address)
    locked = sign_in(client, "ada", PASSWORD, address="203.0.113.66")
    assert locked.status_code == 429
    assert reverse("portal:login_unlock").encode() in locked.content
    # Anyone may ask; the answer never says whether the account exists.
    asked = client.post(
        reverse("portal:login_unlock"), {"login": "ADA@example.com"}, REMOTE_ADDR=PROXY
    )
    nobody = client.post(reverse("portal:login_unlock"), {"login": "nobody"}, REMOTE_ADDR=PROXY)
    assert asked.status_code == nobody.status_code == 200
    assert b"If an account matches" in asked.content and b"If an account matches" in nobody.content
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"]
    link = unlock_link(mail.outbox[0])
    path = link.split("://", 1)[1].partition("/")[2]
    # Opening the link (a mail scanner does) spends nothing; the button unlocks.
    assert client.get(f"/{path}").status_code == 200
    done = client.post(f"/{path}", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.66")
    assert done.status_code == 200
    assert b"is unlocked" in done.content
    # Axes' lockout is lifted for the address the link was opened from only: the others'
    # failures stay (a stranger's addresses are not unlocked with hers).
    remaining = AccessAttempt.objects.filter(username="ada")
    assert not remaining.filter(ip_address="203.0.113.66").exists()
    assert remaining.filter(ip_address="203.0.113.1").exists()
    # Both lockouts are gone for her: the locked address and the account's delay.
    assert sign_in(client, "ada", PASSWORD, address="203.0.113.66").status_code == 302
    # Single use.
    client.logout()
    again = client.post(f"/{path}", REMOTE_ADDR=PROXY)
    assert again.status_code == 410
    assert b"does not work" in again.content


def test_an_unlock_link_expires_and_dies_with_a_password_change(client, ada):
    client.post(reverse("portal:login_unlock"), {"login": "ada"})
    client.post(reverse("portal:login_unlock"), {"login": "ada"})
    expiring, changing = (unlock_link(m).split("://", 1)[1].partition("/")[2] for m in mail.outbox)
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        assert client.post(f"/{expiring}").status_code == 410
    ada.set_password("another-password-2")
    ada.save()
    assert client.post(f"/{changing}").status_code == 410


def test_unlock_mails_and_asks_are_limited(client, ada):
    for _ in range(5):
        client.post(reverse("portal:login_unlock"), {"login": "ada"}, REMOTE_ADDR="203.0.113.5")
    assert len(mail.outbox) == 3  # per user an hour, whoever asks
    for _ in range(5):
        client.post(reverse("portal:login_unlock"), {"login": "x"}, REMOTE_ADDR="203.0.113.5")
    refused = client.post(
        reverse("portal:login_unlock"), {"login": "ada"}, REMOTE_ADDR="203.0.113.5"
    )
    assert refused.status_code == 429
    assert "Retry-After" in refused


def test_a_forged_or_mangled_unlock_link_is_refused(client, ada):
    assert client.post("/portal/login/unlock/not-a-token/").status_code == 410
    client.post(reverse("portal:login_unlock"), {"login": "ada"})
    path = unlock_link(mail.outbox[0]).split("://", 1)[1].partition("/")[2]
    assert client.post(f"/{path[:-3]}x/").status_code == 410


def test_a_stranger_filling_the_accounts_count_never_keeps_its_owner_out(ada, throttled):
    """The account's delay stops guessers, not the browser ada signed in with before (a
    signed cookie): a stranger spending the free failures from many addresses, and one
    more each time a wait ends, cannot keep her out."""
    from django.test import Client

    hers, strangers = Client(), Client()
    assert sign_in(hers, "ada", PASSWORD, address="198.51.100.7").status_code == 302
    hers.post(reverse("portal:logout"))  # signing out ends the session, not the cookie
    with time_machine.travel(timezone.now(), tick=False):
        for address in addresses(12):
            sign_in(strangers, "ada", "wrong", address=address)
        assert sign_in(strangers, "ada", PASSWORD, address="203.0.113.200").status_code == 429
        forged = Client()
        forged.cookies["agentina_known_browser"] = (
            hers.cookies["agentina_known_browser"].value + "x"
        )
        assert sign_in(forged, "ada", PASSWORD, address="198.51.100.9").status_code == 429
        assert sign_in(hers, "ada", PASSWORD, address="198.51.100.7").status_code == 302

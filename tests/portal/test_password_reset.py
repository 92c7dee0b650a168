"""Password reset by email, end to end: the login page links to it, the answer is the
same whether or not the address has an account, the emailed link (to PORTAL_URL) sets a
new password once, and every session of the account ends."""

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from fleet.choices import MemberRole
from fleet.models import AuditEvent, UserSession
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db

RESET = reverse("portal:password_reset")
LINK = re.compile(r"https://portal\.example\.com(/portal/password/reset/[\w-]+/[\w-]+/)")


@pytest.fixture
def ann(customer, django_user_model, settings):
    settings.PORTAL_URL = "https://portal.example.com/"
    client = member_client(customer, django_user_model, MemberRole.VIEWER, "ann")
    client.user.email = "ann@example.com"
    client.user.save()
    return client


def test_the_login_page_links_to_it(client):
    assert RESET in client.get(reverse("portal:login")).content.decode()


def test_a_reset_by_email_end_to_end(ann):
    anonymous = Client()
    sent = anonymous.post(RESET, {"email": "ANN@example.com"})
    assert sent.status_code == 302 and sent["Location"] == reverse("portal:password_reset_done")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ann@example.com"] and "Reset your password" in message.subject
    assert "testserver" not in message.body  # the link is PORTAL_URL's, not the Host's
    link = LINK.search(message.body).group(1)
    form = anonymous.get(link, follow=True)
    assert form.status_code == 200 and "Set a new password" in form.content.decode()
    set_url = form.redirect_chain[-1][0]  # Django swaps the token out of the address
    weak = anonymous.post(set_url, {"new_password1": "123", "new_password2": "123"})
    assert weak.status_code == 200 and "too short" in weak.content.decode()
    done = anonymous.post(
        set_url, {"new_password1": "a-brand-new-pass-7", "new_password2": "a-brand-new-pass-7"}
    )
    assert done.status_code == 302 and done["Location"] == reverse("portal:password_reset_complete")
    # The old session ended; the new password signs in, the old one does not.
    assert ann.get(reverse("portal:dashboard")).status_code == 302
    assert not UserSession.objects.filter(user_id=ann.user.pk).exists()
    fresh = Client()
    old = fresh.post(reverse("portal:login"), {"username": "ann", "password": "pw-for-tests-1"})
    assert old.status_code == 200
    new = fresh.post(reverse("portal:login"), {"username": "ann", "password": "a-brand-new-pass-7"})
    assert new.status_code == 302
    event = AuditEvent.objects.get(action="user.password_reset")
    assert event.actor_label == "ann" and event.target_id == str(ann.user.pk)
    # The link works once.
    reused = Client().get(link, follow=True)
    assert "This link does not work" in reused.content.decode()


def test_an_unknown_address_gets_the_same_answer_and_no_mail(ann):
    known = Client().post(RESET, {"email": "ann@example.com"})
    unknown = Client().post(RESET, {"email": "nobody@example.com"})
    assert (known.status_code, known["Location"]) == (unknown.status_code, unknown["Location"])
    assert len(mail.outbox) == 1
    page = Client().get(unknown["Location"]).content.decode()
    assert "If that address has an account" in page


def test_a_tampered_link_is_refused(ann):
    Client().post(RESET, {"email": "ann@example.com"})
    link = LINK.search(mail.outbox[0].body).group(1)
    tampered = link[:-3] + ("aaa/" if not link.endswith("aaa/") else "bbb/")
    assert "This link does not work" in Client().get(tampered, follow=True).content.decode()

"""Two-factor sign-in through the pages: set it up (QR code, a code, recovery codes shown
once), sign in with password then code (or a recovery code, once), required per customer
by its owners and for staff (portal and admin)."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from fleet.choices import MemberRole
from fleet.services.accounts import recovery_codes_replace
from fleet.services.audit import SYSTEM, Actor
from fleet.services.customers import customer_two_factor_require
from tests.portal.conftest import member_client
from tests.second_factor import authenticator, authenticator_code

pytestmark = pytest.mark.django_db

LOGIN = reverse("portal:login")
VERIFY = reverse("portal:second_factor")
SETUP = reverse("portal:two_factor")
DASHBOARD = reverse("portal:dashboard")
PASSWORD = "pw-for-tests-1"


def sign_in(username: str, next_url: str = DASHBOARD) -> tuple[Client, object]:
    client = Client()
    response = client.post(LOGIN, {"username": username, "password": PASSWORD, "next": next_url})
    assert response.status_code == 302, response.content.decode()[:500]
    return client, client.get(response["Location"])


def test_set_up_shows_a_qr_code_and_turns_on_with_a_code(owner):
    page = owner.get(SETUP)
    html = page.content.decode()
    assert page.status_code == 200 and "<svg" in html and "no-store" in page["Cache-Control"]
    key = re.search(r'<code id="totp-key">([A-Z2-7 ]+)</code>', html).group(1)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        wrong = owner.post(SETUP, {"code": "000000"})
        assert wrong.status_code == 422 and "not right" in wrong.content.decode()
        early = owner.post(SETUP, {"code": authenticator_code(key)})
        assert early.status_code == 422 and "wait" in early.content.decode()  # the wrong one's
        clock.shift(3)
        done = owner.post(SETUP, {"code": authenticator_code(key)})
    codes = re.findall(
        r"\b[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}\b", done.content.decode()
    )
    assert done.status_code == 200 and len(codes) == 10
    assert "shown once" in done.content.decode()
    # Shown once: the page now says it is on and shows no code.
    again = owner.get(SETUP).content.decode()
    assert "10 recovery codes left" in again and codes[0] not in again
    assert TOTPDevice.objects.get(user=owner.user).confirmed


def test_sign_in_asks_for_the_code_before_any_page(customer, django_user_model, stocked):
    olga = member_client(customer, django_user_model, MemberRole.OWNER, "ann")
    device = authenticator(olga.user)
    client, first = sign_in("ann", reverse("portal:agents"))
    assert first.status_code == 302 and first["Location"].startswith(VERIFY)
    for url in (DASHBOARD, reverse("portal:agents"), SETUP, "/admin/", reverse("portal:members")):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(VERIFY), url
    poll = client.get(DASHBOARD, HTTP_HX_REQUEST="true")
    assert poll.status_code == 401 and poll["HX-Redirect"].startswith(VERIFY)
    page = client.get(first["Location"])
    assert page.status_code == 200 and "One more step" in page.content.decode()
    wrong = client.post(VERIFY, {"code": "123456", "next": reverse("portal:agents")})
    assert wrong.status_code == 422 and "not right" in wrong.content.decode()
    with time_machine.travel(timezone.now() + timedelta(seconds=2)):  # past the wait
        right = client.post(
            VERIFY, {"code": authenticator_code(device), "next": reverse("portal:agents")}
        )
        assert right.status_code == 302 and right["Location"] == reverse("portal:agents")
        assert client.get(reverse("portal:agents")).status_code == 200


def test_a_recovery_code_signs_in_once(customer, django_user_model):
    member = member_client(customer, django_user_model, MemberRole.VIEWER, "ann")
    authenticator(member.user)
    codes = recovery_codes_replace(user=member.user, actor=SYSTEM)
    client, _ = sign_in("ann")
    assert client.post(VERIFY, {"code": codes[0]}).status_code == 302
    assert client.get(DASHBOARD).status_code == 200
    other, _ = sign_in("ann")
    refused = other.post(VERIFY, {"code": codes[0]})
    assert refused.status_code == 422 and "used already" in refused.content.decode()
    assert other.get(DASHBOARD).status_code == 302


def test_the_verified_session_gets_a_new_key(customer, django_user_model):
    member = member_client(customer, django_user_model, MemberRole.VIEWER, "ann")
    device = authenticator(member.user)
    client, _ = sign_in("ann")
    before = client.session.session_key
    client.post(VERIFY, {"code": authenticator_code(device)})
    assert client.session.session_key != before


def test_without_a_device_sign_in_is_the_password_alone(customer, django_user_model):
    member_client(customer, django_user_model, MemberRole.VIEWER, "ann")
    _, first = sign_in("ann")
    assert first.status_code == 200


def test_a_customer_that_requires_it_sends_members_to_set_it_up(
    owner, viewer, customer, django_user_model
):
    refused = owner.post(reverse("portal:members_two_factor"), {"require_two_factor": "on"})
    assert refused.status_code == 302
    customer.refresh_from_db()
    assert not customer.require_two_factor  # the owner has none: refused, and told
    assert "your own account first" in owner.get(reverse("portal:members")).content.decode()
    authenticator(owner.user)
    customer_two_factor_require(customer=customer, required=True, actor=Actor(user=owner.user))
    response = viewer.get(reverse("portal:agents"))
    assert response.status_code == 302
    assert response["Location"] == f"{SETUP}?next=%2Fportal%2Fagents%2F"
    assert viewer.get(SETUP).status_code == 200  # the setup page itself is open
    key = re.search(r'<code id="totp-key">([A-Z2-7 ]+)</code>', viewer.get(SETUP).content.decode())
    viewer.post(SETUP, {"code": authenticator_code(key.group(1))})
    assert viewer.get(reverse("portal:agents")).status_code == 200
    # It cannot be turned off while required.
    assert "cannot be turned off" in viewer.get(SETUP).content.decode()


def test_an_owner_turns_the_requirement_on_in_the_page(customer, django_user_model):
    owner = member_client(customer, django_user_model, MemberRole.OWNER, "ann")
    device = authenticator(owner.user)
    client, _ = sign_in("ann")
    client.post(VERIFY, {"code": authenticator_code(device)})
    response = client.post(reverse("portal:members_two_factor"), {"require_two_factor": "on"})
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.require_two_factor
    assert client.get(reverse("portal:agents")).status_code == 200  # verified: through
    client.post(reverse("portal:members_two_factor"), {})
    customer.refresh_from_db()
    assert not customer.require_two_factor


def test_a_member_of_another_customer_is_not_asked(customer, other_customer, django_user_model):
    other_customer.require_two_factor = True
    other_customer.save()
    member = member_client(customer, django_user_model, MemberRole.VIEWER, "ann")
    assert member.get(DASHBOARD).status_code == 200


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "sam", password=PASSWORD, is_staff=True, is_superuser=True
    )


def test_staff_must_set_it_up_before_the_admin_when_required(staff, settings):
    settings.STAFF_REQUIRE_2FA = True
    client = Client()
    client.force_login(staff)
    response = client.get("/admin/fleet/customer/")
    assert response.status_code == 302
    assert response["Location"] == f"{SETUP}?next=%2Fadmin%2Ffleet%2Fcustomer%2F"
    assert client.get(DASHBOARD).status_code == 302  # the portal too
    key = re.search(r'<code id="totp-key">([A-Z2-7 ]+)</code>', client.get(SETUP).content.decode())
    client.post(SETUP, {"code": authenticator_code(key.group(1))})
    assert client.get("/admin/fleet/customer/").status_code == 200


def test_staff_sign_in_to_the_admin_asks_for_the_code(staff, settings):
    settings.STAFF_REQUIRE_2FA = True
    device = authenticator(staff)
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "sam", "password": PASSWORD, "next": "/admin/"}
    )
    assert response.status_code == 302
    gated = client.get("/admin/")
    assert gated.status_code == 302 and gated["Location"].startswith(VERIFY)
    client.post(VERIFY, {"code": authenticator_code(device), "next": "/admin/"})
    assert client.get("/admin/").status_code == 200


def test_staff_without_the_requirement_use_the_admin_with_a_password(staff, settings):
    settings.STAFF_REQUIRE_2FA = False
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200


def test_turning_it_off_needs_a_code(owner):
    device = authenticator(owner.user)
    client = owner
    session = client.session
    from django_otp import DEVICE_ID_SESSION_KEY

    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    refused = client.post(SETUP, {"action": "disable", "code": "000000"})
    assert refused.status_code == 422 and TOTPDevice.objects.filter(user=owner.user).exists()
    with time_machine.travel(timezone.now() + timedelta(seconds=2)):
        done = client.post(SETUP, {"action": "disable", "code": authenticator_code(device)})
    assert done.status_code == 302
    assert not TOTPDevice.objects.filter(user=owner.user).exists()
    assert client.get(DASHBOARD).status_code == 200


def test_the_api_and_metrics_are_not_gated(customer, django_user_model):
    member = member_client(customer, django_user_model, MemberRole.VIEWER, "ann")
    authenticator(member.user)
    client, _ = sign_in("ann")
    assert client.get("/api/v1/agents").status_code == 401  # its own auth, not a redirect


def test_staff_see_a_members_devices_in_the_admin_without_their_keys(staff_client, owner):
    device = authenticator(owner.user)
    recovery_codes_replace(user=owner.user, actor=SYSTEM)
    for url in (
        "/admin/otp_totp/totpdevice/",
        f"/admin/otp_totp/totpdevice/{device.pk}/change/",
        "/admin/otp_static/staticdevice/",
    ):
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert device.key not in response.content.decode()

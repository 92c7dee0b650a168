"""Members and sign-in in a real browser (Chromium via Playwright, the live server): an
owner invites by email, the invitee accepts, sets up two-factor (the customer requires
it) and signs in again with a code from the app; a password reset by email."""

import re

import pytest
from django.core import mail

from fleet.choices import MemberRole
from fleet.models import Membership
from fleet.services.audit import SYSTEM
from fleet.services.customers import membership_set
from tests import factories
from tests.runtime import ARTIFACTS
from tests.second_factor import authenticator, authenticator_code

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-portal-password"


@pytest.fixture
def olga(customer, django_user_model, settings, live_server):
    settings.PORTAL_URL = live_server.url
    factories.license(customer, max_agents=5)
    user = django_user_model.objects.create_user(
        "olga", email="olga@example.com", password=PASSWORD
    )
    membership_set(customer=customer, user=user, role=MemberRole.OWNER, actor=SYSTEM)
    return user


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"portal-{name}.png"), full_page=True)


def sign_in(page, live_server, username, password, code=None):
    page.goto(f"{live_server.url}/portal/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    if code is not None:
        page.wait_for_selector("#second-factor")
        page.fill("input[name=code]", code)
        page.click("#second-factor button[type=submit]")
    page.wait_for_selector("nav.tabs")


def emailed_link(pattern: str) -> str:
    return re.search(pattern, mail.outbox[-1].body).group(0)


def test_invite_accept_set_up_two_factor_and_sign_in_with_a_code(
    live_server, browser_page, customer, olga
):
    from playwright.sync_api import expect

    customer.require_two_factor = True
    customer.save()
    device = authenticator(olga)
    page = browser_page
    sign_in(page, live_server, "olga", PASSWORD, code=authenticator_code(device))

    page.click("nav.tabs >> text=Members")
    page.fill("#invite input[name=email]", "newbie@example.com")
    page.select_option("#invite select[name=role]", "admin")
    page.click("#invite button.primary")
    expect(page.locator(".messages")).to_contain_text("Invitation sent to newbie@example.com")
    expect(page.locator("#invitations")).to_contain_text("newbie@example.com")
    shot(page, "members")
    link = emailed_link(rf"{re.escape(live_server.url)}/portal/invitations/agtn_inv_\w+/")

    invitee = page.context.browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    invitee_errors: list[str] = []
    invitee.on("console", lambda m: invitee_errors.append(m.text) if m.type == "error" else None)
    invitee.on(
        "response",
        lambda r: invitee_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    invitee.goto(link)
    expect(invitee.locator("#invitation")).to_contain_text("as admin")
    assert "agtn_inv_" not in invitee.url  # the token left the address bar
    shot(invitee, "invitation")
    invitee.fill("input[name=username]", "newbie")
    invitee.fill("input[name=password1]", "newbie-long-pass-42")
    invitee.fill("input[name=password2]", "newbie-long-pass-42")
    invitee.click("button[type=submit]")

    # The customer requires two-factor: the new member sets it up before anything else.
    invitee.wait_for_selector("#two-factor-setup svg")
    expect(invitee.locator(".ask-owner")).to_contain_text("requires every member")
    shot(invitee, "two-factor-setup")
    key = invitee.inner_text("#totp-key")
    invitee.fill("#two-factor-setup input[name=code]", authenticator_code(key))
    invitee.click("#two-factor-setup button.primary")
    expect(invitee.locator("#recovery-codes")).to_contain_text("shown once")
    assert len(invitee.inner_text("#codes").split()) == 10
    shot(invitee, "recovery-codes")
    invitee.click("#recovery-codes a")
    invitee.wait_for_selector("nav.tabs")

    # Signed out, the next sign-in asks for the code after the password.
    invitee.click("button:has-text('Log out')")
    invitee.wait_for_selector("input[name=username]")
    invitee.fill("input[name=username]", "newbie")
    invitee.fill("input[name=password]", "newbie-long-pass-42")
    invitee.click("button[type=submit]")
    invitee.wait_for_selector("#second-factor")
    shot(invitee, "second-factor")
    invitee.fill("input[name=code]", authenticator_code(key, steps_ahead=1))
    invitee.click("#second-factor button[type=submit]")
    invitee.wait_for_selector("nav.tabs")
    expect(invitee.locator(".who")).to_contain_text("newbie · Admin")
    invitee.click("text=Two-factor")
    expect(invitee.locator("#two-factor-on")).to_contain_text("10 recovery codes left")
    expect(invitee.locator("#two-factor-off")).to_contain_text("cannot be turned off")
    shot(invitee, "two-factor-on")

    membership = Membership.objects.get(user__username="newbie")
    assert (membership.customer, membership.role) == (customer, MemberRole.ADMIN)
    page.reload()
    expect(page.locator("#members")).to_contain_text("newbie")
    expect(page.locator(f"tr[data-member='{membership.pk}']")).to_contain_text("on")
    assert not [e for e in page.console_errors + invitee_errors if "favicon" not in e]


def test_reset_a_password_by_email(live_server, browser_page, olga):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{live_server.url}/portal/login/")
    page.click("text=Forgot your password?")
    page.fill("input[name=email]", "olga@example.com")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your email")
    shot(page, "password-reset-sent")
    link = emailed_link(rf"{re.escape(live_server.url)}/portal/password/reset/\S+/")
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Set a new password")
    shot(page, "password-reset-set")
    page.fill("input[name=new_password1]", "a-fresh-portal-password")
    page.fill("input[name=new_password2]", "a-fresh-portal-password")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Your password is set")
    page.click("text=Sign in")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", "a-fresh-portal-password")
    page.click("button[type=submit]")
    page.wait_for_selector("nav.tabs")
    assert not [e for e in page.console_errors if "favicon" not in e]

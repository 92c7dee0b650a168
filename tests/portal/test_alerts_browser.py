"""The Alerts page in a real browser: an owner adds a webhook channel, sends a test, and
sees the delivery, which a real HTTP receiver got, signed."""

import pytest

from fleet.choices import MemberRole
from fleet.services.audit import SYSTEM
from fleet.services.customers import membership_set
from tests import factories
from tests.runtime import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_owner_adds_a_webhook_sends_a_test_and_sees_it_delivered(
    live_server, browser_page, customer, django_user_model, httpserver
):
    from playwright.sync_api import expect

    factories.license(customer)
    user = django_user_model.objects.create_user("olga", password="a-long-portal-password")
    membership_set(customer=customer, user=user, role=MemberRole.OWNER, actor=SYSTEM)
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    page = browser_page
    page.goto(f"{live_server.url}/portal/alerts/")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", "a-long-portal-password")
    page.click("button[type=submit]")
    page.wait_for_selector("#add-channel")
    page.select_option("select[name=kind]", "webhook")
    page.fill("input[name=url]", httpserver.url_for("/hook"))
    page.click("button:has-text('Add channel')")
    secret = page.inner_text("#new-secret")
    assert secret.startswith("whsec_")
    page.click("button:has-text('Send test')")
    row = page.locator("#deliveries tr[data-delivery]").first
    expect(row.locator("[data-state]")).to_have_text("Delivered", timeout=10_000)
    expect(row).to_contain_text("alert.test")
    expect(row).to_contain_text("HTTP 200")
    page.screenshot(path=str(ARTIFACTS / "portal-alerts.png"), full_page=True)
    [(request, _)] = httpserver.log
    assert request.headers["Agentina-Signature"].startswith("t=")
    assert page.console_errors == []

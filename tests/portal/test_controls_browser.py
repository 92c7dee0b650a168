"""Operator controls in a real browser (Chromium via Playwright, the live server): pause
an agent, see it get no jobs, resume it; bulk-decommission 2,000 agents and watch the
progress bar move."""

import pytest
from django.test import Client
from django.utils import timezone

from fleet.choices import AgentStatus, MemberRole
from fleet.models import Agent, BulkAction
from fleet.services.audit import SYSTEM
from fleet.services.bulk import bulk_action_step
from fleet.services.customers import membership_set
from tests import factories
from tests.fleet.api.conftest import activate
from tests.runtime import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def owner(customer, django_user_model):
    user = django_user_model.objects.create_user("olga", password="a-long-portal-password")
    membership_set(customer=customer, user=user, role=MemberRole.OWNER, actor=SYSTEM)
    return user


def sign_in(page, live_server):
    page.goto(f"{live_server.url}/portal/")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", "a-long-portal-password")
    page.click("button[type=submit]")
    page.wait_for_selector("#numbers")


def claim(agent) -> int:
    return (
        Client().post("/api/v1/jobs/claim", HTTP_AUTHORIZATION=f"Bearer {agent.secret}").status_code
    )


def test_pause_an_agent_it_gets_no_jobs_then_resume(live_server, browser_page, customer, owner):
    from playwright.sync_api import expect

    factories.license(customer, max_agents=5)
    agent = activate(customer)
    other = activate(customer, machine_id="m-2")
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/portal/agents/{agent.agent.pk}/")
    page.fill("#agent-controls input[name=reason]", "patching the host")
    page.fill("#agent-controls input[name=timeout_minutes]", "120")
    page.click("#agent-controls button")
    expect(page.locator("#agent-paused")).to_contain_text("patching the host")
    page.screenshot(path=str(ARTIFACTS / "portal-agent-paused.png"), full_page=True)
    factories.job(customer, role="coder")
    assert claim(agent) == 204  # paused: nothing for it...
    assert claim(other) == 200  # ...while another agent claims
    factories.job(customer, role="coder")
    page.click("form[action$='/resume/'] button")
    expect(page.locator(".messages")).to_contain_text("is resumed")
    assert Agent.objects.get(pk=agent.agent.pk).status == AgentStatus.ONLINE
    assert claim(agent) == 200
    assert not [e for e in page.console_errors if "favicon" not in e]


def test_bulk_decommission_of_2000_agents_with_a_visible_progress_bar(
    live_server, browser_page, customer, owner, monkeypatch
):
    from playwright.sync_api import expect

    factories.license(customer, max_agents=3000)
    host = factories.host(customer)
    now = timezone.now()
    Agent.objects.bulk_create(
        [factories.agent_row(customer, host, last_heartbeat_at=now) for _ in range(2000)],
        batch_size=1000,
    )
    # The worker is this test: it runs the chunks one by one while the page polls.
    monkeypatch.setattr("fleet.tasks.run_bulk_action.delay", lambda action_id: None)
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/portal/agents/")
    page.click("#bulk summary")
    expect(page.locator("#bulk")).to_contain_text("Act on all 2,000 agents")
    page.select_option("#bulk select[name=kind]", "decommission")
    page.click("#bulk button")
    bar = page.locator("#bulk-progress progress")
    expect(bar).to_be_visible()
    expect(page.locator("#bulk-progress")).to_contain_text("0 of 2000")
    action = BulkAction.objects.get()
    for step in range(1, 9):
        bulk_action_step(action.pk, chunk=250)
        expect(bar).to_have_attribute("value", str(250 * step), timeout=5000)
        if step == 4:
            expect(page.locator("#bulk-progress")).to_contain_text("1000 of 2000")
            page.screenshot(path=str(ARTIFACTS / "portal-bulk-progress.png"), full_page=True)
    expect(page.locator("#bulk-progress h2")).to_have_text("Done", timeout=5000)
    expect(page.locator("#bulk-progress")).to_contain_text("2000 changed")
    assert Agent.objects.filter(status=AgentStatus.DECOMMISSIONED).count() == 2000
    assert not [e for e in page.console_errors if "favicon" not in e]

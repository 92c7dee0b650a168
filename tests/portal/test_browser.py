"""The portal in a real browser: Debian's Chromium driven by Playwright, against the app
served by Django's live server. Screenshots of each page land in test-artifacts/."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from fleet.choices import MemberRole
from fleet.models import ActivationToken, Agent, Anomaly, Rollout
from fleet.services.anomalies import anomaly_open
from fleet.services.audit import SYSTEM
from fleet.services.customers import membership_set
from tests import factories
from tests.fleet.api.conftest import activate
from tests.runtime import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fleet(customer, django_user_model, settings):
    settings.PORTAL_POLL_SECONDS = 1
    factories.license(customer, max_agents=10)
    factories.release("1.9.3")
    factories.release("1.10.0")
    user = django_user_model.objects.create_user("olga", password="a-long-portal-password")
    membership_set(customer=customer, user=user, role=MemberRole.OWNER, actor=SYSTEM)
    agents = [activate(customer, role=role) for role in ("coder", "coder", "reviewer", "indexer")]
    anomaly_open(
        customer=customer,
        kind="agent_reported",
        fingerprint="disk",
        message="Disk 91% full on the build host",
        agent_id=agents[0].agent.pk,
        actor=SYSTEM,
    )
    return agents


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"portal-{name}.png"), full_page=True)


def test_an_owner_runs_the_fleet_from_the_browser(live_server, browser_page, fleet, customer):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{live_server.url}/portal/")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", "a-long-portal-password")
    page.click("button[type=submit]")
    page.wait_for_selector("#numbers")
    assert page.inner_text("[data-number=online-ratio]") == "100%"
    shot(page, "dashboard")

    # One agent falls silent; the dashboard refreshes itself (htmx polling) without a reload.
    Agent.objects.filter(pk=fleet[0].agent.pk).update(
        last_heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    ratio = page.locator("[data-number=online-ratio]")
    expect(ratio).to_have_text("75%", timeout=10_000)
    # Its heartbeat arrives through the API; the number comes back.
    assert (
        Client()
        .post(
            "/api/v1/agents/heartbeat",
            {"version": "1.9.3"},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {fleet[0].secret}",
        )
        .status_code
        == 200
    )
    expect(ratio).to_have_text("100%", timeout=10_000)

    # Mint a token: the secret is shown once.
    page.click("nav.tabs >> text=Tokens")
    page.fill("input[name=count]", "1")
    page.select_option("select[name=role]", "tester")
    page.click("button:has-text('Mint')")
    secret = page.inner_text("code[id^=secret-]")
    assert secret.startswith("agtn_act_")
    # The table below picks the new token up by itself (an htmx trigger), no reload.
    page.wait_for_selector(f"#token-{ActivationToken.objects.get(role='tester').pk}")
    shot(page, "tokens-minted")
    page.reload()
    assert secret not in page.content()
    # Revoke it inline (htmx swaps the row), once the question naming it is answered.
    token = ActivationToken.objects.get(role="tester")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click(f"#token-{token.pk} >> text=Revoke")
    page.wait_for_selector(f"#token-{token.pk} >> text=Revoked")
    token.refresh_from_db()
    assert token.status == "revoked"
    assert asked == [
        f"Revoke token {token.display_prefix}…? No machine can activate an agent with it any more."
    ]

    # Resolve an anomaly with a note.
    page.click("nav.tabs >> text=Anomalies")
    page.fill("input[name=note]", "cleaned the build cache")
    page.click("button:has-text('Resolve')")
    page.wait_for_selector("text=Nothing unresolved")
    assert Anomaly.objects.get(fingerprint="disk").resolution_note == "cleaned the build cache"

    # Start a wave, watch it, pause it.
    page.click("nav.tabs >> text=Upgrades")
    shot(page, "upgrades")
    page.fill("input[name=reason]", "monthly upgrade")
    page.click("button:has-text('Start')")
    page.wait_for_selector("[data-state=canary]")
    shot(page, "upgrade-canary")
    page.fill("form[action$='/pause/'] input[name=note]", "waiting for the release notes")
    page.click("form[action$='/pause/'] button")
    page.wait_for_selector("[data-state=paused]")
    assert Rollout.objects.get().state == "paused"
    shot(page, "upgrade-paused")

    for tab in ("Agents", "Hosts", "Jobs", "Plan", "API keys", "Activity"):
        page.click(f"nav.tabs >> text={tab}")
        page.wait_for_load_state("networkidle")
        shot(page, tab.lower().replace(" ", "-"))
    assert page.console_errors == []  # no CSP violation, no script error


def test_the_portal_fits_a_phone(live_server, browser_page, fleet):
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/portal/login/")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", "a-long-portal-password")
    page.click("button[type=submit]")
    page.wait_for_selector("#numbers")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400  # no sideways scrolling of the page itself
    shot(page, "dashboard-phone")

"""The demo a new customer meets (`make run`), end to end: the seeded fleet run by the
simulator against the live app, with a real worker and beat. In a real browser the
dashboard, the Agents page and Plan agree on the same fleet, the fleet stays healthy,
and a short wave to the seeded release 1.10.0 completes."""

import re
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command

from agentina.simulate import Fleet
from fleet.management.commands.seed_demo import DEMO_PASSWORD
from fleet.management.commands.simulate_fleet import simulator_state_root
from fleet.models import Agent, Customer, Rollout
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests.runtime import ARTIFACTS, celery_worker_and_beat, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def numbers_shown(page, server: str) -> tuple[int, int, int, int]:
    """(online, active) from the dashboard, the Agents page's online rows, and Plan's
    agents that can work, read as a person reads them."""
    page.goto(f"{server}/portal/")
    heard = page.locator("#numbers .tile .muted").first.inner_text()
    online, active = map(int, re.match(r"(\d+) of (\d+) agents heard from", heard).groups())
    page.goto(f"{server}/portal/agents/?status=online")
    listed = page.locator("#agent-table tbody tr").count()
    page.goto(f"{server}/portal/plan/?repo_loc=100000")
    can_work = sum(
        int(re.match(r"\d+", cell).group())
        for cell in page.locator("table.grid tbody tr td:nth-child(3)").all_inner_texts()
    )
    return online, active, listed, can_work


def test_the_demo_stays_healthy_agrees_everywhere_and_a_short_wave_completes(
    live_server, settings, tmp_path, browser_page
):
    settings.VAR_DIR = tmp_path
    settings.AGENT_HEARTBEAT_SECONDS, settings.AGENT_HEARTBEAT_MAX_SECONDS = 1, 2
    settings.AGENT_ONLINE_WINDOW = timedelta(seconds=8)
    call_command("seed_demo", "--force", stdout=StringIO())
    acme = Customer.objects.get(slug="acme")
    _, key = api_key_mint(customer=acme, name="demo simulator", actor=SYSTEM)
    fleet = Fleet(
        server=live_server.url,
        api_key=key,
        state_root=simulator_state_root(acme),
        failure_rate=0,
        log=lambda m: None,
    )
    schedule = {
        "STALE_SWEEP_SECONDS": "2",
        "SNAPSHOT_SECONDS": "3",
        "ROLLOUT_ADVANCE_SECONDS": "2",
        "AGENT_ONLINE_WINDOW_SECONDS": "8",
    }
    stop = threading.Event()
    page = browser_page
    with celery_worker_and_beat(tmp_path, **schedule) as log:
        assert len(fleet.enroll(10)) == 10  # the 8 seeded working agents and 2 more
        fleet.start()
        workload = threading.Thread(target=fleet.workload, args=(stop, 120), daemon=True)
        workload.start()
        try:
            page.goto(f"{live_server.url}/portal/login/")
            page.fill("input[name=username]", "ada")
            page.fill("input[name=password]", DEMO_PASSWORD)
            page.click("button[type=submit]")
            # Past the online window: only real heartbeats keep an agent online now.
            stop.wait(10)
            for _ in range(2):
                online, active, listed, can_work = numbers_shown(page, live_server.url)
                assert online == listed == can_work == active == 10, (online, listed, can_work)
                stop.wait(4)
            page.screenshot(path=str(ARTIFACTS / "demo-plan.png"), full_page=True)

            page.goto(f"{live_server.url}/portal/upgrades/")
            page.fill("input[name=canary_soak_hours]", "0")
            page.fill("input[name=batch_watch_minutes]", "0")
            page.fill("input[name=reason]", "the demo's short wave")
            page.click("form button.primary")
            page.wait_for_url(re.compile(r"/portal/upgrades/\d+/$"))
            rollout = Rollout.objects.get(customer=acme)
            assert wait_for(
                lambda: Rollout.objects.get(pk=rollout.pk).state == "completed", timeout=120
            ), (Rollout.objects.get(pk=rollout.pk).paused_reason, log.read_text()[-3000:])
            page.reload()
            page.wait_for_selector("[data-state=completed]")
            page.screenshot(path=str(ARTIFACTS / "demo-wave.png"), full_page=True)
            working = Agent.objects.for_customer(acme).holding_seat()
            assert set(working.values_list("version", flat=True)) == {"1.10.0"}
            assert numbers_shown(page, live_server.url)[:2] == (10, 10)
        finally:
            stop.set()
            workload.join(10)
            fleet.halt()
    assert not page.console_errors, page.console_errors

"""Answer an agent's question in a real browser and see its job continue: the answer
reaches the agent on its next heartbeat, it acknowledges it and completes the job."""

import pytest
from django.test import Client

from fleet.models import Job
from tests import factories
from tests.fleet.api.conftest import activate, bearer
from tests.portal.test_controls_browser import owner, sign_in  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def agent_post(agent, path: str, body: dict | None = None):
    return Client().post(
        f"/api/v1{path}", body or {}, content_type="application/json", **bearer(agent.secret)
    )


def test_answer_a_question_in_the_portal_and_the_job_continues(
    live_server,
    browser_page,
    customer,
    owner,  # noqa: F811
):
    from playwright.sync_api import expect

    factories.license(customer, max_agents=5, max_concurrent_tasks_per_agent=1)
    agent = activate(customer)
    factories.job(customer, role="coder", payload={"repo": "a/b", "task": "migrate"})
    job = agent_post(agent, "/jobs/claim").json()
    asked = agent_post(
        agent, f"/jobs/{job['id']}/questions", {"text": "Drop the old table?", "options": ["yes"]}
    ).json()
    page = browser_page
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/portal/questions/")
    row = page.locator(f"#question-{asked['id']}")
    expect(row).to_contain_text("Drop the old table?")
    row.locator("input[name=answer_text]").fill("No: archive it first")
    row.locator("button", has_text="Answer").click()
    expect(page.locator(f"#question-{asked['id']}")).to_contain_text("Answer: No: archive it first")

    # The agent's next heartbeat carries the answer; it acknowledges it and goes on.
    beat = agent_post(agent, "/agents/heartbeat", {"version": "1.9.3", "activity": "working"})
    [answer] = beat.json()["answers"]
    assert (answer["job_id"], answer["answer"]) == (job["id"], "No: archive it first")
    assert agent_post(agent, f"/questions/{asked['id']}/ack").status_code == 200
    done = agent_post(agent, f"/jobs/{job['id']}/complete", {"lease_id": job["lease_id"]})
    assert done.status_code == 200
    assert Job.objects.get(pk=job["id"]).status == "succeeded"
    page.reload()
    expect(page.locator(".questions")).to_have_count(0)  # nothing open any more
    assert not [e for e in page.console_errors if "favicon" not in e]

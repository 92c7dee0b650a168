"""The Jobs pages as a person uses them: filter by status and role, sort, page with the
filters kept, a table that refreshes itself, one job whole; and every destructive click
in the portal asks first."""

import re
from datetime import timedelta
from html import unescape
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from fleet.choices import JobStatus
from fleet.models import Job
from fleet.services.audit import SYSTEM, Actor
from fleet.services.jobs import job_claim_next, job_complete, job_fail, job_submit
from portal.templatetags.timestamps import duration
from tests import factories

pytestmark = pytest.mark.django_db

JOBS = reverse("portal:jobs")


def listed(response) -> list[int]:
    """The jobs the table lists, in its order."""
    assert response.status_code == 200
    return [int(pk) for pk in re.findall(r'href="/portal/jobs/(\d+)/"', response.content.decode())]


def aged(customer, minutes_ago: float, **fields) -> Job:
    job = factories.job(customer, **fields)
    Job.objects.filter(pk=job.pk).update(queued_at=timezone.now() - timedelta(minutes=minutes_ago))
    return job


@pytest.fixture
def board(customer):
    """Jobs of every status and two roles, queued at different times."""
    agent = factories.agent(customer)
    reviewer = factories.agent(customer, role="reviewer")
    now = timezone.now()
    return {
        "old_queued": aged(customer, 30, payload={"task": "old"}),
        "urgent": aged(customer, 20, priority=9, payload={"task": "urgent"}),
        "review": aged(customer, 25, role="reviewer", payload={"task": "review"}),
        "running": aged(
            customer, 15, status=JobStatus.RUNNING, agent=agent, started_at=now, attempts=1
        ),
        "done": aged(
            customer,
            40,
            status=JobStatus.SUCCEEDED,
            agent=agent,
            started_at=now - timedelta(minutes=39),
            finished_at=now - timedelta(minutes=35),
        ),
        "failed_review": aged(
            customer,
            10,
            role="reviewer",
            status=JobStatus.FAILED,
            agent=reviewer,
            started_at=now - timedelta(minutes=9),
            finished_at=now - timedelta(minutes=5),
        ),
    }


def pks(board, *names):
    return [board[name].pk for name in names]


# --- filters, sorting, pages ----------------------------------------------------------


def test_every_job_is_listed_newest_first_and_filters_narrow_it(owner, board):
    assert listed(owner.get(JOBS)) == pks(
        board, "failed_review", "running", "urgent", "review", "old_queued", "done"
    )
    # The queue in the order agents claim it: priority first, then the oldest.
    assert listed(owner.get(JOBS, {"status": "queued"})) == pks(
        board, "urgent", "old_queued", "review"
    )
    assert listed(owner.get(JOBS, {"role": "reviewer"})) == pks(board, "failed_review", "review")
    assert listed(owner.get(JOBS, {"status": "failed", "role": "reviewer"})) == pks(
        board, "failed_review"
    )
    # A filter the page does not offer is dropped, not an error.
    assert len(listed(owner.get(JOBS, {"status": "bogus", "role": "\x00"}))) == 6


def test_each_status_tab_counts_its_jobs_and_keeps_the_role_and_sort(owner, board):
    html = owner.get(JOBS, {"role": "reviewer", "sort": "-priority"}).content.decode()
    assert re.search(r'href="\?status=queued&amp;role=reviewer&amp;sort=-priority">Queued', html)
    # The counts are of the role shown.
    assert re.search(r'>Queued <span class="count">1</span>', html)
    assert re.search(r'>Failed <span class="count">1</span>', html)
    assert re.search(r'>All <span class="count">2</span>', html)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        # Ties go by id, the same way, so pages never overlap or skip a job.
        ("-priority", ["urgent", "failed_review", "done", "running", "review", "old_queued"]),
        ("priority", ["old_queued", "review", "running", "done", "failed_review", "urgent"]),
        ("queued", ["done", "old_queued", "review", "urgent", "running", "failed_review"]),
        # Jobs not started (or finished) yet come last either way.
        ("-started", ["running", "failed_review", "done", "review", "urgent", "old_queued"]),
        ("started", ["done", "failed_review", "running", "old_queued", "urgent", "review"]),
        ("-finished", ["failed_review", "done", "running", "review", "urgent", "old_queued"]),
    ],
)
def test_columns_sort_both_ways_with_unset_times_last(owner, board, sort, expected):
    assert listed(owner.get(JOBS, {"sort": sort})) == pks(board, *expected)


def test_a_sort_header_flips_its_direction_and_keeps_the_filters(owner, board):
    html = owner.get(JOBS, {"status": "queued", "sort": "-priority"}).content.decode()
    assert 'aria-sort="descending"><a class="sort" href="?status=queued&amp;sort=priority"' in html
    assert 'aria-sort="none"><a class="sort" href="?status=queued&amp;sort=-queued"' in html
    unsorted = owner.get(JOBS, {"sort": "payload; DROP TABLE"})  # not a column: ignored
    assert listed(unsorted)[:1] == pks(board, "failed_review")


def test_pages_keep_the_filters(owner, customer):
    for _ in range(55):
        factories.job(customer, role="tester")
    factories.job(customer, role="coder")
    first = owner.get(JOBS, {"role": "tester", "sort": "queued"})
    assert len(listed(first)) == 50
    assert 'href="?role=tester&amp;sort=queued&page=2"' in first.content.decode()
    second = owner.get(JOBS, {"role": "tester", "sort": "queued", "page": 2})
    assert len(listed(second)) == 5
    assert set(listed(first)).isdisjoint(listed(second))


def test_the_table_refreshes_itself_without_losing_the_filters(owner, board, settings):
    settings.PORTAL_POLL_SECONDS = 7
    page = owner.get(JOBS, {"role": "reviewer", "sort": "-queued"}).content.decode()
    poll = f'hx-get="{JOBS}?role=reviewer&amp;sort=-queued" hx-trigger="every 7s"'
    assert poll in page
    # The poll itself is answered with the table alone, polling on with the same filters.
    part = owner.get(JOBS, {"role": "reviewer", "sort": "-queued"}, HTTP_HX_REQUEST="true")
    html = part.content.decode()
    assert html.lstrip().startswith('<section class="card" id="job-table"')
    assert "<html" not in html and "Submit a job" not in html
    assert poll in html
    assert listed(part) == pks(board, "failed_review", "review")


def test_the_poll_of_a_later_page_stays_on_it(owner, customer):
    for _ in range(51):
        factories.job(customer)
    html = owner.get(JOBS, {"status": "queued", "page": 2}).content.decode()
    assert f'hx-get="{JOBS}?status=queued&amp;page=2"' in html


def test_empty_states_say_what_to_do(owner, viewer, customer, board):
    assert (
        "No job matches these filters" in owner.get(JOBS, {"status": "cancelled"}).content.decode()
    )
    Job.objects.all().delete()
    assert "submit a job below" in owner.get(JOBS).content.decode()
    assert "owners and admins submit them here" in viewer.get(JOBS).content.decode()


def test_submitting_lands_on_the_queue(owner, customer):
    response = owner.post(
        JOBS, {"role": "coder", "repo": "a/b", "ref": "main", "task": "lint", "priority": 0}
    )
    assert response.status_code == 302
    assert response["Location"] == f"{JOBS}?status=queued"
    assert Job.objects.get().payload == {"repo": "a/b", "ref": "main", "task": "lint"}


# --- one job --------------------------------------------------------------------------


def detail(job) -> str:
    return reverse("portal:job_detail", args=[job.pk])


def test_a_finished_job_shows_payload_result_agent_times_and_its_timeline(owner, customer):
    factories.license(customer)
    agent = factories.agent(customer, name="coder-3")
    job, _ = job_submit(
        customer=customer,
        role="coder",
        payload={"repo": "acme/fw", "ref": "main", "task": "lint the parser"},
        priority=4,
        actor=Actor(user=owner.user, label="olga"),
    )
    claimed = job_claim_next(agent=agent, max_concurrent=2)
    job_complete(agent=agent, job_id=job.pk, lease_id=claimed.lease_id, result={"files": 3})
    Job.objects.filter(pk=job.pk).update(
        queued_at=claimed.started_at - timedelta(seconds=42),
        finished_at=claimed.started_at + timedelta(minutes=3, seconds=5),
    )
    html = owner.get(detail(job)).content.decode()
    assert f"Job #{job.pk}" in html
    assert '<span class="pill succeeded">Succeeded</span>' in html
    assert "coder: lint the parser" in html
    assert '"task": "lint the parser"' in unescape(html)  # the payload
    assert '"files": 3' in unescape(html)  # the result
    assert f'href="{reverse("portal:agent_detail", args=[agent.pk])}">coder-3</a>' in html
    assert "1 of 3" in html  # attempts
    assert "<dt>Waited</dt><dd>42 s" in html
    assert "<dt>Ran</dt><dd>3 min 5 s" in html
    timeline = html[html.index("Timeline") :]
    steps = ["olga submitted", "coder-3 claimed", "coder-3 finished"]
    assert [timeline.index(step) for step in steps] == sorted(timeline.index(s) for s in steps)
    assert "attempt: 1" in timeline and "priority: 4" in timeline
    assert "Cancel job" not in html and "/cancel/" not in html  # finished: nothing to cancel


def test_a_failed_job_shows_its_error(owner, customer):
    factories.license(customer)
    agent = factories.agent(customer, name="coder-9")
    job, _ = job_submit(customer=customer, role="coder", payload={"task": "t"}, actor=SYSTEM)
    claimed = job_claim_next(agent=agent, max_concurrent=1)
    job_fail(agent=agent, job_id=job.pk, lease_id=claimed.lease_id, error="cargo test: 3 failed")
    html = owner.get(detail(job)).content.decode()
    assert "<h2>Error</h2>" in html and "cargo test: 3 failed" in html
    assert "failed on coder-9" in html


def test_a_queued_job_waits_and_can_be_cancelled_from_its_page(owner, customer):
    job = aged(customer, 3, payload={"task": "lint"})
    html = owner.get(detail(job)).content.decode()
    assert "Not yet: it waits for a coder" in html
    assert re.search(r"<dt>Waited</dt><dd>3 min( \d+ s)? so far", html)
    assert f'action="{reverse("portal:job_cancel", args=[job.pk])}"' in html
    response = owner.post(
        reverse("portal:job_cancel", args=[job.pk]), {"next": detail(job)}, follow=True
    )
    assert response.redirect_chain[-1][0] == detail(job)
    assert '<span class="pill cancelled">Cancelled</span>' in response.content.decode()


def test_cancel_is_post_only_and_goes_back_only_to_this_site(owner, customer):
    job = factories.job(customer)
    url = reverse("portal:job_cancel", args=[job.pk])
    assert owner.get(url).status_code == 405
    assert Job.objects.get().status == JobStatus.QUEUED
    response = owner.post(url, {"next": "https://evil.example/phish"})
    assert response["Location"] == detail(job)
    assert Job.objects.get().status == JobStatus.CANCELLED
    again = owner.post(url, {"next": f"{JOBS}?status=queued"})  # already cancelled: said so
    assert again["Location"] == f"{JOBS}?status=queued"


def test_another_customers_job_is_a_404_like_a_missing_one(owner, other_customer):
    theirs = factories.job(other_customer, payload={"task": "secret plans"})
    assert owner.get(detail(theirs)).status_code == 404
    missing = reverse("portal:job_detail", args=[theirs.pk + 1000])
    assert owner.get(missing).status_code == 404
    assert owner.post(reverse("portal:job_cancel", args=[theirs.pk])).status_code == 404
    assert Job.objects.get().status == JobStatus.QUEUED
    assert "secret plans" not in owner.get(JOBS).content.decode()


def test_durations_read_in_their_two_largest_units():
    assert [duration(timedelta(seconds=s)) for s in (0, 42, 185, 3600, 3660, 7325, 90061)] == [
        "0 s",
        "42 s",
        "3 min 5 s",
        "1 h",
        "1 h 1 min",
        "2 h 2 min",
        "1 day 1 h",
    ]
    assert duration(None) == ""


# --- queries --------------------------------------------------------------------------

# session, user, memberships, a bounded count per status (5), page count, page with agents
LIST_QUERIES = 10
DETAIL_QUERIES = 5  # session, user, memberships, the job with its agent, its timeline


def test_the_list_costs_the_same_queries_for_one_job_or_a_page_full(
    owner, customer, django_assert_num_queries
):
    agent = factories.agent(customer)
    factories.job(customer, status=JobStatus.RUNNING, agent=agent, started_at=timezone.now())
    with django_assert_num_queries(LIST_QUERIES):
        assert len(listed(owner.get(JOBS))) == 1
    for n in range(60):
        other = factories.agent(customer)
        factories.job(customer, role="coder", agent=other, priority=n % 3)
    for params in ({}, {"status": "queued", "role": "coder", "sort": "-started", "page": 2}):
        with django_assert_num_queries(LIST_QUERIES):
            owner.get(JOBS, params)
    with django_assert_num_queries(LIST_QUERIES):
        owner.get(JOBS, HTTP_HX_REQUEST="true")  # the poll


def test_a_job_costs_the_same_queries_however_long_its_timeline(
    owner, customer, django_assert_num_queries
):
    job = factories.job(customer, agent=factories.agent(customer))
    with django_assert_num_queries(DETAIL_QUERIES):
        owner.get(detail(job))
    for _ in range(30):
        factories.audit_event(customer, target_id=str(job.pk), action="job.claim")
    with django_assert_num_queries(DETAIL_QUERIES):
        assert owner.get(detail(job)).content.decode().count("claimed") == 30


# --- every destructive click asks first -----------------------------------------------

DESTRUCTIVE = re.compile(r"/(cancel|revoke|decommission)/$")


class Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.forms.append(dict(attrs))


def destructive_forms(html: str) -> list[dict[str, str | None]]:
    parser = Forms()
    parser.feed(html)
    return [f for f in parser.forms if DESTRUCTIVE.search(f.get("action") or "")]


def test_every_destructive_form_in_the_portal_asks_first_and_names_its_thing(owner, stocked):
    job, token, key, agent = stocked["job"], stocked["token"], stocked["key"], stocked["agent"]
    pages = {
        JOBS: f"Cancel job #{job.pk} (coder: t)?",
        detail(job): f"Cancel job #{job.pk} (coder: t)?",
        reverse("portal:tokens"): f"Revoke token {token.display_prefix}…",
        reverse("portal:api_keys"): f"Revoke {key.name}?",
        reverse("portal:agent_detail", args=[agent.pk]): f"Decommission {agent.name}?",
    }
    for url, names in pages.items():
        forms = destructive_forms(owner.get(url).content.decode())
        assert forms, url
        for form in forms:
            assert (form.get("method") or "").lower() == "post", (url, form)
            question = form.get("data-confirm") or form.get("hx-confirm") or ""
            assert names in question, (url, form)


def test_a_viewer_is_offered_no_destructive_click(viewer, stocked):
    for url in (JOBS, detail(stocked["job"]), reverse("portal:api_keys")):
        assert destructive_forms(viewer.get(url).content.decode()) == [], url


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_in_a_browser_cancel_asks_first_and_times_read_in_the_viewers_zone(
    live_server, customer, django_user_model
):
    from playwright.sync_api import sync_playwright

    from fleet.services.customers import membership_set
    from tests.runtime import CHROMIUM, CHROMIUM_ARGS

    user = django_user_model.objects.create_user("olga", password="a-long-portal-password")
    membership_set(customer=customer, user=user, role="owner", actor=SYSTEM)
    job = factories.job(customer, payload={"task": "lint"})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(timezone_id="Asia/Tokyo", locale="en-US").new_page()
        page.goto(f"{live_server.url}/portal/login/?next={JOBS}")
        page.fill("input[name=username]", "olga")
        page.fill("input[name=password]", "a-long-portal-password")
        page.click("button[type=submit]")
        row = page.locator("tr", has=page.locator(f"a[href='{detail(job)}']"))
        assert "GMT+9" in (row.locator("time").first.get_attribute("title") or "")
        asked: list[str] = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        row.locator("button", has_text="Cancel").click()
        page.wait_for_timeout(300)
        assert asked == [f"Cancel job #{job.pk} (coder: lint)? No agent will run it."]
        assert Job.objects.get().status == JobStatus.QUEUED  # "no" leaves it be
        page.once("dialog", lambda dialog: dialog.accept())
        row.locator("button", has_text="Cancel").click()
        page.wait_for_selector(f"text=Job #{job.pk} is cancelled.")
        assert Job.objects.get().status == JobStatus.CANCELLED
        browser.close()

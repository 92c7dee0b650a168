"""The Agents page as a fleet list: sortable columns that keep the filters, a table that
refreshes itself without losing them, and rows that read the same on a phone."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def agents(customer):
    now = timezone.now()
    return [
        factories.agent(customer, name=name, version=version, role=role, last_heartbeat_at=heard)
        for name, version, role, heard in [
            ("bravo", "1.10.0", "coder", now - timedelta(seconds=5)),
            ("alpha", "1.9.3", "coder", now - timedelta(seconds=50)),
            ("charlie", "1.2.0", "tester", now - timedelta(seconds=20)),
        ]
    ]


def names(page: bytes) -> list[str]:
    return re.findall(r'href="/portal/agents/\d+/">([^<]+)</a>', page.decode())


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("", ["alpha", "bravo", "charlie"]),  # by status, then name
        ("-version", ["bravo", "alpha", "charlie"]),  # 1.10.0 above 1.9.3: versions, not text
        ("version", ["charlie", "alpha", "bravo"]),
        ("-heard", ["bravo", "charlie", "alpha"]),
        ("name", ["alpha", "bravo", "charlie"]),
        ("nonsense", ["alpha", "bravo", "charlie"]),  # ignored
    ],
)
def test_columns_sort_both_ways(owner, agents, sort, expected):
    assert names(owner.get(f"/portal/agents/?sort={sort}").content) == expected


def test_a_sort_keeps_the_filters_and_the_poll_keeps_both(owner, agents):
    page = owner.get("/portal/agents/?role=coder&sort=-version").content.decode()
    assert names(page.encode()) == ["bravo", "alpha"]
    # The header flips the sort and keeps the role; the poll asks for this very view.
    assert 'href="?role=coder&amp;sort=version"' in page
    assert 'hx-get="/portal/agents/?role=coder&amp;sort=-version"' in page
    assert 'hx-trigger="every ' in page
    polled = owner.get("/portal/agents/?role=coder&sort=-version", HTTP_HX_REQUEST="true")
    assert names(polled.content) == ["bravo", "alpha"]
    assert b"<html" not in polled.content  # only the table is swapped


def test_each_cell_is_labelled_for_the_phone_layout(owner, agents):
    page = owner.get("/portal/agents/").content.decode()
    assert 'class="grid stacks"' in page
    for label in ("Name", "Role", "Status", "Version", "Host", "Zone", "Heard"):
        assert f'data-label="{label}"' in page


def test_a_viewer_sees_the_controls_disabled_with_whom_to_ask(viewer, agents, customer):
    agent = agents[0]
    detail = viewer.get(f"/portal/agents/{agent.pk}/").content.decode()
    assert re.search(
        r"<button disabled title=\"Owners and admins decommission agents: ask an", detail
    )
    assert "/decommission/" not in detail  # no form to post
    factories.job(customer)
    jobs = viewer.get("/portal/jobs/").content.decode()
    assert 'disabled aria-describedby="submit-ask"' in jobs
    assert "Owners and admins submit and cancel jobs: ask an owner" in jobs
    assert re.search(r'<button class="small" disabled title="[^"]*ask an owner">Cancel', jobs)

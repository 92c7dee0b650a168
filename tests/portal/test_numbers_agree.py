"""One definition of every number: the dashboard, the Agents and Hosts pages, Plan, the per-role
table and the snapshot (which the API's metrics and charts read) say the same of the
same fleet, including agents whose status column is behind (silent, not swept yet) and
agents that cannot work (upgrading) or hold no seat (decommissioned)."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AgentStatus, JobStatus
from fleet.selectors import fleet_metrics, host_list, role_numbers
from fleet.services.snapshots import fleet_snapshots_take
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(customer):
    factories.license(customer, max_agents=20)
    silent = timezone.now() - timedelta(minutes=10)
    coders = [factories.agent(customer, role="coder") for _ in range(3)]
    for _ in range(2):  # silent for ten minutes; the sweep has not marked them yet
        factories.agent(customer, role="coder", last_heartbeat_at=silent)
    factories.agent(customer, role="coder", status=AgentStatus.OFFLINE, last_heartbeat_at=silent)
    factories.agent(customer, role="tester", status=AgentStatus.UPGRADING)
    factories.agent(customer, role="tester", status=AgentStatus.DECOMMISSIONED)
    factories.job(customer, role="coder", status=JobStatus.RUNNING, agent=coders[0])
    for _ in range(4):
        factories.job(customer, role="coder")
    return customer


def rows(page: bytes) -> int:
    return len(re.findall(rb'href="/portal/agents/\d+/"', page))


def test_every_page_counts_the_same_fleet_the_same_way(owner, fleet):
    metrics = fleet_metrics(fleet)
    assert (metrics.agents_online, metrics.agents_active) == (4, 7)  # 3 coders + upgrading
    coder, tester = (r for r in role_numbers(fleet) if r.role in ("coder", "tester"))
    assert (coder.agents, coder.online, coder.offline, coder.can_work) == (6, 3, 3, 3)
    assert (coder.busy, coder.idle, coder.queued) == (1, 2, 4)
    assert (tester.agents, tester.online, tester.can_work) == (1, 1, 0)

    dashboard = owner.get("/portal/").content.decode()
    assert "4 of 7 agents heard from" in dashboard
    assert re.search(r'data-role="coder"><td>Coder</td><td>3 of 6 .*?3 offline', dashboard)

    online_rows = rows(owner.get("/portal/agents/?status=online").content)
    offline_rows = rows(owner.get("/portal/agents/?status=offline").content)
    upgrading_rows = rows(owner.get("/portal/agents/?status=upgrading").content)
    assert (online_rows, offline_rows, upgrading_rows) == (3, 3, 1)
    listed = owner.get("/portal/agents/").content.decode()
    assert listed.count('class="pill offline"') == 3  # the silent ones shown offline too

    hosts = host_list(fleet)
    assert (sum(h.n_online for h in hosts), sum(h.n_agents for h in hosts)) == (4, 7)

    plan = owner.get("/portal/plan/?repo_loc=100000").content.decode()
    assert re.search(r"<td>Coder</td><td>3\u20135</td><td>3 .*?3 offline, not counted", plan)

    [snapshot] = fleet_snapshots_take()
    assert (snapshot.agents_online, snapshot.agents_total) == (4, 7)
    assert snapshot.queue_depth == coder.queued


def test_the_dashboard_and_plan_read_the_role_numbers_once(owner, fleet, monkeypatch):
    """The role table and the advice (and Plan's sizing) share one role_numbers() read,
    wherever it is called from."""
    from fleet.selectors import metrics

    calls = []
    role_numbers = metrics.role_numbers

    def counted(*args, **kwargs):
        calls.append(1)
        return role_numbers(*args, **kwargs)

    for where in (
        "fleet.selectors.role_numbers",
        "fleet.selectors.advice.role_numbers",
        "fleet.selectors.metrics.role_numbers",  # the dashboard's four numbers sum its roles
    ):
        monkeypatch.setattr(where, counted)
    owner.get("/portal/", HTTP_HX_REQUEST="true")
    owner.get("/portal/plan/?repo_loc=100000")
    assert len(calls) == 2  # one a page

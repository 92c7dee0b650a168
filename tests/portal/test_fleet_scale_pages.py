"""Pages at fleet scale: no page lists every agent (the canary picker asks the server as
you type), and lists count at most COUNT_CAP rows, saying "10,000+" past it."""

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet.choices import JobStatus, MemberRole
from fleet.models import Rollout
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(customer):
    factories.license(customer, max_agents=100)
    factories.release("1.0.0")
    factories.release("2.0.0")
    return [factories.agent(customer, name=f"coder-{n:02}") for n in range(60)]


def options(client, **params):
    page = client.get(reverse("portal:agent_options"), params).content.decode()
    return re.findall(r'<option value="([^"]+)">', page)


def test_the_canary_picker_offers_matches_as_you_type_never_every_agent(
    owner, fleet, other_customer, django_user_model
):
    page = owner.get(reverse("portal:upgrades")).content.decode()
    assert "coder-0" not in page and 'list="canary-options"' in page
    assert len(options(owner)) == 20  # the first twenty, not sixty
    assert options(owner, q="coder-4") == [f"coder-4{n} (#{fleet[40 + n].pk})" for n in range(10)]
    assert options(owner, canary="coder-07") == [f"coder-07 (#{fleet[7].pk})"]  # htmx's name
    factories.license(other_customer)
    theirs = factories.agent(other_customer, name="coder-theirs")
    assert options(owner, q="theirs") == []
    viewer = member_client(fleet[0].customer, django_user_model, MemberRole.VIEWER, "vera")
    assert len(options(viewer, q="coder-1")) == 10  # reading the fleet is every member's

    start = {"release": "", "canary_soak_hours": 24, "batch_percent": 25}
    start |= {"batch_watch_minutes": 60, "online_floor_percent": 95, "reason": "r"}
    release = factories.release("2.1.0")
    start["release"] = release.pk
    for hostile, error in (
        (f"coder-theirs (#{theirs.pk})", "No online agent matches"),
        ("nobody", "No online agent matches"),
        ("x (#99999999999999999999)", "No online agent matches"),
        ("coder-01\x00", "Null characters are not allowed"),
    ):
        response = owner.post(reverse("portal:upgrades"), {**start, "canary": hostile})
        assert response.status_code == 422 and error in response.content.decode()
    factories.agent(fleet[0].customer, name="coder-03")  # two agents of that name now
    response = owner.post(reverse("portal:upgrades"), {**start, "canary": "coder-03"})
    assert "Several online agents are named coder-03" in response.content.decode()
    assert not Rollout.objects.exists()
    canary = f"coder-05 (#{fleet[5].pk})"
    owner.post(
        reverse("portal:upgrades"), {**start, "canary": canary, "acceptance_drop_percent": 30}
    )
    rollout = Rollout.objects.get()
    assert rollout.canary_agent == fleet[5]
    assert (rollout.acceptance_drop_tolerance, rollout.cost_increase_tolerance) == (
        Decimal("0.3"),
        Decimal("0.5"),  # left empty: the default
    )


def test_lists_count_at_most_the_cap_and_say_so(owner, fleet, monkeypatch):
    monkeypatch.setattr("fleet.policy.COUNT_CAP", 55)
    with CaptureQueriesContext(connection) as ctx:
        page = owner.get(reverse("portal:agents")).content.decode()
    assert "55+ in all: filter to narrow" in page
    assert "Act on all 55+ agents" in page
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"]]
    assert counts and all("LIMIT 56" in sql for sql in counts)
    narrowed = owner.get(reverse("portal:agents"), {"q": "coder-1"}).content.decode()
    assert "55+ in all" not in narrowed and "Act on all 10 agents" in narrowed  # counted

    for _ in range(60):
        factories.job(fleet[0].customer, status=JobStatus.SUCCEEDED)
    jobs = owner.get(reverse("portal:jobs")).content.decode()
    assert re.search(r'Succeeded <span class="count">55\+</span>', jobs)
    assert re.search(r'Queued <span class="count">0</span>', jobs)


def test_the_host_filter_is_typed(owner, fleet):
    host = fleet[3].host.hostname
    page = owner.get(reverse("portal:agents"), {"host": host}).content.decode()
    assert "coder-03" in page and "coder-04" not in page
    assert f'name="host" value="{host}"' in page

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agentina.state import AgentState
from fleet.models import ActivationToken, Agent, Anomaly, AuditEvent, Customer, Job, Release
from fleet.secrets import secret_digest
from fleet.selectors import release_latest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _var_dir(settings, tmp_path):
    """The demo agents' state goes to the simulator's directory under VAR_DIR."""
    settings.VAR_DIR = tmp_path


def _counts() -> dict[str, int]:
    return {
        m.__name__: m.objects.count()
        for m in (Customer, Agent, Job, Anomaly, ActivationToken, Release)
    }


def test_seed_demo_is_idempotent_and_prints_working_logins(client, tmp_path):
    out = StringIO()
    call_command("seed_demo", "--force", stdout=out)
    first = _counts()
    audit_rows = AuditEvent.objects.count()
    seeded_secret = AgentState.load(tmp_path / "simulator" / "acme" / "coder-1").secret
    call_command("seed_demo", "--force", stdout=StringIO())
    assert _counts() == first
    assert AuditEvent.objects.count() == audit_rows
    assert first["Customer"] == 2
    assert set(Agent.objects.values_list("role", flat=True)) == {
        "coder",
        "reviewer",
        "tester",
        "indexer",
    }
    assert set(Agent.objects.values_list("host__zone", flat=True)) >= {"eu-west-1a", "eu-west-1b"}
    assert {str(v) for v in Agent.objects.values_list("version", flat=True)} >= {
        "1.8.0",
        "1.9.3",
        "1.10.0",
    }
    assert set(Job.objects.values_list("status", flat=True)) == {
        "queued",
        "running",
        "succeeded",
        "failed",
    }
    assert release_latest().version == "1.10.0"
    # Every seat-holding demo agent is simulated: its secret (fresh each seeding) is
    # where simulate_fleet finds it; the retired one is history.
    stored = {
        path.parent.name: AgentState.load(path.parent)
        for path in tmp_path.glob("simulator/*/*/agent.json")
    }
    assert set(stored) == set(Agent.objects.holding_seat().values_list("name", flat=True))
    assert stored["coder-1"].secret != seeded_secret
    coder_1 = Agent.objects.get(name="coder-1")
    assert coder_1.secret_digest == secret_digest(stored["coder-1"].secret)
    assert Agent.objects.get(name="coder-4").status == "decommissioned"
    assert not Agent.objects.filter(status="offline").exists()

    text = out.getvalue()
    assert "staff" in text
    assert "agentina-demo" in text
    login = client.post(
        "/admin/login/", {"username": "staff", "password": "agentina-demo", "next": "/admin/"}
    )
    assert login.status_code == 302
    page = client.get("/admin/fleet/agent/")
    assert page.status_code == 200
    assert b"coder-1" in page.content
    client.logout()
    login = client.post("/portal/login/", {"username": "ada", "password": "agentina-demo"})
    assert login.status_code == 302
    portal = client.get("/portal/agents/")
    assert b"Acme Robotics" in portal.content
    assert b"gx-coder-1" not in portal.content


def test_seed_demo_refuses_without_debug_unless_forced():
    with pytest.raises(CommandError, match="DEBUG=true"):
        call_command("seed_demo", stdout=StringIO())
    assert not Customer.objects.exists()


def test_seeding_again_after_a_decommission_leaves_the_agent_retired():
    """The README invites decommissioning a demo agent; `make run` seeds again on every
    start, and must neither fail nor bring the agent back."""
    from fleet.services.agents import agent_decommission
    from fleet.services.audit import SYSTEM

    call_command("seed_demo", "--force", stdout=StringIO())
    retired = Agent.objects.filter(status="online").first()
    assert agent_decommission(agent=retired, actor=SYSTEM)
    call_command("seed_demo", "--force", stdout=StringIO())
    retired.refresh_from_db()
    assert (retired.status, retired.decommissioned_at is not None) == ("decommissioned", True)
    # The demo fleet is whole again: a successor holds the retired agent's unit.
    successor = Agent.objects.holding_seat().get(host=retired.host, unit_name=retired.unit_name)
    assert successor.pk != retired.pk

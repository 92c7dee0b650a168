"""The reference agent's activation against the real API (in process): a lost answer is
recovered by the agent that sent the request, and by nobody else."""

import json as jsonlib
import stat
from pathlib import Path

import pytest
from django.test import Client as DjangoClient

from agentina import cli
from agentina.client import ApiError, Client, Unreachable
from agentina.state import INSTALL_KEY_FILE, AgentState
from fleet.models import Agent
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories

pytestmark = pytest.mark.django_db


class ServerTransport:
    """Sends each request to the Control Plane in this process. `lose` answers are
    dropped after the server acted on them, as a connection cut on the way back would."""

    def __init__(self, lose: int = 0) -> None:
        self.lose = lose
        self.sent: list[dict] = []

    def request(self, method, url, *, json=None, headers):
        self.sent.append(json)
        path = url.split("://", 1)[1].split("/", 1)[1]
        response = DjangoClient().generic(
            method,
            f"/{path}",
            data=jsonlib.dumps(json),
            content_type="application/json",
            **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
        )
        if self.lose:
            self.lose -= 1
            raise ConnectionError("connection reset by peer (the answer was lost)")
        return response.status_code, response.json() if response.content else None


def activate(tmp_path: Path, token: str, transport: ServerTransport, **flags: str) -> int:
    args = [
        "activate",
        "--server",
        "http://cp.test",
        "--token",
        token,
        "--role",
        "coder",
        "--state-dir",
        str(tmp_path / "state"),
        "--machine-id",
        flags.get("machine_id", "m-1"),
        "--hostname",
        "build-1",
    ]
    client = Client("http://cp.test", transport=transport, sleep=lambda s: None)
    return cli.cmd_activate(cli.parser().parse_args(args), client)


@pytest.fixture
def token(customer) -> str:
    factories.license(customer, max_agents=5)
    return token_mint(customer=customer, actor=SYSTEM)[1]


def me(secret: str) -> int:
    return (
        DjangoClient().get("/api/v1/agents/me", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code
    )


def test_a_lost_answer_is_retried_and_the_agent_recovered(tmp_path, token, capsys):
    transport = ServerTransport(lose=1)
    assert activate(tmp_path, token, transport) == 0
    # Two requests reached the server: the first made the agent, its answer was lost; the
    # retry carried the same install key and got the agent back with a working secret.
    activations = [body for body in transport.sent if body]  # not the signing key's GET
    assert len(activations) == 2
    assert activations[0]["install_key"] == activations[1]["install_key"]
    assert "recovered as a coder" in capsys.readouterr().out
    state = AgentState.load(tmp_path / "state")
    assert Agent.objects.get().pk == state.agent_id
    assert me(state.secret) == 200
    key_file = tmp_path / "state" / INSTALL_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text() == transport.sent[0]["install_key"]


def test_a_new_activate_after_a_crash_recovers_with_the_key_on_disk(tmp_path, token):
    lost = ServerTransport(lose=99)  # every answer lost: the command gives up
    with pytest.raises(Unreachable):
        activate(tmp_path, token, lost)
    assert Agent.objects.count() == 1  # the server did make the agent
    assert activate(tmp_path, token, ServerTransport()) == 0
    assert me(AgentState.load(tmp_path / "state").secret) == 200
    assert Agent.objects.count() == 1


def test_another_install_with_the_same_machine_id_is_refused(tmp_path, token):
    assert activate(tmp_path / "real", token, ServerTransport()) == 0
    real = AgentState.load(tmp_path / "real" / "state")
    # Someone who copied the token and reads the machine id and unit off the host.
    with pytest.raises(ApiError) as refused:
        activate(tmp_path / "thief", token, ServerTransport())
    assert refused.value.code == "token_already_redeemed"
    assert me(real.secret) == 200  # the real host keeps its agent

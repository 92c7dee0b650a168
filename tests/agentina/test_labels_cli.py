"""`agentina activate --label k=v` reports labels the server stores on the agent; a
malformed one is refused before any request."""

import pytest

from agentina import cli
from agentina.client import Client
from fleet.models import Agent
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.agentina.test_outbox import FaultyServer

pytestmark = pytest.mark.django_db


def args(tmp_path, token, *labels):
    return [
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
        "m-1",
        "--hostname",
        "build-1",
        *[part for label in labels for part in ("--label", label)],
    ]


def test_activate_with_labels(tmp_path, customer):
    factories.license(customer)
    _, token = token_mint(customer=customer, labels={"pool": "ci"}, actor=SYSTEM)
    client = Client("http://cp.test", transport=FaultyServer(), sleep=lambda s: None)
    parsed = cli.parser().parse_args(args(tmp_path, token, "gpu=a100", "os=linux"))
    assert cli.cmd_activate(parsed, client) == 0
    assert Agent.objects.get().labels == {"gpu": "a100", "os": "linux", "pool": "ci"}


@pytest.mark.parametrize("label", ["gpu", "has space=x", "=x"])
def test_a_malformed_label_is_refused_by_the_command_line(tmp_path, label, capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(args(tmp_path, "agtn_act_x", label))
    assert "KEY=VALUE" in capsys.readouterr().err

"""`agentina install` against the real API (in process): it activates through the same
path as `agentina activate`, writes a systemd unit that runs the agent, and starts it with
systemctl (or says how, where there is none). Installing twice is harmless."""

import configparser
import os
import shlex
import shutil
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from agentina import cli
from agentina.client import ApiError, Client
from agentina.service import EXIT_REFUSED, systemd_quote, unit_file, unit_path, unit_write
from agentina.signing import generate_keypair, public_key_b64
from agentina.state import AgentState
from agentina.upgrade import Installs
from fleet.models import ActivationToken, Agent, Anomaly
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.agentina.test_activation_recovery import ServerTransport, me

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(customer) -> str:
    factories.license(customer, max_agents=5)
    return token_mint(customer=customer, actor=SYSTEM)[1]


@pytest.fixture
def no_systemctl(tmp_path, monkeypatch):
    """A PATH without systemctl, as in a container."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def install(tmp_path: Path, token: str, *flags: str, transport=None) -> int:
    args = [
        "install",
        "--server",
        "http://cp.test",
        "--token",
        token,
        "--role",
        "coder",
        "--unit-dir",
        str(tmp_path / "units"),
        "--state-dir",
        str(tmp_path / "state"),
        "--machine-id",
        "m-1",
        "--hostname",
        "build-1",
        *flags,
    ]
    client = Client("http://cp.test", transport=transport or ServerTransport(), sleep=lambda s: 0)
    return cli.cmd_install(cli.parser().parse_args(args), client)


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def systemd_restarts(unit: configparser.ConfigParser, status: int) -> bool:
    """Whether systemd restarts the service after its process exits with `status`, as
    systemd.service(5) decides it from Restart=, SuccessExitStatus= and
    RestartPreventExitStatus= (for an exit status; a signal is another matter)."""
    service = unit["Service"]
    if str(status) in service.get("RestartPreventExitStatus", "").split():
        return False
    clean = status == 0 or str(status) in service.get("SuccessExitStatus", "").split()
    policy = service.get("Restart", "no")
    return {"always": True, "on-success": clean, "on-failure": not clean}.get(policy, False)


def exec_start(unit: configparser.ConfigParser) -> list[str]:
    """ExecStart as systemd splits it (its quoting is the shell's for what we write)."""
    return shlex.split(unit["Service"]["ExecStart"].replace("%%", "%").replace("$$", "$"))


def test_install_activates_and_writes_a_unit_that_runs_the_agent(tmp_path, token, capsys):
    assert install(tmp_path, token, "--no-start") == 0
    state = AgentState.load(tmp_path / "state")
    agent = Agent.objects.get()
    assert (state.agent_id, agent.unit_name, agent.state_dir) == (
        agent.pk,
        "agentina@coder",
        str(tmp_path / "state"),
    )
    assert me(state.secret) == 200
    path = tmp_path / "units" / "agentina@coder.service"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # no secret in it
    unit = read_unit(path)
    assert exec_start(unit)[-3:] == ["run", "--state-dir", str(tmp_path / "state")]
    assert os.path.isabs(exec_start(unit)[0])
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    out = capsys.readouterr().out
    assert "activated as a coder" in out
    assert "systemctl enable agentina@coder" in out
    assert "systemctl restart agentina@coder" in out


def test_installing_twice_with_the_same_token_is_harmless_even_much_later(
    tmp_path, token, capsys, no_systemctl
):
    assert install(tmp_path, token) == 0
    first = AgentState.load(tmp_path / "state")
    unit = (tmp_path / "units" / "agentina@coder.service").read_text()
    # Past the window in which a lost answer could be recovered: the agent is found in its
    # state dir and left alone, so no "token shared" alarm and no new secret.
    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        assert install(tmp_path, token) == 0
    assert "not activated again, the token is left as it was" in capsys.readouterr().out
    assert Agent.objects.count() == 1
    assert AgentState.load(tmp_path / "state") == first
    assert me(first.secret) == 200
    assert (tmp_path / "units" / "agentina@coder.service").read_text() == unit
    assert ActivationToken.objects.get().refused_attempts == 0
    assert not Anomaly.objects.filter(kind="token_reuse").exists()


def test_reinstalling_a_living_agent_pins_the_release_key_given(tmp_path, token, no_systemctl):
    """The key rotation /docs/updates describes: reinstall with --release-key."""
    assert install(tmp_path, token) == 0
    new_key = public_key_b64(generate_keypair()[0])
    assert install(tmp_path, token, "--release-key", new_key) == 0
    assert Installs(tmp_path / "state").pinned_key() == new_key
    assert Agent.objects.count() == 1


def test_a_lost_answer_is_recovered_and_the_unit_written(tmp_path, token, capsys):
    transport = ServerTransport(lose=1)
    assert install(tmp_path, token, "--no-start", transport=transport) == 0
    # The retry recovered the agent the first request made (the key GET has no body).
    assert len([body for body in transport.sent if body]) == 2
    assert "recovered as a coder" in capsys.readouterr().out
    assert me(AgentState.load(tmp_path / "state").secret) == 200
    assert (tmp_path / "units" / "agentina@coder.service").exists()


def test_a_retired_agents_state_dir_takes_a_new_token(tmp_path, token, customer, no_systemctl):
    assert install(tmp_path, token) == 0
    old = Agent.objects.get()
    from fleet.services.agents import agent_decommission

    agent_decommission(agent=old, actor=SYSTEM)
    fresh = token_mint(customer=customer, actor=SYSTEM)[1]
    assert install(tmp_path, fresh) == 0
    state = AgentState.load(tmp_path / "state")
    assert state.agent_id != old.pk
    assert me(state.secret) == 200


def test_systemctl_reloads_enables_and_restarts_the_unit(tmp_path, token, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(cli, "systemd_booted", lambda: True)
    assert install(tmp_path, token) == 0
    assert calls.read_text().splitlines() == [
        "daemon-reload",
        "enable agentina@coder",
        "restart agentina@coder",
    ]
    assert "agentina@coder is enabled and running" in capsys.readouterr().out


def test_a_failing_systemctl_says_what_failed_and_what_is_left(
    tmp_path, token, monkeypatch, capsys
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = enable ] && { echo "Failed to enable: no such unit" >&2; exit 1; }\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(cli, "systemd_booted", lambda: True)
    assert install(tmp_path, token) == 1
    err = capsys.readouterr().err
    assert "`systemctl enable agentina@coder` failed: Failed to enable: no such unit" in err
    assert "systemctl restart agentina@coder" in err
    assert "systemctl daemon-reload" not in err.split("Fix that")[1]  # that one went through


def test_without_systemctl_it_prints_the_commands_to_run(tmp_path, token, capsys, no_systemctl):
    assert install(tmp_path, token) == 0
    out = capsys.readouterr().out
    assert "systemctl is not here; to start it, run:" in out
    for line in (
        "systemctl daemon-reload",
        "systemctl enable agentina@coder",
        "systemctl restart agentina@coder",
    ):
        assert f"  {line}\n" in out


def test_systemctl_without_systemd_running_prints_the_commands(
    tmp_path, token, monkeypatch, capsys
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(cli, "systemd_booted", lambda: False)  # a container, say
    assert install(tmp_path, token) == 0
    out = capsys.readouterr().out
    assert "systemd does not run this host; to start it where it does, run:" in out
    assert "  systemctl enable agentina@coder\n" in out


def test_an_unwritable_unit_dir_is_refused_before_the_token_is_spent(
    tmp_path, token, monkeypatch, capsys
):
    access = os.access
    units = str(tmp_path / "units")
    monkeypatch.setattr(cli.os, "access", lambda p, m: False if str(p) == units else access(p, m))
    with pytest.raises(PermissionError, match="run `agentina install` as root"):
        install(tmp_path, token)
    assert ActivationToken.objects.get().status == "outstanding"
    assert not (tmp_path / "state").exists()


def test_a_second_agent_on_the_host_needs_its_own_unit(tmp_path, token, customer, capsys):
    assert install(tmp_path, token, "--no-start") == 0
    second = token_mint(customer=customer, actor=SYSTEM)[1]
    with pytest.raises(ApiError) as refused:
        install(tmp_path / "second", second, "--no-start")
    assert refused.value.code == "unit_in_use"
    assert "pass another --unit" in cli.explain(refused.value)
    assert install(tmp_path / "second", second, "--no-start", "--unit", "agentina@coder-2") == 0
    assert (tmp_path / "second" / "units" / "agentina@coder-2.service").exists()
    assert Agent.objects.count() == 2


@pytest.mark.parametrize("unit", ["agentina@", "../evil", "a@b@c", "agentina coder"])
def test_a_unit_name_systemd_would_refuse_is_refused_first(unit, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(
            ["install", "--server", "s", "--token", "t", "--role", "coder", "--unit", unit]
        )
    assert exited.value.code == 2
    assert "is not a unit name for one agent" in capsys.readouterr().err


def test_the_default_state_dir_follows_the_unit_and_dot_service_is_dropped():
    args = cli.parser().parse_args(
        ["install", "--server", "s", "--token", "t", "--role", "tester", "--unit", "a@t2.service"]
    )
    assert args.unit == "a@t2"
    assert args.state_dir is None  # cmd_install makes it /var/lib/agentina/t2
    from agentina.service import state_dir_for

    assert state_dir_for("agentina@tester") == "/var/lib/agentina/tester"


def test_the_unit_quotes_what_systemd_would_read_otherwise(tmp_path):
    odd = "/srv/agents/50% of $HOME/coder"
    text = unit_file(
        unit_name="agentina@coder",
        state_dir=odd,
        role="coder",
        server="https://cp.example.com",
        command=["/opt/agentina venv/bin/agentina"],
        exec_command='run-job --repo "$REPO"',
    )
    path = tmp_path / "u.service"
    path.write_text(text)
    assert exec_start(read_unit(path)) == [
        "/opt/agentina venv/bin/agentina",
        "run",
        "--state-dir",
        odd,
        "--exec",
        'run-job --repo "$REPO"',
    ]
    assert systemd_quote("/var/lib/agentina/coder") == "/var/lib/agentina/coder"


def test_the_unit_restarts_a_failed_agent_not_a_stopped_retired_or_refused_one(tmp_path, token):
    assert install(tmp_path, token, "--no-start") == 0
    unit = read_unit(tmp_path / "units" / "agentina@coder.service")
    assert systemd_restarts(unit, 1)  # a crash: a traceback, or an error `main` reports
    assert not systemd_restarts(unit, 0)  # drained on a stop, or its ephemeral job done
    assert not systemd_restarts(unit, EXIT_REFUSED)  # decommissioned or retired: for good


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_reads_every_line_of_the_unit(tmp_path):
    path = unit_path(tmp_path, "agentina@coder")
    unit_write(
        path,
        unit_file(
            unit_name="agentina@coder",
            state_dir="/var/lib/agentina/coder",
            role="coder",
            server="https://cp.example.com",
            command=[sys.executable, "-m", "agentina.cli"],
            exec_command="run-job --repo x",
        ),
    )
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ignored = [line for line in checked.stderr.splitlines() if "ignoring" in line]
    assert ignored == []  # systemd logs a line it cannot parse, and ignores it

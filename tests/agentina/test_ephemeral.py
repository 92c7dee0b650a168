"""Ephemeral agents (autoscaling groups, CI runners): a token minted ephemeral yields an
agent that runs one job and is then decommissioned, or is decommissioned when it exits
cleanly; its seat is free at once."""

import pytest

from agentina import cli
from agentina.client import Client
from agentina.outbox import Outbox
from agentina.runner import Runner
from agentina.service import EXIT_REFUSED, unit_file
from agentina.state import AgentState
from fleet.choices import AgentStatus, JobStatus
from fleet.models import ActivationToken, Agent, Job
from fleet.selectors import license_seats
from fleet.services.agents import agent_decommission
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.agentina.test_activation_recovery import activate
from tests.agentina.test_install import read_unit, systemd_restarts
from tests.agentina.test_outbox import Clock, FaultyServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def server(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)
    return FaultyServer()


@pytest.fixture
def full(customer):
    """A license with one seat, so a seat freed shows at once."""
    factories.license(customer, max_agents=1, max_concurrent_tasks_per_agent=4)
    return customer


def runner(tmp_path, server, logs) -> Runner:
    agent = AgentState.load(tmp_path / "state")
    return Runner(
        Client("http://cp.test", agent.secret, server, retries=0, sleep=lambda s: None),
        agent,
        lambda payload: (True, {"done": payload["task"]}),
        log=logs.append,
        outbox=Outbox.in_state_dir(tmp_path / "state"),
        clock=Clock(),
    )


def test_an_ephemeral_agent_runs_one_job_and_is_retired_its_seat_free_at_once(
    tmp_path, full, server
):
    _, secret = token_mint(customer=full, ephemeral=True, actor=SYSTEM)
    assert activate(tmp_path, secret, server) == 0
    agent = Agent.objects.get()
    assert agent.ephemeral and license_seats(full).free == 0
    for n in range(3):
        factories.job(full, payload={"task": f"t{n}"})
    logs: list[str] = []
    r = runner(tmp_path, server, logs)
    r.start()
    assert r.ephemeral and r.cap == 1
    r.step()  # claims one job only (the license would allow four)
    assert len(r.running) == 1
    [held] = r.running.values()
    held.future.result(timeout=5)
    r.step()  # the result is delivered: the server retires it
    retired = Agent.objects.get()
    assert retired.status == AgentStatus.DECOMMISSIONED
    assert license_seats(full).free == 1  # at once, no sweep needed
    assert Job.objects.filter(status=JobStatus.SUCCEEDED).count() == 1
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 2
    r.step()
    assert r.done and any("retired" in line for line in logs)
    # The freed seat takes a new agent right away.
    _, second = token_mint(customer=full, actor=SYSTEM)
    assert activate(tmp_path / "next", second, server) == 0


def test_an_ephemeral_agent_that_exits_cleanly_is_retired(tmp_path, full, server):
    _, secret = token_mint(customer=full, ephemeral=True, actor=SYSTEM)
    assert activate(tmp_path, secret, server) == 0
    logs: list[str] = []
    r = runner(tmp_path, server, logs)
    r.start()
    r.step()  # a heartbeat; no job waits
    r.shutdown()  # what Ctrl-C (or systemd's stop) ends with: drain, then exit
    assert ("/agents/exit", 200) in server.answered
    assert Agent.objects.get().status == AgentStatus.DECOMMISSIONED
    assert license_seats(full).free == 1


def test_a_normal_agents_exit_changes_nothing(tmp_path, full, server):
    _, secret = token_mint(customer=full, actor=SYSTEM)
    assert activate(tmp_path, secret, server) == 0
    agent = Agent.objects.get()
    client = Client("http://cp.test", AgentState.load(tmp_path / "state").secret, server)
    assert client.exit() == {"decommissioned": False}
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ONLINE
    assert not ActivationToken.objects.get().ephemeral


def agent_run(tmp_path, server, monkeypatch) -> int:
    """`agentina run --exec cat` on the state dir, as its unit starts it (a job's result
    is its payload), until it stops by itself."""
    monkeypatch.setattr(cli.signal, "signal", lambda *args: None)  # pytest's handlers stay
    args = cli.parser().parse_args(["run", "--state-dir", str(tmp_path / "state"), "--exec", "cat"])
    secret = AgentState.load(tmp_path / "state").secret
    return cli.cmd_run(args, Client("http://cp.test", secret, server, retries=0))


def the_unit(tmp_path):
    path = tmp_path / "agentina@coder.service"
    path.write_text(
        unit_file(
            unit_name="agentina@coder",
            state_dir=str(tmp_path / "state"),
            role="coder",
            server="http://cp.test",
            command=["/usr/bin/agentina"],
            exec_command="cat",
        )
    )
    return read_unit(path)


def test_a_retired_ephemeral_agent_is_not_brought_back_by_systemd(
    tmp_path, full, server, settings, monkeypatch, capsys
):
    settings.AGENT_HEARTBEAT_SECONDS = settings.AGENT_HEARTBEAT_MAX_SECONDS = 0  # no waits
    _, secret = token_mint(customer=full, ephemeral=True, actor=SYSTEM)
    assert activate(tmp_path, secret, server) == 0
    job = factories.job(full, payload={"task": "t0"})
    unit = the_unit(tmp_path)

    status = agent_run(tmp_path, server, monkeypatch)  # its one job, then it is retired
    assert status == 0
    assert Job.objects.get(pk=job.pk).result == {"task": "t0"}
    assert Agent.objects.get().status == AgentStatus.DECOMMISSIONED
    assert not systemd_restarts(unit, status)

    # Started again all the same (the host rebooted, the unit enabled): refused, it says
    # so once and exits with the status its unit does not restart.
    capsys.readouterr()
    asked = len(server.sent)
    status = agent_run(tmp_path, server, monkeypatch)
    assert status == EXIT_REFUSED
    assert [path for path, _ in server.sent[asked:]] == ["/agents/me"]
    assert "no longer accepts agent" in capsys.readouterr().err
    assert not systemd_restarts(unit, status)


def test_a_decommissioned_agent_exits_with_the_status_systemd_does_not_restart(
    tmp_path, full, server, monkeypatch, capsys
):
    _, secret = token_mint(customer=full, actor=SYSTEM)
    assert activate(tmp_path, secret, server) == 0
    agent_decommission(agent=Agent.objects.get(), actor=SYSTEM)
    assert agent_run(tmp_path, server, monkeypatch) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert f"status {EXIT_REFUSED}" in err and "install it with a new token" in err

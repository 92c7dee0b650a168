"""End to end, with real processes: agents run by `python -m agentina run` from this
repository (version agentina.__version__) against Django's live server on PostgreSQL are
upgraded to signed releases published with `manage.py release_publish --from-source` (or
`--artifact` for a broken build), and really
download, verify, install, restart, smoke-check themselves and roll back.

Broken releases come from a test-only hook of the artifact builder (agentina/artifact.py
FAULTS): `fault="smoke"` stamps `__test_fault__ = "smoke"` into the release, which makes
its smoke check's self-test fail; `fault="crash"` makes it fail to import at start. A
"previous version broken too" is made by breaking an installed version on disk.

All scenarios run at once, one agent (one state dir, one process) each, so the test takes
about as long as the slowest, with heartbeats every second. No scenario waits for a
deadline to pass (outside systemd the watcher sees a crashed process at once), so the
start and smoke deadlines (AGENTINA_START_DEADLINE, AGENTINA_SMOKE_DEADLINE) stay well
above what a loaded machine needs to start a version.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command

import agentina
from agentina import cli
from agentina.artifact import build_from_source
from agentina.client import Client
from agentina.signing import generate_keypair, save_private_key, sign_release
from agentina.upgrade import RUN_PID, WATCH_PID, Installs
from fleet.choices import AuditAction
from fleet.models import Agent, AuditEvent, Release, Rollout
from fleet.services.audit import SYSTEM
from fleet.services.rollouts import rollout_start
from fleet.services.tokens import token_mint
from tests import factories
from tests.runtime import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parent.parent
BASE = agentina.__version__
GOOD, SMOKE_FAILS, CRASHES, TAMPERED, WRONG_SIGNATURE = (
    "1.99.0",
    "1.97.0",
    "1.96.0",
    "1.95.0",
    "1.94.0",
)


@dataclass
class Host:
    """One agent on a host of its own (a state dir), run as a real process."""

    name: str
    state: Path
    agent_id: int
    process: subprocess.Popen

    @property
    def installs(self) -> Installs:
        return Installs(self.state)

    def agent(self) -> Agent:
        return Agent.objects.get(pk=self.agent_id)

    def upgrade_to(self, version: str) -> None:
        args = cli.parser().parse_args(["upgrade", "--to", version, "--state-dir", str(self.state)])
        assert cli.cmd_upgrade(args) == 0

    def report(self, action: str) -> AuditEvent | None:
        return AuditEvent.objects.filter(target_id=str(self.agent_id), action=action).last()

    def runs(self, version: str) -> bool:
        """The server heard a heartbeat on `version` since the last report, and nothing is
        pending on the host."""
        agent = self.agent()
        return (
            agent.version == version
            and agent.status == "online"
            and not self.installs.load().get("pending")
            and self.installs.current_version() == version
        )

    def version_from_current(self) -> str:
        ran = subprocess.run(
            [sys.executable, "-P", "-m", "agentina", "--version"],
            env={**os.environ, "PYTHONPATH": str(self.state / "current")},
            cwd=self.state,
            capture_output=True,
            text=True,
            check=True,
        )
        return ran.stdout.strip()

    def log(self) -> str:
        texts = [f"--- {self.name}"]
        for name in ("agent.out", "restart.out", "agentina.log", "watch.log", "upgrade.json"):
            path = self.state / name
            if path.exists():
                texts.append(f"{name}:\n{path.read_text()[-3000:]}")
        return "\n".join(texts)

    def stop(self) -> None:
        """Every process this host's agent and watcher became, ended."""
        for name in (WATCH_PID, RUN_PID):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((self.state / name).read_text()), signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def publish(version: str, key_file: Path, work: Path, fault: str | None = None) -> None:
    """`manage.py release_publish VERSION --from-source`; a broken release is built with a
    test-only fault and published with --artifact."""
    source = ["--from-source"]
    if fault:
        source = ["--artifact", str(build_from_source(version, work / "builds", fault=fault))]
    call_command("release_publish", version, *source, "--signing-key", str(key_file))


def start_host(name: str, customer, server: str, work: Path, **flags: str) -> Host:
    state = work / name
    token = token_mint(customer=customer, actor=SYSTEM)[1]
    argv = ["activate", "--server", server, "--token", token, "--role", "coder"]
    argv += ["--state-dir", str(state), "--machine-id", f"m-{name}", "--hostname", name]
    for flag, value in flags.items():
        argv += [f"--{flag.replace('_', '-')}", value]
    assert cli.cmd_activate(cli.parser().parse_args(argv), Client(server)) == 0
    process = launch(state, work, "agent.out")
    return Host(name, state, json.loads((state / "agent.json").read_text())["agent_id"], process)


def launch(state: Path, work: Path, out_name: str) -> subprocess.Popen:
    """`python -m agentina run` from this repository, not under systemd (restarts are
    re-execs), with short deadlines."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "AGENTINA_START_DEADLINE": "20",
        "AGENTINA_SMOKE_DEADLINE": "10",
    }
    env.pop("INVOCATION_ID", None)
    out = open(state / out_name, "ab")  # noqa: SIM115 - the child's
    with out:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "agentina", "run", "--state-dir", str(state)],
            env=env,
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wave(customer, version: str, host: Host) -> Rollout:
    return rollout_start(
        customer=customer,
        release=Release.objects.get(version=version),
        reason="e2e",
        canary=host.agent(),
        canary_soak=timedelta(0),
        batch_watch=timedelta(0),
        throughput_drop_tolerance=Decimal("0.99"),
        online_ratio_floor=Decimal("0.1"),
        actor=SYSTEM,
    )


@pytest.fixture
def release_key(settings, tmp_path):
    private, public = generate_keypair()
    settings.RELEASE_PUBLIC_KEY = public
    settings.STORAGES = {
        **settings.STORAGES,
        "releases": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "releases")},
        },
    }
    settings.AGENT_HEARTBEAT_SECONDS = 1
    settings.AGENT_HEARTBEAT_MAX_SECONDS = 1
    return private, public


def test_agents_upgrade_for_real_and_roll_back_what_fails(
    live_server, release_key, tmp_path, capsys
):
    private, public = release_key
    key_file = save_private_key(private, tmp_path / "release.pem")
    factories.release(BASE)
    publish(GOOD, key_file, tmp_path)
    publish(SMOKE_FAILS, key_file, tmp_path, fault="smoke")
    publish(CRASHES, key_file, tmp_path, fault="crash")
    publish(TAMPERED, key_file, tmp_path)
    publish(WRONG_SIGNATURE, key_file, tmp_path)
    # One byte of a stored artifact changed; another release's signature made by a key
    # the agents never pinned (over the right statement).
    stored = Path(Release.objects.get(version=TAMPERED).artifact.path)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    wrong = Release.objects.get(version=WRONG_SIGNATURE)
    stranger, _ = generate_keypair()
    Release.objects.filter(pk=wrong.pk).update(
        signature=sign_release(stranger, WRONG_SIGNATURE, wrong.sha256, wrong.size)
    )

    customers = {name: factories.customer() for name in ("good", "smoke", "hand")}
    for customer in customers.values():
        factories.license(customer, max_agents=10)
    server = live_server.url
    hosts: dict[str, Host] = {}
    try:
        # The good one pins the key the server serves (trust on first use); the others
        # are given it, as `agentina install --release-key` would be.
        hosts["good"] = start_host("good", customers["good"], server, tmp_path)
        assert hosts["good"].installs.pinned_key() == public
        for name in ("smoke", "crash", "lkg", "tampered", "wrongsig"):
            customer = customers["smoke" if name == "smoke" else "hand"]
            hosts[name] = start_host(name, customer, server, tmp_path, release_key=public)
        assert wait_for(
            lambda: all(h.agent().last_heartbeat_at for h in hosts.values()), timeout=20
        ), "\n".join(h.log() for h in hosts.values())

        good_wave = wave(customers["good"], GOOD, hosts["good"])
        smoke_wave = wave(customers["smoke"], SMOKE_FAILS, hosts["smoke"])
        hosts["crash"].upgrade_to(CRASHES)
        hosts["lkg"].upgrade_to(GOOD)
        hosts["tampered"].upgrade_to(TAMPERED)
        hosts["wrongsig"].upgrade_to(WRONG_SIGNATURE)

        def settled(name: str, version: str, action: str) -> None:
            host = hosts[name]
            assert wait_for(lambda: host.report(action) and host.runs(version), timeout=30), (
                host.log()
            )

        # Ordered by a wave: downloads, verifies, installs, restarts (the same process,
        # re-executed) and heartbeats 1.99.0; `agentina --version` from current agrees.
        settled("good", GOOD, AuditAction.AGENT_UPGRADE_SUCCEEDED)
        good = hosts["good"]
        assert good.process.poll() is None
        assert good.version_from_current() == GOOD
        assert good.installs.load()["previous"] == BASE
        assert {p.name for p in good.installs.versions.iterdir()} == {GOOD, BASE}
        assert not list((good.state / "outbox" / "upgrades").glob("*.json"))
        capsys.readouterr()
        status = cli.parser().parse_args(["status", "--state-dir", str(good.state)])
        assert cli.cmd_status(status) == 0
        assert f"installed    {GOOD} (current), previous {BASE}" in capsys.readouterr().out

        # Restarted by whatever starts it (systemd's ExecStart runs the installed
        # package, here this repository's 1.10.0), it runs `current`: 1.99.0.
        good.process.send_signal(signal.SIGTERM)
        assert good.process.wait(timeout=10) == 0  # idle: drained at once
        good.process = launch(good.state, tmp_path, "restart.out")

        # By hand, a version that then breaks on disk (its runner module): the next upgrade
        # crashes, its previous (this one) fails to start too, and the last known good runs.
        settled("lkg", GOOD, AuditAction.AGENT_UPGRADE_SUCCEEDED)
        lkg = hosts["lkg"]
        with open(lkg.installs.code_root(GOOD) / "agentina" / "runner.py", "a") as broken:
            broken.write('\nraise ImportError("this install broke on disk")\n')
        lkg.upgrade_to(CRASHES)

        # A smoke check that fails: rolled back to the previous version, the wave pauses.
        settled("smoke", BASE, AuditAction.AGENT_UPGRADE_SMOKE_CHECK_FAILED)
        report = hosts["smoke"].report(AuditAction.AGENT_UPGRADE_SMOKE_CHECK_FAILED)
        assert report.changes["rollback_level"] == [None, "previous"]
        assert wait_for(lambda: Rollout.objects.get(pk=smoke_wave.pk).state == "paused", 10)
        assert "smoke_check_failed" in Rollout.objects.get(pk=smoke_wave.pk).paused_reason

        # A release that cannot even start: the watcher rolls back (start_failed).
        settled("crash", BASE, AuditAction.AGENT_UPGRADE_START_FAILED)
        report = hosts["crash"].report(AuditAction.AGENT_UPGRADE_START_FAILED)
        assert report.changes["rollback_level"] == [None, "previous"]
        assert report.changes["runs"] == [None, BASE]
        assert hosts["crash"].version_from_current() == BASE

        settled("lkg", BASE, AuditAction.AGENT_UPGRADE_START_FAILED)
        report = lkg.report(AuditAction.AGENT_UPGRADE_START_FAILED)
        assert report.changes["rollback_level"] == [None, "last_known_good"]
        assert report.changes["runs"] == [None, BASE]

        # Tampered (one byte) and wrongly signed: refused before anything is unpacked,
        # and the agents keep running their version, the same process.
        for name, version in (("tampered", TAMPERED), ("wrongsig", WRONG_SIGNATURE)):
            host = hosts[name]
            assert wait_for(
                lambda h=host: h.report(AuditAction.AGENT_UPGRADE_VERIFY_FAILED), timeout=20
            ), host.log()
            assert host.process.poll() is None
            assert host.agent().version == BASE
            assert not host.installs.installed(version)
            assert host.installs.current_version() is None  # nothing was switched
        assert Rollout.objects.get(pk=good_wave.pk).state != "paused"
        assert wait_for(lambda: "running 1.99.0" in (good.state / "restart.out").read_text(), 10)
        assert good.process.poll() is None
    finally:
        for host in hosts.values():
            host.stop()

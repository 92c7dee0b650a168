"""Versioned installs without a server: the download (Range resumes), verification before
anything is unpacked, the state machine of upgrade.json (previous, last known good,
pending) driven by the new version's first start and by the start watcher, the launcher,
and the unit that restarts the agent. The real processes: tests/test_upgrade_end_to_end.py."""

import json
import os
import time
from pathlib import Path

import pytest

from agentina import artifact, cli, upgrade
from agentina.client import Client
from agentina.outbox import Outbox, UpgradeReport
from agentina.runner import Runner, command_executor, simulated_executor
from agentina.service import EXIT_REFUSED, EXIT_RESTART
from agentina.signing import generate_keypair, sign_release
from agentina.upgrade import (
    LAST_KNOWN_GOOD,
    NEW,
    PREVIOUS,
    Deadlines,
    Installs,
    RestartRequested,
    VerifyFailed,
    VersionedUpgrader,
    Watcher,
    artifact_url,
    download,
    file_digest,
    verify,
)
from tests.agentina.test_cli import FakeTransport, state
from tests.agentina.test_install import read_unit, systemd_restarts

RUNNING = upgrade.agentina.__version__
PATH = "/api/v1/releases/1.99.0/artifact"


@pytest.fixture
def keys():
    return generate_keypair()


@pytest.fixture
def archive(tmp_path) -> Path:
    return artifact.build_from_source("1.99.0", tmp_path / "build")


def release_of(path: Path, private, version: str = "1.99.0", **over) -> dict:
    sha256, size = file_digest(path)
    size = over.pop("size", size)
    release = {"version": version, "sha256": sha256, "size": size, "url": PATH}
    release["signature"] = sign_release(private, version, sha256, size)
    return {**release, **over}


def installed(installs: Installs, *versions: str) -> None:
    for version in versions:
        package = installs.code_root(version) / "agentina"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f'__version__ = "{version}"\n')


# --- verify and download ------------------------------------------------------------------


def test_verify_accepts_the_signed_artifact_and_refuses_any_difference(tmp_path, archive, keys):
    private, public = keys
    release = release_of(archive, private)
    verify(archive, release, public)
    tampered = tmp_path / "tampered.tar.gz"
    data = bytearray(archive.read_bytes())
    data[100] ^= 0x01  # one byte
    tampered.write_bytes(bytes(data))
    with pytest.raises(VerifyFailed, match="SHA-256 does not match"):
        verify(tampered, release, public)
    with pytest.raises(VerifyFailed, match="signature was refused"):
        verify(archive, release, generate_keypair()[1])  # another key signed it
    with pytest.raises(VerifyFailed, match="64 bytes, got 63"):
        verify(archive, {**release, "signature": release["signature"][:84]}, public)
    longer = release_of(archive, private, size=release["size"] + 1)  # signed, but wrong
    with pytest.raises(VerifyFailed, match="bytes, the release says"):
        verify(archive, longer, public)
    with pytest.raises(VerifyFailed, match="no release signing key is pinned"):
        verify(archive, release, None)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/releases/../agents/me",
        "/api/v1/releases/1.99.0/../../../etc/passwd",
        "https://evil.example/api/v1/releases/1.99.0/artifact",
        "//evil.example/api/v1/releases/x",
        "/api/v1/agents/me",
        "/api/v1/releases/1.99.0/artifact\n",
        None,
    ],
)
def test_an_artifact_url_off_the_release_paths_is_refused(url):
    with pytest.raises(VerifyFailed, match="not a release path"):
        artifact_url("https://cp.test", url)


def test_a_broken_download_resumes_with_range(tmp_path, archive, httpserver):
    data = archive.read_bytes()
    seen = []

    def ranged(request):
        from werkzeug.wrappers import Response

        seen.append((request.headers.get("Range"), request.headers.get("Authorization")))
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
        served = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return Response(data[start:], status=206, headers={"Content-Range": served})

    httpserver.expect_request(PATH).respond_with_handler(ranged)
    part = tmp_path / "downloads" / "1.99.0.tar.gz.part"
    part.parent.mkdir()
    part.write_bytes(data[:1000])  # what a broken download left
    download(httpserver.url_for(PATH), "agtn_agt_s", part, len(data))
    assert part.read_bytes() == data
    assert seen == [("bytes=1000-", "Bearer agtn_agt_s")]


def test_a_resume_from_elsewhere_is_not_appended(tmp_path, archive, httpserver):
    from werkzeug.wrappers import Response

    data = archive.read_bytes()
    answers = [Response(data[:10], status=206, headers={"Content-Range": "bytes 0-9/10"})]
    answers.append(Response(data))
    httpserver.expect_request(PATH).respond_with_handler(lambda request: answers.pop(0))
    part = tmp_path / "1.99.0.part"
    part.write_bytes(data[:1000])
    download(httpserver.url_for(PATH), "s", part, len(data), sleep=lambda s: None)
    assert part.read_bytes() == data


def test_a_server_that_ignores_range_starts_the_download_over(tmp_path, archive, httpserver):
    data = archive.read_bytes()
    httpserver.expect_request(PATH).respond_with_data(data)
    part = tmp_path / "1.99.0.part"
    part.write_bytes(b"stale bytes of another try")
    download(httpserver.url_for(PATH), "s", part, len(data))
    assert part.read_bytes() == data


def test_a_download_longer_or_shorter_than_stated_is_refused(tmp_path, archive, httpserver):
    data = archive.read_bytes()
    httpserver.expect_request(PATH).respond_with_data(data)
    with pytest.raises(VerifyFailed, match="longer than"):
        download(httpserver.url_for(PATH), "s", tmp_path / "a.part", len(data) - 1)
    with pytest.raises(VerifyFailed, match="bytes, the release says"):
        download(httpserver.url_for(PATH), "s", tmp_path / "b.part", len(data) + 1)
    assert not (tmp_path / "b.part").exists()


@pytest.mark.parametrize("fault", ["one byte", "signature", "length", "no key"])
def test_a_refused_artifact_changes_nothing_and_reports_verify_failed(
    tmp_path, archive, keys, httpserver, fault
):
    private, public = keys
    data = bytearray(archive.read_bytes())
    order = {**release_of(archive, private), "rollout_id": 3}
    if fault == "one byte":
        data[len(data) // 2] ^= 0x01
    elif fault == "signature":
        order["signature"] = sign_release(generate_keypair()[0], "1.99.0", order["sha256"], 1)
    elif fault == "length":
        data += b"\0"
    httpserver.expect_request(PATH).respond_with_data(bytes(data))
    states = tmp_path / "state"
    states.mkdir()
    if fault != "no key":
        Installs(states).pin_key(public)
    transport = FakeTransport((200, {"ok": True}))
    client = Client(httpserver.url_for("/").rstrip("/"), "s", transport, sleep=lambda s: None)
    runner = Runner(client, state(), simulated_executor(), outbox=Outbox.in_state_dir(states))
    upgrader = VersionedUpgrader(states, upgrade.run_argv(states, None), log=lambda m: None)
    runner.upgrader = upgrader
    runner._upgrade(order)  # drained: applies it, and keeps running
    _, url, body, _ = transport.calls[0]
    assert url.endswith("/agents/upgrade-result")
    assert (body["outcome"], body["to_version"]) == ("verify_failed", "1.99.0")
    pinned = {"release.key"} if fault != "no key" else set()
    assert {p.name for p in states.iterdir()} == {"downloads", "outbox", *pinned}
    assert not list((states / "downloads").iterdir())
    assert not list((states / "outbox" / "upgrades").iterdir())  # delivered
    assert runner.draining is None


# --- the state machine of upgrade.json ----------------------------------------------------


def test_switch_replaces_current_atomically_and_prune_keeps_what_it_is_told(tmp_path):
    installs = Installs(tmp_path)
    installed(installs, "1.0.0", "1.1.0", "1.2.0", "1.3.0")
    assert installs.current_version() is None
    installs.switch("1.2.0")
    installs.switch("1.3.0")
    assert os.readlink(installs.current) == "versions/1.3.0"
    assert not (tmp_path / ".current.tmp").exists()
    with pytest.raises(FileNotFoundError):
        installs.switch("9.9.9")
    assert installs.current_version() == "1.3.0"
    assert installs.prune({"1.3.0", "1.2.0", "1.0.0"}) == ["1.1.0"]
    assert sorted(p.name for p in installs.versions.iterdir()) == ["1.0.0", "1.2.0", "1.3.0"]


def test_the_running_code_is_adopted_once_as_a_version_to_roll_back_to(tmp_path):
    installs = Installs(tmp_path)
    installs.adopt_running(RUNNING)
    init = installs.code_root(RUNNING) / "agentina" / "__init__.py"
    assert f'__version__ = "{RUNNING}"' in init.read_text()
    assert not list(installs.code_root(RUNNING).rglob("__pycache__"))
    init.write_text("kept")
    installs.adopt_running(RUNNING)
    assert init.read_text() == "kept"


class Host:
    """A state dir where RUNNING (the code under test) was installed over 1.0.0."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "state"
        self.installs = Installs(self.dir)
        installed(self.installs, "0.9.0", "1.0.0", RUNNING)
        self.installs.switch(RUNNING)
        self.transport = FakeTransport()
        client = Client("http://cp.test", "s", self.transport, sleep=lambda s: None)
        self.runner = Runner(
            client, state(), simulated_executor(), outbox=Outbox.in_state_dir(self.dir)
        )
        self.upgrader = VersionedUpgrader(
            self.dir, upgrade.run_argv(self.dir, None), Deadlines(5, 5, 60), log=lambda m: None
        )
        self.pending()

    def pending(self, **over) -> None:
        with self.installs.change() as data:
            data.update({PREVIOUS: "0.9.0", LAST_KNOWN_GOOD: "0.9.0"})
            data["pending"] = {
                "from": "1.0.0",
                "to": RUNNING,
                "reported_from": "1.0.0",
                "deadline": time.time() + 5,
                "start_deadline": 5,
                "pid": os.getpid(),
                "run_argv": ["run"],
                "systemd": False,
                "unit": "agentina@coder",
                "expect": RUNNING,
                "level": NEW,
                **over,
            }

    def reports(self) -> list[UpgradeReport]:
        return Outbox.in_state_dir(self.dir).reports()


def test_a_new_version_passing_its_smoke_check_becomes_current_for_good(tmp_path, monkeypatch):
    host = Host(tmp_path)
    monkeypatch.setattr(upgrade, "smoke_check", lambda runner, deadline: None)
    assert host.upgrader.first_start(host.runner) == f"{RUNNING} passed its smoke check"
    data = host.installs.load()
    assert (data[PREVIOUS], data[LAST_KNOWN_GOOD], data["pending"]) == ("1.0.0", "0.9.0", None)
    assert data["good"]["version"] == RUNNING
    assert sorted(p.name for p in host.installs.versions.iterdir()) == sorted(
        ["0.9.0", "1.0.0", RUNNING]
    )
    assert [(r.outcome, r.from_version, r.to_version) for r in host.reports()] == [
        ("succeeded", "1.0.0", RUNNING)
    ]
    assert host.upgrader.first_start(host.runner) is None  # once


def test_a_failed_smoke_check_switches_back_and_queues_the_report(tmp_path, monkeypatch):
    host = Host(tmp_path)
    monkeypatch.setattr(upgrade, "smoke_check", lambda runner, deadline: "self-test failed")
    with pytest.raises(RestartRequested):
        host.upgrader.first_start(host.runner)
    assert host.installs.current_version() == "1.0.0"
    pending = host.installs.load()["pending"]
    assert (pending["expect"], pending["level"]) == ("1.0.0", PREVIOUS)
    [report] = host.reports()
    assert (report.outcome, report.rolled_back_to, report.rollback_level) == (
        "smoke_check_failed",
        "1.0.0",
        PREVIOUS,
    )
    assert "self-test failed" in report.detail
    # The previous version comes up: its first heartbeat settles the upgrade.
    host.upgrader.after_heartbeat("1.0.0")
    assert host.installs.load()["pending"] is None


def test_the_smoke_check_authenticates_heartbeats_and_runs_the_self_test():
    transport = FakeTransport((200, {"agent_id": 1}), (200, {"next_heartbeat_seconds": 1}))
    client = Client("http://cp.test", "s", transport, sleep=lambda s: None)
    runner = Runner(client, state(), command_executor("cat"))
    assert upgrade.smoke_check(runner, 5) is None
    assert [call[1].rsplit("/", 2)[-1] for call in transport.calls] == ["me", "heartbeat"]
    assert transport.calls[1][2]["version"] == RUNNING
    runner.executor = command_executor("cat <<< (")  # the shell cannot read it
    transport.answers.extend([(200, {}), (200, {})])
    assert "the command" in upgrade.smoke_check(runner, 5)
    slow = FakeTransport()
    slow.request = lambda *a, **k: time.sleep(2) or (200, {})
    runner.client = Client("http://cp.test", "s", slow, sleep=lambda s: None)
    assert upgrade.smoke_check(runner, 0.2) == "the smoke check did not finish within 0.2 s"


def test_the_watcher_rolls_back_to_previous_then_last_known_good_then_gives_up(
    tmp_path, monkeypatch
):
    host = Host(tmp_path)
    host.pending(deadline=time.time() - 1)  # alive (this process) but never confirmed
    restarted = []
    watcher = Watcher(host.dir, log=lambda m: None, poll=0.01)
    monkeypatch.setattr(watcher, "_restart", lambda pending, target: restarted.append(target) or 1)
    seen = host.installs.load()["pending"]
    assert watcher.escalate(seen, gone=False) is True
    assert host.installs.current_version() == "1.0.0"
    [report] = host.reports()
    assert (report.outcome, report.rolled_back_to, report.rollback_level) == (
        "start_failed",
        "1.0.0",
        PREVIOUS,
    )
    assert "did not confirm itself" in report.detail
    # 1.0.0 does not come up either (its process, pid 1 here, is "gone"): the last known good.
    seen = host.installs.load()["pending"]
    assert watcher.escalate(seen, gone=True) is True
    assert host.installs.current_version() == "0.9.0"
    [report] = host.reports()  # the same upgrade's report, replaced
    assert (report.rolled_back_to, report.rollback_level) == ("0.9.0", LAST_KNOWN_GOOD)
    assert restarted == ["1.0.0", "0.9.0"]
    # Nothing is left below the last known good: it stays current, the watcher stops.
    seen = host.installs.load()["pending"]
    assert watcher.escalate(seen, gone=True) is False
    assert host.installs.current_version() == "0.9.0"
    assert host.installs.load()["pending"] is None


def test_the_watcher_leaves_a_version_that_confirmed_itself_alone(tmp_path, monkeypatch):
    host = Host(tmp_path)
    watcher = Watcher(host.dir, log=lambda m: None, poll=0.01)
    seen = host.installs.load()["pending"]
    host.upgrader.after_heartbeat(RUNNING)  # level new: only the smoke check confirms it
    monkeypatch.setattr(upgrade, "smoke_check", lambda runner, deadline: None)
    host.upgrader.first_start(host.runner)
    assert watcher.escalate(seen, gone=True) is None  # it changed meanwhile: nothing done
    assert watcher.run() == 0
    assert host.installs.current_version() == RUNNING


def test_a_version_that_ran_long_enough_after_its_smoke_check_is_the_last_known_good(tmp_path):
    host = Host(tmp_path)
    with host.installs.change() as data:
        data.update(pending=None, good={"version": RUNNING, "since": time.time() - 30})
    host.upgrader.after_heartbeat(RUNNING)
    assert host.installs.load()[LAST_KNOWN_GOOD] == "0.9.0"  # 30 s of the 60 asked
    with host.installs.change() as data:
        data["good"]["since"] = time.time() - 61
    host.upgrader.after_heartbeat(RUNNING)
    assert host.installs.load()[LAST_KNOWN_GOOD] == RUNNING


def test_reports_wait_in_the_outbox_until_the_server_has_them(tmp_path):
    outbox = Outbox.in_state_dir(tmp_path)
    outbox.put_report(UpgradeReport("start_failed", "1.0.0", "1.1.0", "x", "1.0.0", PREVIOUS))
    outbox.put_report(UpgradeReport("start_failed", "1.0.0", "1.1.0", "y", "0.9.0", "lkg"))
    transport = FakeTransport((503, {}), (200, {"ok": True}))
    client = Client("http://cp.test", "s", transport, retries=0, sleep=lambda s: None)
    runner = Runner(client, state(), simulated_executor(), outbox=Outbox.in_state_dir(tmp_path))
    runner.send_outbox()
    assert len(runner.outbox.reports()) == 1  # the server had trouble: kept
    runner.send_outbox(now_or_never=True)
    assert runner.outbox.reports() == [] and Outbox.in_state_dir(tmp_path).reports() == []
    body = transport.calls[1][2]
    assert (body["detail"], body["rolled_back_to"], body["rollback_level"]) == ("y", "0.9.0", "lkg")


# --- restarts, the launcher, by hand ------------------------------------------------------


def test_the_unit_restarts_after_an_upgrade_within_a_start_limit(tmp_path, capsys):
    state().save(tmp_path / "state")
    args = ["install-unit", "--unit", "agentina@coder", "--state-dir", str(tmp_path / "state")]
    args += ["--unit-dir", str(tmp_path / "units")]
    assert cli.main(args) == 0
    unit = read_unit(tmp_path / "units" / "agentina@coder.service")
    assert systemd_restarts(unit, EXIT_RESTART) and not systemd_restarts(unit, EXIT_REFUSED)
    assert unit["Service"]["Restart"] == "on-failure"
    assert (unit["Unit"]["StartLimitIntervalSec"], unit["Unit"]["StartLimitBurst"]) == ("300", "10")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "systemctl restart agentina@coder" in capsys.readouterr().out
    assert cli.main([*args, "--user"]) == 0
    unit = read_unit(tmp_path / "units" / "agentina@coder.service")
    assert unit["Install"]["WantedBy"] == "default.target"
    assert "systemctl --user restart agentina@coder" in capsys.readouterr().out


def test_under_systemd_a_restart_is_an_exit_the_unit_restarts(tmp_path, monkeypatch):
    monkeypatch.setenv("INVOCATION_ID", "0123")
    assert upgrade.restart(tmp_path, ["run"]) == EXIT_RESTART == 75


def test_run_starts_from_current_when_it_is_other_code(tmp_path, monkeypatch):
    installs = Installs(tmp_path)
    execs = []
    monkeypatch.setattr(upgrade, "exec_current", lambda state_dir, argv: execs.append(argv))
    upgrade.relaunch_if_elsewhere(tmp_path, ["run"])  # no current: runs as it is
    installed(installs, "1.99.0")
    installs.switch("1.99.0")
    upgrade.relaunch_if_elsewhere(tmp_path, ["run", "--state-dir", str(tmp_path)])
    assert execs == [["run", "--state-dir", str(tmp_path)]]
    monkeypatch.setenv("AGENTINA_LAUNCHED_FROM", str(installs.code_root("1.99.0").resolve()))
    upgrade.relaunch_if_elsewhere(tmp_path, ["run"])  # it was tried: no loop
    assert len(execs) == 1


def test_upgrade_by_hand_is_taken_once_by_the_running_agent(tmp_path, capsys):
    state().save(tmp_path)
    assert cli.main(["upgrade", "--to", "1.99.0", "--state-dir", str(tmp_path)]) == 0
    upgrader = VersionedUpgrader(tmp_path, ["run"])
    assert upgrader.requested() == {"version": "1.99.0", "rollout_id": None}
    assert upgrader.requested() is None
    with pytest.raises(SystemExit):
        cli.main(["upgrade", "--to", "../1.0", "--state-dir", str(tmp_path)])
    assert "not a release version" in capsys.readouterr().err
    assert json.loads(json.dumps(upgrade.run_argv(tmp_path, "cat"))) == [
        "run",
        "--state-dir",
        str(tmp_path.resolve()),
        "--exec",
        "cat",
    ]


def test_under_systemd_the_watcher_restarts_the_unit_past_its_start_limit(tmp_path, monkeypatch):
    host = Host(tmp_path)
    ran = []
    monkeypatch.setattr(upgrade.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(upgrade.subprocess, "run", lambda argv, **kw: ran.append(argv[-2:]))
    pid = Watcher(host.dir, log=lambda m: None)._restart({"systemd": True, "unit": "a@c"}, "1.0.0")
    assert pid == 0
    assert ran == [["reset-failed", "a@c.service"], ["restart", "a@c.service"]]


def test_an_upgrade_no_watcher_can_guard_is_abandoned_before_the_switch(
    tmp_path, archive, keys, httpserver, monkeypatch
):
    """Under systemd a watcher that cannot be started (no user bus, say) abandons the
    upgrade before the switch, and says so."""
    private, public = keys
    httpserver.expect_request(PATH).respond_with_data(archive.read_bytes())
    states = tmp_path / "state"
    Installs(states).pin_key(public)
    monkeypatch.setenv("INVOCATION_ID", "0123")
    monkeypatch.setattr(upgrade.shutil, "which", lambda name: f"/usr/bin/{name}")
    refused = upgrade.subprocess.CompletedProcess([], 1, "", "Failed to connect to bus")
    monkeypatch.setattr(upgrade.subprocess, "run", lambda argv, **kw: refused)
    transport = FakeTransport((200, {"ok": True}))
    client = Client(httpserver.url_for("/").rstrip("/"), "s", transport, sleep=lambda s: None)
    runner = Runner(client, state(), simulated_executor(), outbox=Outbox.in_state_dir(states))
    runner.upgrader = VersionedUpgrader(states, ["run"], log=lambda m: None)
    runner._upgrade(release_of(archive, private))
    body = transport.calls[0][2]
    assert (body["outcome"], body["rolled_back_to"]) == ("start_failed", RUNNING)
    assert "Failed to connect to bus" in body["detail"]
    assert Installs(states).current_version() is None
    assert Installs(states).load()["pending"] is None


def test_agentina_smoke_says_whether_this_version_passes(tmp_path, capsys):
    state().save(tmp_path)
    args = cli.parser().parse_args(["smoke", "--state-dir", str(tmp_path), "--exec", "cat"])
    answers = [(200, {"agent_id": 1}), (200, {"next_heartbeat_seconds": 1})]
    passing = Client("http://cp.test", "s", FakeTransport(*answers), sleep=lambda s: None)
    assert cli.cmd_smoke(args, passing) == 0
    assert f"{RUNNING}: authenticated, heartbeat sent" in capsys.readouterr().out
    refused = FakeTransport((401, {"code": "unauthorized", "detail": "no"}))
    failing = Client("http://cp.test", "s", refused, sleep=lambda s: None)
    assert cli.cmd_smoke(args, failing) == 1
    assert f"the smoke check of {RUNNING} failed: ApiError" in capsys.readouterr().err


def upgrader_on(states: Path, server: str, *answers) -> tuple[Runner, FakeTransport]:
    transport = FakeTransport(*answers)
    client = Client(server, "s", transport, sleep=lambda s: None)
    runner = Runner(client, state(), simulated_executor(), outbox=Outbox.in_state_dir(states))
    runner.upgrader = VersionedUpgrader(states, ["run"], log=lambda m: None)
    return runner, transport


def test_an_order_whose_version_would_name_another_directory_is_refused(tmp_path):
    states = tmp_path / "host" / "state"
    runner, transport = upgrader_on(states, "http://cp.test")
    runner._upgrade({"version": "../../../escaped", "sha256": "0" * 64, "size": 1, "url": PATH})
    assert transport.calls == []  # ignored: nothing fetched, nothing to report it as
    assert not list(tmp_path.rglob("*"))  # nothing written anywhere
    # A report's file is never named by the version it carries.
    outbox = Outbox.in_state_dir(states)
    outbox.put_report(UpgradeReport("verify_failed", "1.0.0", "../../../escaped"))
    assert [p.parent.name for p in tmp_path.rglob("*.json")] == ["upgrades"]
    assert Outbox.in_state_dir(states).reports()[0].to_version == "../../../escaped"
    outbox.remove_report("../../../escaped")
    assert not list(tmp_path.rglob("*.json"))


def test_a_signed_archive_that_is_unsafe_to_unpack_is_refused(tmp_path, keys, httpserver):
    private, public = keys
    import io
    import tarfile

    hostile = tmp_path / "hostile.tar.gz"
    with tarfile.open(hostile, "w:gz") as tar:
        link = tarfile.TarInfo("agentina/__init__.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link, io.BytesIO())
    httpserver.expect_request(PATH).respond_with_data(hostile.read_bytes())
    states = tmp_path / "state"
    Installs(states).pin_key(public)
    runner, transport = upgrader_on(states, httpserver.url_for("/").rstrip("/"), (200, {}))
    runner._upgrade(release_of(hostile, private))
    body = transport.calls[0][2]
    assert (body["outcome"], "rolled_back_to" in body) == ("verify_failed", False)
    assert "is a link" in body["detail"]
    assert not Installs(states).installed("1.99.0")
    assert not list((states / "downloads").iterdir())


def test_a_smoke_check_passed_after_the_watcher_rolled_back_does_not_undo_it(tmp_path, monkeypatch):
    host = Host(tmp_path)
    watcher = Watcher(host.dir, log=lambda m: None)
    monkeypatch.setattr(watcher, "_restart", lambda pending, target: 1)

    def slow_smoke_check(runner, deadline):
        watcher.escalate(host.installs.load()["pending"], gone=False)  # past the deadline
        return None

    monkeypatch.setattr(upgrade, "smoke_check", slow_smoke_check)
    with pytest.raises(RestartRequested):
        host.upgrader.first_start(host.runner)
    data = host.installs.load()
    assert host.installs.current_version() == "1.0.0"
    assert (data["pending"]["level"], data[PREVIOUS]) == (PREVIOUS, "0.9.0")
    assert [r.outcome for r in host.reports()] == ["start_failed"]


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "x", "1e400"])
def test_a_deadline_that_is_not_a_finite_number_of_seconds_is_refused(value, monkeypatch, capsys):
    monkeypatch.setenv("AGENTINA_SMOKE_DEADLINE", value)
    assert upgrade.Deadlines().smoke == 60  # the default, not a wait thread.join refuses
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["smoke", "--deadline", value])
    assert "--deadline" in capsys.readouterr().err

"""The reference agent against a fake transport: every error path, no server needed."""

import json
import os
import stat
from collections import deque

import pytest

from agentina import cli
from agentina.client import ApiError, Client, Unreachable
from agentina.runner import Runner, Upgrader
from agentina.signing import generate_keypair
from agentina.state import AgentState
from agentina.upgrade import Installs


class FakeTransport:
    """Answers queued per call: a (status, body) pair, or an exception to raise."""

    def __init__(self, *answers):
        self.answers = deque(answers)
        self.calls = []

    def request(self, method, url, *, json=None, headers):
        self.calls.append((method, url, json, headers))
        answer = self.answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(*answers, **kwargs):
    return Client(
        "http://cp.test", "agtn_agt_secret", FakeTransport(*answers), sleep=lambda s: None, **kwargs
    )


def activate_args(tmp_path, **over):
    return cli.parser().parse_args(
        [
            "activate",
            "--server",
            "http://cp.test",
            "--token",
            "agtn_act_x",
            "--role",
            over.get("role", "coder"),
            "--state-dir",
            str(tmp_path / "state"),
            "--machine-id",
            "m1",
            "--hostname",
            "build-1",
        ]
    )


def test_activate_stores_the_secret_readable_by_its_owner_only(tmp_path, capsys):
    _, key = generate_keypair()
    fake = client(
        (201, {"agent_id": 7, "agent_secret": "agtn_agt_s", "created": True}),
        (200, {"public_key": key}),
    )
    assert cli.cmd_activate(activate_args(tmp_path), fake) == 0
    # The server's release signing key is pinned (trust on first use), asked with the secret.
    assert Installs(tmp_path / "state").pinned_key() == key
    assert fake.transport.calls[1][3]["Authorization"].startswith("Bearer agtn_agt_")
    path = tmp_path / "state" / "agent.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert (saved["agent_id"], saved["secret"], saved["unit_name"]) == (
        7,
        "agtn_agt_s",
        "agentina@coder",
    )
    assert "activated as a coder" in capsys.readouterr().out
    method, url, body, headers = fake.transport.calls[0]
    assert (method, url, headers) == ("POST", "http://cp.test/api/v1/agents/activate", {})
    assert body["machine_id"] == "m1"


def test_a_second_machine_prints_the_servers_reason_and_exits_non_zero(
    tmp_path, capsys, monkeypatch
):
    answer = (
        409,
        {
            "code": "token_already_redeemed",
            "detail": "…",
            "redeemed_by_host": "build-1",
            "redeemed_at": "2026-11-27T10:00:00Z",
        },
    )
    monkeypatch.setattr(cli, "Client", lambda server: client(answer))
    code = cli.main(
        [
            "activate",
            "--server",
            "http://cp.test",
            "--token",
            "t",
            "--role",
            "coder",
            "--state-dir",
            str(tmp_path),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "already claimed by host build-1 at 2026-11-27T10:00:00Z" in err
    assert "tokens are single-use, mint one per agent" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("status", "code", "detail"),
    [
        (401, "token_unknown", "That activation token does not exist."),
        (410, "token_expired", "This activation token expired."),
        (403, "license_full", "All 3 seats of the license are taken."),
        (422, "invalid_input", "role: Input should be 'coder'"),
    ],
)
def test_every_refusal_is_a_clear_line_not_a_traceback(
    tmp_path, capsys, monkeypatch, status, code, detail
):
    monkeypatch.setattr(
        cli, "Client", lambda server: client((status, {"code": code, "detail": detail}))
    )
    assert (
        cli.main(
            [
                "activate",
                "--server",
                "http://cp.test",
                "--token",
                "t",
                "--role",
                "coder",
                "--state-dir",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.strip() == f"agentina: {detail}"


def test_network_failures_are_retried_with_backoff_then_reported(capsys, monkeypatch, tmp_path):
    waits = []
    fake = Client(
        "http://cp.test",
        "s",
        FakeTransport(*[ConnectionError("refused")] * 4),
        retries=3,
        sleep=waits.append,
    )
    with pytest.raises(Unreachable):
        fake.me()
    assert waits == [0.5, 1.0, 2.0]
    flaky = client(ConnectionError("reset"), (503, {}), (200, {"ok": True}))
    assert flaky.call("GET", "/x") == {"ok": True}
    AgentState("http://cp.test", 1, "s", "coder", "1.0.0", "u", "m", "h").save(tmp_path)
    monkeypatch.setattr(
        cli,
        "Client",
        lambda *a: Client(
            "http://cp.test",
            "s",
            FakeTransport(*[ConnectionError("down")] * 6),
            sleep=lambda s: None,
        ),
    )
    assert cli.main(["status", "--state-dir", str(tmp_path)]) == 2
    assert "unreachable" in capsys.readouterr().err


def test_status_without_an_agent_says_what_to_do(tmp_path, capsys):
    assert cli.main(["status", "--state-dir", str(tmp_path)]) == 1
    assert "run `agentina activate` first" in capsys.readouterr().err


def test_status_prints_what_the_server_knows(tmp_path, capsys):
    AgentState("http://cp.test", 3, "s", "coder", "1.9.3", "u", "m", "h").save(tmp_path)
    me = {
        "agent_id": 3,
        "name": "coder-3",
        "host": "build-1",
        "machine_id": "m",
        "zone": "eu",
        "role": "coder",
        "version": "1.9.3",
        "status": "online",
        "last_heartbeat_at": "2026-11-27T10:00:00Z",
        "license": {
            "plan": "team",
            "seats_used": 4,
            "max_agents": 20,
            "max_concurrent_tasks_per_agent": 2,
        },
        "latest_release": "1.10.0",
        "update_available": {"version": "1.10.0", "channel": "stable"},
    }
    args = cli.parser().parse_args(["status", "--state-dir", str(tmp_path)])
    assert cli.cmd_status(args, client((200, me))) == 0
    out = capsys.readouterr().out
    assert "4 of 20 agents, 2 concurrent tasks per agent" in out
    assert "update available: 1.10.0" in out
    args = cli.parser().parse_args(["status", "--state-dir", str(tmp_path), "--json"])
    cli.cmd_status(args, client((200, me)))
    assert json.loads(capsys.readouterr().out)["agent_id"] == 3


def state():
    return AgentState("http://cp.test", 1, "s", "coder", "1.9.3", "u", "m", "h")


def test_the_runner_claims_up_to_its_cap_reports_results_and_running_jobs():
    import threading

    fake = client(
        (200, {"license": {"max_concurrent_tasks_per_agent": 2}}),  # me
        (200, {"next_heartbeat_seconds": 30, "jobs_pending": 5, "upgrade": None}),
        (200, {"id": 1, "lease_id": "l1", "payload": {"task": "a"}}),
        (200, {"id": 2, "lease_id": "l2", "payload": {"task": "b"}}),
        (200, {}),  # step 2: complete job 1
        (200, {"next_heartbeat_seconds": 30, "jobs_pending": 1, "upgrade": None}),  # names job 2
        (204, None),  # claim: another agent took it first
        (200, {}),  # step 3: fail job 2
        (200, {}),  # and its finding
        (200, {"next_heartbeat_seconds": 30, "jobs_pending": 0, "upgrade": None}),
    )
    release = threading.Event()

    def work(payload):
        if payload["task"] == "b":
            release.wait(5)
            return False, "tests broke"
        return True, {"pr": 1}

    runner = Runner(fake, state(), work, log=lambda m: None)
    runner.start()
    runner.step()
    assert sorted(runner.running) == [1, 2]  # the cap: no third claim
    runner.running[1].future.result()
    runner.step()
    release.set()
    runner.running[2].future.result()
    runner.step()
    calls = [(c[1].rsplit("/api/v1", 1)[1], c[2]) for c in fake.transport.calls]
    assert calls[4] == ("/jobs/1/complete", {"lease_id": "l1", "result": {"pr": 1}})
    # The activity rides a heartbeat only when it changed (idle in the first, working now).
    assert calls[1][1]["activity"] == "idle"
    assert calls[5] == (
        "/agents/heartbeat",
        {
            "version": "1.9.3",
            "running_job_ids": [2],
            **{"activity": "working", "provider": "", "detail": ""},
        },
    )
    assert calls[6] == ("/jobs/claim", None)
    assert calls[7] == (
        "/jobs/2/fail",
        {"lease_id": "l2", "error": "tests broke", "retryable": True},
    )
    assert calls[-1][0] == "/agents/heartbeat"  # nothing waits: no claim is sent


@pytest.mark.parametrize(
    ("smoke_ok", "outcome", "version"),
    [(True, "succeeded", "1.10.0"), (False, "smoke_check_failed", "1.9.3")],
)
def test_an_upgrade_order_drains_installs_and_reports(smoke_ok, outcome, version):
    order = {"version": "1.10.0", "rollout_id": 5, "drain": True}
    fake = client((200, {"next_heartbeat_seconds": 30, "upgrade": order}), (200, {"ok": True}))
    installed = []
    runner = Runner(
        fake,
        state(),
        lambda p: (True, None),
        log=lambda m: None,
        upgrader=Upgrader(install=installed.append, smoke_check=lambda v: smoke_ok),
    )
    runner.step()
    assert runner.state.version == version
    assert installed == (["1.10.0"] if smoke_ok else ["1.10.0", "1.9.3"])
    body = fake.transport.calls[-1][2]
    assert (body["outcome"], body["from_version"], body["to_version"]) == (
        outcome,
        "1.9.3",
        "1.10.0",
    )
    assert not any("/jobs/claim" in c[1] for c in fake.transport.calls)  # draining: no claim


def test_api_errors_keep_the_whole_answer():
    fake = client((409, {"code": "stale_lease", "detail": "gone", "job_id": 4}))
    with pytest.raises(ApiError) as exc:
        fake.complete(4, "l", None)
    assert (exc.value.status, exc.value.code, exc.value.body["job_id"]) == (409, "stale_lease", 4)

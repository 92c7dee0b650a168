"""agentina activate | install | status | run — the reference agent's command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from agentina import __version__
from agentina.client import ApiError, Client, Unreachable
from agentina.outbox import Outbox
from agentina.runner import Runner, command_executor, simulated_executor
from agentina.service import (
    DEFAULT_UNIT_DIR,
    EXIT_REFUSED,
    USER_UNIT_DIR,
    agent_command,
    state_dir_for,
    systemctl_commands,
    systemd_booted,
    unit_base_name,
    unit_file,
    unit_name_problem,
    unit_path,
    unit_write,
)
from agentina.signing import VERSION, SignatureInvalid
from agentina.state import AgentState, install_key
from agentina.upgrade import (
    RUN_PID,
    Deadlines,
    Installs,
    RestartRequested,
    VersionedUpgrader,
    relaunch_if_elsewhere,
    request_upgrade,
    restart,
    run_argv,
    seconds_valid,
    smoke_check,
    write_pid,
)
from agentina.upgrade import main as watch_main

DEFAULT_STATE_DIR = "/var/lib/agentina"
ROLES = ["coder", "reviewer", "tester", "indexer"]


def machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return uuid.uuid5(uuid.NAMESPACE_DNS, platform.node()).hex


def explain(exc: ApiError) -> str:
    """The server's reason, in words an operator can act on."""
    if exc.code == "token_already_redeemed":
        host = exc.body.get("redeemed_by_host", "another host")
        when = exc.body.get("redeemed_at", "earlier")
        return (
            f"already claimed by host {host} at {when} — tokens are single-use, mint one per agent"
        )
    if exc.code == "unit_in_use":
        return f"{exc.detail} (pass another --unit, e.g. agentina@coder-2)"
    return exc.detail


def cmd_activate(args: argparse.Namespace, client: Client | None = None) -> int:
    client = client or Client(args.server)
    identity = {
        "token": args.token,
        "install_key": install_key(args.state_dir),
        "machine_id": args.machine_id or machine_id(),
        "hostname": args.hostname or platform.node(),
        "zone": args.zone,
        "unit_name": args.unit or f"agentina@{args.role}",
        "state_dir": args.state_dir,
        "role": args.role,
        "version": args.agent_version,
    }
    if args.label:
        identity["labels"] = dict(args.label)
    answer = client.activate(**identity)
    state = AgentState(
        server=client.server,
        agent_id=answer["agent_id"],
        secret=answer["agent_secret"],
        role=args.role,
        version=args.agent_version,
        unit_name=identity["unit_name"],
        machine_id=identity["machine_id"],
        hostname=identity["hostname"],
    )
    path = state.save(args.state_dir)
    verb = "activated" if answer.get("created", True) else "recovered"
    print(
        f"Agent {answer['agent_id']} {verb} as a {args.role}; its secret is in {path} (mode 0600)."
    )
    pin_release_key(args.state_dir, args.release_key, client)
    return 0


def pin_release_key(state_dir: str, given: str | None, client: Client) -> None:
    """The key release artifacts must be signed with: --release-key, else the one the
    server serves now (trust on first use), kept in the state dir. A key pinned already
    stays unless one is given. Without one the agent refuses every artifact."""
    installs = Installs(state_dir)
    if given:
        installs.pin_key(given)
        print(f"Release signing key pinned from --release-key in {state_dir}.")
        return
    if installs.pinned_key():
        return
    try:
        served = client.signing_key(AgentState.load(state_dir).secret)
    except (ApiError, Unreachable) as exc:
        served = None
        print(f"agentina: the server's release signing key was not read ({exc})", file=sys.stderr)
    if served is None:
        print(
            "agentina: no release signing key is pinned: upgrades will be refused until "
            "`agentina activate ... --release-key KEY` pins one.",
            file=sys.stderr,
        )
        return
    try:
        installs.pin_key(served)
    except SignatureInvalid as exc:
        print(f"agentina: the server's release signing key is unusable ({exc})", file=sys.stderr)
        return
    print(f"Release signing key pinned as the server served it (trust on first use): {served}")


def _live_agent(state_dir: str, client: Client) -> AgentState | None:
    """The agent this state dir already holds, if the Control Plane still knows it."""
    try:
        state = AgentState.load(state_dir)
    except FileNotFoundError:
        return None
    probe = Client(
        state.server,
        state.secret,
        transport=client.transport,
        retries=client.retries,
        backoff=client.backoff,
        sleep=client.sleep,
    )
    try:
        probe.me()
    except ApiError as exc:
        if exc.status == 401:  # decommissioned, or its secret replaced: activate anew
            return None
        raise
    return state


def _unit_dir_writable(unit_dir: Path) -> None:
    """Checked before the token is spent: a refusal here costs nothing."""
    with contextlib.suppress(PermissionError):  # said below, in words
        unit_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(unit_dir, os.W_OK):
        raise PermissionError(
            f"cannot write the unit to {unit_dir}: run `agentina install` as root (sudo), "
            "or pass --unit-dir"
        )


def cmd_install(args: argparse.Namespace, client: Client | None = None) -> int:
    """Activate (the `activate` command itself, so a retry recovers the same agent),
    then write the systemd unit that runs it and start it. A state dir that already
    holds a living agent is not activated again: installing twice is safe, whenever."""
    args.unit = args.unit or f"agentina@{args.role}"
    # Absolute: the server keeps it, and the unit runs from /.
    args.state_dir = os.path.abspath(args.state_dir or state_dir_for(args.unit))
    unit_dir = Path(args.unit_dir)
    _unit_dir_writable(unit_dir)
    client = client or Client(args.server)
    state = _live_agent(args.state_dir, client)
    if state is None:
        cmd_activate(args, client)
        state = AgentState.load(args.state_dir)
    else:
        print(
            f"{args.state_dir} already holds agent {state.agent_id} ({state.unit_name}), "
            "known to the Control Plane: not activated again, the token is left as it was. "
            "For a second agent on this host, pass another --unit."
        )
        # A reinstall pins the release key given (a key rotation), or the server's if
        # none is pinned yet (an agent activated before releases were signed).
        pin_release_key(args.state_dir, args.release_key, client)
    path = unit_path(unit_dir, state.unit_name)
    unit_write(
        path,
        unit_file(
            unit_name=state.unit_name,
            state_dir=args.state_dir,
            role=state.role,
            server=state.server,
            command=agent_command(),
            exec_command=args.exec,
        ),
    )
    print(f"Wrote {path}.")
    commands = systemctl_commands(state.unit_name)
    systemctl = shutil.which("systemctl")
    if args.no_start or systemctl is None or not systemd_booted():
        if args.no_start:
            why = "To start it"
        elif systemctl is None:
            why = "systemctl is not here; to start it"
        else:
            why = "systemd does not run this host; to start it where it does"
        print(f"{why}, run:")
        print("\n".join(f"  {shlex.join(command)}" for command in commands))
        return 0
    for done, command in enumerate(commands):
        ran = subprocess.run(  # noqa: S603 - systemctl by its absolute path, our own arguments
            [systemctl, *command[1:]], capture_output=True, text=True, check=False
        )
        if ran.returncode != 0:
            failed = f"agentina: `{shlex.join(command)}` failed: {ran.stderr.strip()}"
            print(failed, "Fix that, then run:", file=sys.stderr, sep="\n")
            for rest in commands[done:]:
                print(f"  {shlex.join(rest)}", file=sys.stderr)
            return 1
    print(f"{state.unit_name} is enabled and running; `journalctl -u {state.unit_name}` shows it.")
    return 0


def status_lines(me: dict[str, Any]) -> list[str]:
    lic = me.get("license") or {}
    update = me.get("update_available")
    return [
        f"agent        {me['name']} (id {me['agent_id']})",
        f"host         {me['host']} ({me['machine_id']}), zone {me['zone'] or '—'}",
        f"role         {me['role']}",
        f"version      {me['version']}",
        f"state        {me['status']}, last heartbeat {me['last_heartbeat_at'] or 'never'}",
        f"license      {lic.get('plan', '—')}: {lic.get('seats_used', '?')} of "
        f"{lic.get('max_agents', '?')} agents, "
        f"{lic.get('max_concurrent_tasks_per_agent', '?')} concurrent tasks per agent",
        f"latest       {me.get('latest_release') or '—'}"
        + (f" — update available: {update['version']}" if update else " — up to date"),
    ]


def cmd_status(args: argparse.Namespace, client: Client | None = None) -> int:
    state = AgentState.load(args.state_dir)
    client = client or Client(state.server, state.secret)
    try:
        me = client.me()
    finally:
        client.close()
    if args.json:
        print(json.dumps(me, indent=2))
    else:
        print("\n".join(status_lines(me) + install_lines(Installs(args.state_dir))))
    return 0


def install_lines(installs: Installs) -> list[str]:
    """The versioned installs on this host, once an upgrade made them."""
    current = installs.current_version()
    if current is None:
        return []
    data = installs.load()
    pending = data.get("pending") or {}
    lines = [
        f"installed    {current} (current), previous {data.get('previous') or '—'}, "
        f"last known good {data.get('last_known_good') or '—'}"
    ]
    if pending:
        lines.append(
            f"upgrading    {pending.get('from')} → {pending.get('to')}: waiting for "
            f"{pending.get('expect')} to come up ({pending.get('level')})"
        )
    return lines


def cmd_run(args: argparse.Namespace, client: Client | None = None) -> int:
    argv = run_argv(args.state_dir, args.exec)
    # A versioned install runs from `current`, whatever started this process.
    relaunch_if_elsewhere(args.state_dir, argv)
    state = AgentState.load(args.state_dir)
    if Installs(args.state_dir).current_version() is not None:
        state.version = __version__  # the code running is the version it reports
    client = client or Client(state.server, state.secret)
    executor = command_executor(args.exec) if args.exec else simulated_executor()
    upgrader = VersionedUpgrader(Path(args.state_dir), argv)
    # Finished jobs' results wait in the state dir until the server has them.
    runner = Runner(
        client, state, executor, upgrader=upgrader, outbox=Outbox.in_state_dir(args.state_dir)
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    write_pid(args.state_dir, RUN_PID)
    print(f"agent {state.agent_id} running {__version__}; Ctrl-C drains and exits", flush=True)
    try:
        upgrader.first_start(runner)  # a new version proves itself (the smoke check)
        runner.run(stop)
    except RestartRequested as switched:
        client.close()
        state.save(args.state_dir)
        print(f"agentina: restarting on {switched}", flush=True)
        return restart(Path(args.state_dir), argv)
    if runner.refused is not None:
        print(
            f"agentina: the Control Plane no longer accepts agent {state.agent_id} "
            f"({runner.refused.detail}): it was decommissioned, or retired after its "
            f"ephemeral run. Exiting with status {EXIT_REFUSED}, which systemd does not "
            "restart; to run an agent here again, install it with a new token.",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    state.save(args.state_dir)  # the version may have changed
    print("drained; stopped")
    return 0


def cmd_smoke(args: argparse.Namespace, client: Client | None = None) -> int:
    """The smoke check a new version runs on its first start, by hand."""
    state = AgentState.load(args.state_dir)
    state.version = __version__
    client = client or Client(state.server, state.secret)
    executor = command_executor(args.exec) if args.exec else simulated_executor()
    runner = Runner(client, state, executor)
    try:
        problem = smoke_check(runner, args.deadline or Deadlines().smoke)
    finally:
        client.close()
    if problem:
        print(f"agentina: the smoke check of {__version__} failed: {problem}", file=sys.stderr)
        return 1
    print(f"{__version__}: authenticated, heartbeat sent, the executor's self-test passed")
    return 0


def cmd_watch(args: argparse.Namespace, client: Client | None = None) -> int:
    """Run by the old version before it switches (detached); not for people."""
    return watch_main(["watch", args.state_dir])


def cmd_upgrade(args: argparse.Namespace, client: Client | None = None) -> int:
    """Ask the running agent to apply VERSION: it drains, then installs it as it would an
    order from the server (verified, smoke-checked, watched)."""
    AgentState.load(args.state_dir)  # an agent lives here
    path = request_upgrade(args.state_dir, args.to)
    print(
        f"Asked the agent in {args.state_dir} to upgrade to {args.to} ({path}); it applies "
        "it at its next heartbeat, once its jobs are done. `agentina status` shows the result."
    )
    return 0


def cmd_install_unit(args: argparse.Namespace, client: Client | None = None) -> int:
    """The systemd unit for an agent already activated in --state-dir."""
    state_dir = os.path.abspath(args.state_dir)
    state = AgentState.load(state_dir)
    unit_dir = Path(args.unit_dir or (USER_UNIT_DIR if args.user else DEFAULT_UNIT_DIR))
    unit_dir = unit_dir.expanduser()
    path = unit_path(unit_dir, args.unit)
    unit_write(
        path,
        unit_file(
            unit_name=args.unit,
            state_dir=state_dir,
            role=state.role,
            server=state.server,
            command=agent_command(),
            exec_command=args.exec,
            user=args.user,
        ),
    )
    print(f"Wrote {path}. To start it:")
    commands = systemctl_commands(args.unit, user=args.user)
    print("\n".join(f"  {shlex.join(command)}" for command in commands))
    return 0


def unit_argument(value: str) -> str:
    """--unit: a unit name for one agent (`.service` may be left on)."""
    name = unit_base_name(value)
    problem = unit_name_problem(name)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return name


def label_argument(text: str) -> tuple[str, str]:
    """KEY=VALUE, as the server accepts labels (it says exactly what is wrong otherwise)."""
    key, sep, value = text.partition("=")
    if not sep or not key or " " in text or "\x00" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: write a label as KEY=VALUE, no spaces")
    return key, value


def activation_arguments(p: argparse.ArgumentParser, *, state_dir: str | None) -> None:
    """What `activate` and `install` both take: `install` runs `activate` with them."""
    p.add_argument("--server", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--unit", type=unit_argument, help="the systemd unit (default agentina@ROLE)")
    p.add_argument(
        "--state-dir",
        default=state_dir,
        help=f"default {state_dir}" if state_dir else "default /var/lib/agentina/INSTANCE",
    )
    p.add_argument("--zone", default="")
    p.add_argument("--machine-id")
    p.add_argument("--hostname")
    p.add_argument("--agent-version", default=__version__)
    p.add_argument(
        "--release-key",
        help="the release signing key (base64) to pin; default: the server's, on first use",
    )
    p.add_argument(
        "--label",
        action="append",
        type=label_argument,
        default=[],
        metavar="KEY=VALUE",
        help="a label jobs can require (repeat for more), e.g. --label gpu=a100",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentina", description="The Agentina reference agent.")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("activate", help="redeem a single-use token and store the agent secret")
    activation_arguments(a, state_dir=DEFAULT_STATE_DIR)
    i = sub.add_parser(
        "install", help="activate, then run the agent as a systemd service (enabled at boot)"
    )
    activation_arguments(i, state_dir=None)
    i.add_argument("--unit-dir", default=DEFAULT_UNIT_DIR)
    i.add_argument("--no-start", action="store_true", help="write the unit only")
    i.add_argument("--exec", help="run each job with this command (payload on stdin)")
    s = sub.add_parser("status", help="what the Control Plane knows of this agent")
    s.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    s.add_argument("--json", action="store_true")
    r = sub.add_parser(
        "run",
        help="heartbeat, claim and run jobs, obey upgrades",
        epilog=(
            "Exits 0 once stopped (SIGTERM or Ctrl-C drain it) or once an ephemeral agent's "
            f"one job is reported; {EXIT_REFUSED} when the Control Plane refuses this agent "
            "(decommissioned or retired): systemd restarts it after neither."
        ),
    )
    r.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    r.add_argument("--exec", help="run each job with this command (payload on stdin)")
    sm = sub.add_parser(
        "smoke", help="the check a new version passes on its first start (exit 1 if not)"
    )
    sm.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    sm.add_argument("--exec", help="the job command whose self-test runs")
    sm.add_argument(
        "--deadline", type=seconds_argument, help="seconds (default AGENTINA_SMOKE_DEADLINE)"
    )
    up = sub.add_parser("upgrade", help="have the running agent apply a release by hand")
    up.add_argument("--to", required=True, type=version_argument, metavar="VERSION")
    up.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    w = sub.add_parser("watch", help="(started by an upgrade) roll back a version that fails")
    w.add_argument("--state-dir", required=True)
    iu = sub.add_parser("install-unit", help="write the systemd unit for an activated agent")
    iu.add_argument("--unit", required=True, type=unit_argument)
    iu.add_argument("--state-dir", required=True)
    iu.add_argument("--user", action="store_true", help="a user unit (systemctl --user)")
    iu.add_argument("--unit-dir", help=f"default {DEFAULT_UNIT_DIR}, or {USER_UNIT_DIR}")
    iu.add_argument("--exec", help="run each job with this command (payload on stdin)")
    return p


def seconds_argument(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds_valid(seconds):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def version_argument(value: str) -> str:
    if not VERSION.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a release version")
    return value


COMMANDS = {
    "activate": cmd_activate,
    "install": cmd_install,
    "status": cmd_status,
    "run": cmd_run,
    "smoke": cmd_smoke,
    "upgrade": cmd_upgrade,
    "watch": cmd_watch,
    "install-unit": cmd_install_unit,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ApiError as exc:
        print(f"agentina: {explain(exc)}", file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"agentina: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError) as exc:
        print(f"agentina: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

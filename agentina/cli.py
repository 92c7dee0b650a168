"""agentina activate | status | run — the reference agent's command line."""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from agentina import __version__
from agentina.client import ApiError, Client, Unreachable
from agentina.outbox import Outbox
from agentina.runner import Runner, command_executor, simulated_executor
from agentina.state import AgentState, install_key

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
    print(json.dumps(me, indent=2) if args.json else "\n".join(status_lines(me)))
    return 0


def cmd_run(args: argparse.Namespace, client: Client | None = None) -> int:
    state = AgentState.load(args.state_dir)
    client = client or Client(state.server, state.secret)
    executor = command_executor(args.exec) if args.exec else simulated_executor()
    # Finished jobs' results wait in the state dir until the server has them.
    runner = Runner(client, state, executor, outbox=Outbox.in_state_dir(args.state_dir))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"agent {state.agent_id} running; Ctrl-C drains and exits")
    runner.run(stop)
    state.save(args.state_dir)  # the version may have changed
    print("drained; stopped")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentina", description="The Agentina reference agent.")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("activate", help="redeem a single-use token and store the agent secret")
    a.add_argument("--server", required=True)
    a.add_argument("--token", required=True)
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--unit")
    a.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    a.add_argument("--zone", default="")
    a.add_argument("--machine-id")
    a.add_argument("--hostname")
    a.add_argument("--agent-version", default=__version__)
    s = sub.add_parser("status", help="what the Control Plane knows of this agent")
    s.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    s.add_argument("--json", action="store_true")
    r = sub.add_parser("run", help="heartbeat, claim and run jobs, obey upgrades")
    r.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    r.add_argument("--exec", help="run each job with this command (payload on stdin)")
    return p


COMMANDS = {"activate": cmd_activate, "status": cmd_status, "run": cmd_run}


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

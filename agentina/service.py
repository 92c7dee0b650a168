"""The systemd unit that keeps an agent running. `agentina install` writes one unit per
agent, named after the unit the agent reported at activation (`agentina@coder` is the
file `agentina@coder.service`: systemd takes a file named for an instance before any
template), and its state dir follows the instance (`/var/lib/agentina/coder`)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DEFAULT_UNIT_DIR = "/etc/systemd/system"
STATE_ROOT = "/var/lib/agentina"
UNIT_SUFFIX = ".service"
# What systemd accepts in a unit name, less the escapes (`\`) we never need; one `@`
# at most, and never a bare template (`agentina@`), which cannot be started.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.-]+(@[A-Za-z0-9:_.-]+)?")
_BARE_ARGUMENT = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
# The agent drains on SIGTERM: it finishes the jobs it holds before it exits. Past the
# default job lease (300 s) the server hands an unfinished job to another agent anyway.
DRAIN_SECONDS = 300
# `agentina run` exits with this status when the Control Plane refuses the agent's secret:
# it was decommissioned, or retired after its ephemeral run. No restart can help, so the
# unit lists it in RestartPreventExitStatus=. (77 is EX_NOPERM in sysexits.h.)
EXIT_REFUSED = 77
# `agentina run` exits with this status after an upgrade switched `current`, so that the
# unit restarts it on the new version (Restart=on-failure restarts any non-zero status
# but those in RestartPreventExitStatus=). 75 is EX_TEMPFAIL in sysexits.h: "try again".
EXIT_RESTART = 75
# A unit that fails to start this many times within this many seconds is left failed
# (systemd's start limit): a crash loop stops, and the upgrade watcher rolls back.
START_LIMIT_INTERVAL_SECONDS = 300
START_LIMIT_BURST = 10
USER_UNIT_DIR = "~/.config/systemd/user"


def unit_name_problem(name: str) -> str | None:
    """Why `name` cannot name an agent's unit, or None."""
    if len(name) + len(UNIT_SUFFIX) > 255 or not _UNIT_NAME.fullmatch(name):
        return (
            f"{name!r} is not a unit name for one agent: use letters, digits and ':_.-', "
            "with at most one '@' followed by the instance, e.g. agentina@coder-2"
        )
    return None


def unit_base_name(name: str) -> str:
    """`agentina@coder.service` and `agentina@coder` are the same unit."""
    return name.removesuffix(UNIT_SUFFIX)


def state_dir_for(unit_name: str) -> str:
    """The state dir that goes with a unit: one per agent, named after its instance."""
    instance = unit_name.split("@", 1)[1] if "@" in unit_name else unit_name
    return f"{STATE_ROOT}/{instance}"


def unit_path(unit_dir: str | Path, unit_name: str) -> Path:
    return Path(unit_dir) / f"{unit_name}{UNIT_SUFFIX}"


def agent_command() -> list[str]:
    """How systemd starts this same agent, by absolute path (a unit has no PATH worth
    trusting): the `agentina` script that runs now, else this interpreter with the
    module."""
    script = Path(sys.argv[0])
    if script.name == "agentina" and script.is_file():
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "agentina.cli"]


def systemd_quote(argument: str) -> str:
    """One argument of an Exec line as systemd reads it back: plain when it can be,
    else double-quoted, with `%` (specifiers) and `$` (variables) doubled."""
    if _BARE_ARGUMENT.fullmatch(argument):
        return argument
    escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def unit_file(
    *,
    unit_name: str,
    state_dir: str,
    role: str,
    server: str,
    command: list[str],
    exec_command: str | None = None,
    user: bool = False,
) -> str:
    """The unit's text: `agentina run` on the state dir, started at boot once enabled,
    restarted when it fails and after an upgrade (EXIT_RESTART), within a start limit. A
    clean exit is final (stopped, or an ephemeral agent retired after its job), and so is
    EXIT_REFUSED: a retired agent restarted would only be refused again, forever."""
    run = [*command, "run", "--state-dir", state_dir]
    if exec_command:
        run += ["--exec", exec_command]
    lines = [
        "# Written by `agentina install`; `agentina install` again rewrites it.",
        "[Unit]",
        f"Description=Agentina {role} agent ({unit_name})",
        f"Documentation={server}/portal/",
        "Wants=network-online.target",
        "After=network-online.target",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_SECONDS}",
        f"StartLimitBurst={START_LIMIT_BURST}",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(systemd_quote(part) for part in run)}",
        "Restart=on-failure",
        f"RestartPreventExitStatus={EXIT_REFUSED}",
        "RestartSec=5",
        "Environment=PYTHONUNBUFFERED=1",
        # SIGTERM to the agent alone, which drains; its jobs' processes finish first.
        "KillMode=mixed",
        f"TimeoutStopSec={DRAIN_SECONDS}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def unit_write(path: Path, content: str) -> None:
    """Written whole or not at all (a rename), readable by all (a unit holds no
    secret: the agent's secret stays in its state dir, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(partial, 0o644)
    os.replace(partial, path)


def systemd_booted() -> bool:
    """Whether systemd runs this host, as sd_booted(3) checks it (a container may have
    systemctl without it)."""
    return Path("/run/systemd/system").is_dir()


def systemctl_commands(unit_name: str, *, user: bool = False) -> list[list[str]]:
    """What puts the unit to work: enabled for boot, and restarted rather than only
    started, so a second install (a new secret, a new unit file) takes effect at once."""
    systemctl = ["systemctl", "--user"] if user else ["systemctl"]
    return [
        [*systemctl, "daemon-reload"],
        [*systemctl, "enable", unit_name],
        [*systemctl, "restart", unit_name],
    ]

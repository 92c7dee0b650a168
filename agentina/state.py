"""The agent's state directory: its identity and secret, readable by its owner only."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "agent.json"
INSTALL_KEY_FILE = "install.key"


def install_key(state_dir: str | Path) -> str:
    """The random key this install proves itself with when it activates: made once and
    kept (mode 0600) in the state dir before the first activation request is sent, so a
    retry after a lost answer, even by a new `agentina activate`, sends the same key. It
    is the only proof the server accepts for handing the agent back; machine id,
    hostname and unit name are no secret."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / INSTALL_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


@dataclass
class AgentState:
    server: str
    agent_id: int
    secret: str
    role: str
    version: str
    unit_name: str
    machine_id: str
    hostname: str

    @classmethod
    def load(cls, state_dir: str | Path) -> AgentState:
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"No agent in {state_dir}: run `agentina activate` first (or pass --state-dir)."
            )
        return cls(**json.loads(path.read_text()))

    def save(self, state_dir: str | Path) -> Path:
        """Written with mode 0600 from the start: the secret is never world-readable."""
        directory = Path(state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle)
        os.chmod(path, 0o600)
        return path

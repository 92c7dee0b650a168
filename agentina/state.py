"""The agent's state directory: its identity and secret, readable by its owner only."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "agent.json"


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

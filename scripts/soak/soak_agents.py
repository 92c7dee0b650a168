"""One simulator process of the soak: the agents stored under --state-root (activated by
soak.py), run by the project's own simulator (agentina/simulate.py: the reference agent's
Runner and Client, one thread an agent), with every client and executor observed.

    python scripts/soak/soak_agents.py --server URL --state-root DIR --out FILE [--ramp S]

It starts the agents over --ramp seconds, writes FILE.ready once each has had a heartbeat
answered, FILE.stats every 10 s, and on SIGTERM or SIGINT notes which agents' threads are
still alive, stops them (they finish and report what they hold) and writes FILE: each
agent's heartbeats, every job it executed, and every status, 5xx and network failure its
client saw. It imports nothing from the Control Plane."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from soak_observe import Observations, ObservedClient, ObservedTransport, counted

from agentina.simulate import Fleet, SimulatedAgent

READY_TIMEOUT = 300  # seconds for every agent to have a heartbeat answered
STATS_SECONDS = 10


def _write_json(path: Path, data: Any) -> None:
    """Whole or not at all: the soak may read it at any moment."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data))
    os.replace(part, path)


def _observe(agent: SimulatedAgent, seen: Observations) -> ObservedClient:
    """Give the agent's runner an observed client (same server, secret and connection pool)
    and an executor that notes each job it starts."""
    runner = agent.runner
    plain = runner.client
    assert plain.transport is not None
    client = ObservedClient(
        plain.server, plain.secret, transport=ObservedTransport(plain.transport, seen)
    )
    runner.client = client
    runner.executor = counted(runner.executor, agent.state.agent_id, seen)
    return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--state-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ramp", type=float, default=30, help="Seconds to start them all.")
    options = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    seen = Observations()
    fleet = Fleet(
        server=options.server,
        api_key=os.environ.get("SOAK_API_KEY", ""),  # only if a stored agent was refused
        state_root=options.state_root,
        failure_rate=0.0,  # a failed job is retried by design: it would blur "run twice"
        log=log,
    )
    count = len(list(options.state_root.glob("agent-*/agent.json")))
    agents = fleet.enroll(count)  # reuses the stored agents
    clients = {agent.state.agent_id: _observe(agent, seen) for agent in agents}
    log(f"{len(agents)} agents enrolled; starting them over {options.ramp:g} s")
    for agent in agents:
        if stop.wait(options.ramp / max(1, len(agents))):
            break
        agent.start()

    ready_by = time.monotonic() + READY_TIMEOUT
    while not stop.is_set():
        beating = sum(1 for c in clients.values() if c.beats.ok)
        if beating == len(clients) or time.monotonic() > ready_by:
            _write_json(
                options.out.with_suffix(".ready"), {"agents": len(agents), "beating": beating}
            )
            break
        stop.wait(1)
    while not stop.wait(STATS_SECONDS):
        _write_json(options.out.with_suffix(".stats"), seen.summary())

    alive = {
        agent.state.agent_id: bool(agent.thread and agent.thread.is_alive()) for agent in agents
    }
    log("stopping the agents (each finishes and reports what it holds)")
    fleet.halt()
    _write_json(
        options.out,
        {
            **seen.as_json(),
            "agents": [
                {
                    "id": agent_id,
                    "alive": alive[agent_id],
                    "ok": client.beats.ok,
                    "failed": client.beats.failed,
                }
                for agent_id, client in clients.items()
            ],
        },
    )
    log("results written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

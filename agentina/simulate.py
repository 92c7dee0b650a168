"""A simulated fleet on the real API: tokens minted with a customer API key, agents
activated and run by the reference agent's own code, each in a thread. A share of them can
flap offline, fail jobs, or fail their upgrade's smoke check."""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentina.client import ApiError, Client, HttpxTransport, Unreachable
from agentina.outbox import Outbox
from agentina.runner import Runner, Upgrader, simulated_executor
from agentina.state import AgentState, install_key

ROLES = ["coder", "coder", "reviewer", "tester", "indexer"]
TOKENS_PER_CALL = 100  # the API's limit on one mint (fleet.policy.TOKENS_PER_MINT_MAX)
ZONES = ["zone-a", "zone-b"]


@dataclass
class SimulatedAgent:
    state: AgentState
    runner: Runner
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is not None:  # a restart: halt() closed the client's connections
            self.stop = threading.Event()
            self.runner.client.transport = HttpxTransport()
        self.thread = threading.Thread(target=self.runner.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def halt(self, timeout: float = 30) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout)
        self.runner.client.close()


@dataclass
class Fleet:
    server: str
    api_key: str
    state_root: Path
    version: str = "1.9.3"
    failure_rate: float = 0.05
    job_seconds: tuple[float, float] = (0.2, 1.0)  # how long a simulated job works
    smoke_failures: set[int] = field(default_factory=set)  # indexes whose smoke check fails
    log: Callable[[str], None] = print
    agents: list[SimulatedAgent] = field(default_factory=list)
    _customer: Client | None = None

    def customer(self) -> Client:
        if self._customer is None:
            self._customer = Client(self.server, self.api_key)
        return self._customer

    def enroll(self, count: int) -> list[SimulatedAgent]:
        """Run every agent stored under state_root that the server still knows
        (`seed_demo` stores its demo agents there too), and mint and activate more up to
        `count` in all."""
        states: list[AgentState] = []
        dirs: list[Path] = []
        for path in sorted(self.state_root.glob("*/agent.json")):
            state = AgentState.load(path.parent)
            probe = Client(self.server, state.secret)
            try:
                probe.me()
                states.append(state)
                dirs.append(path.parent)
            except ApiError:
                continue  # retired or from another database: mint a new one
            finally:
                probe.close()
        missing = count - len(states)
        if missing > 0:
            minted: list[dict[str, Any]] = []
            while len(minted) < missing:  # the API mints at most 100 a call
                batch = min(TOKENS_PER_CALL, missing - len(minted))
                minted += self.customer().call("POST", "/tokens", {"count": batch})["tokens"]
            hosts = max(1, math.ceil(count / 3))
            free = (n for n in itertools.count() if not (self.state_root / f"agent-{n}").exists())
            for token, i in zip(minted, free, strict=False):
                host = i % hosts
                role = ROLES[i % len(ROLES)]
                state_dir = self.state_root / f"agent-{i}"
                activation = Client(self.server)
                answer = activation.activate(
                    token=token["token"],
                    install_key=install_key(state_dir),
                    machine_id=f"sim-host-{host}",
                    hostname=f"sim-host-{host}",
                    zone=ZONES[host % len(ZONES)],
                    unit_name=f"agentina@sim-{i}",
                    state_dir=f"/var/lib/agentina/sim-{i}",
                    role=role,
                    version=self.version,
                )
                activation.close()
                state = AgentState(
                    self.server,
                    answer["agent_id"],
                    answer["agent_secret"],
                    role,
                    self.version,
                    f"agentina@sim-{i}",
                    f"sim-host-{host}",
                    f"sim-host-{host}",
                )
                state.save(state_dir)
                states.append(state)
                dirs.append(state_dir)
        for i, (state, state_dir) in enumerate(zip(states, dirs, strict=True)):
            runner = Runner(
                Client(self.server, state.secret),
                state,
                simulated_executor(self.failure_rate, self.job_seconds, rng=random.Random(i)),
                upgrader=Upgrader(smoke_check=self._smoke_check(i)),
                log=self._logger(i),
                outbox=Outbox.in_state_dir(state_dir, self._logger(i)),
            )
            self.agents.append(SimulatedAgent(state, runner))
        return self.agents

    def _smoke_check(self, index: int) -> Callable[[str], bool]:
        return lambda version: index not in self.smoke_failures

    def _logger(self, index: int) -> Callable[[str], None]:
        return lambda message: self.log(f"agent {index}: {message}")

    def start(self) -> None:
        for agent in self.agents:
            agent.start()

    def halt(self) -> None:
        for agent in self.agents:
            agent.stop.set()
        for agent in self.agents:
            agent.halt()
        if self._customer is not None:
            self._customer.close()

    def submit(self, count: int, role: str | None = None) -> list[int]:
        """Queue jobs through the customer API."""
        ids = []
        for n in range(count):
            job = self.customer().call(
                "POST",
                "/jobs",
                {
                    "role": role or ROLES[n % len(ROLES)],
                    "payload": {"repo": "demo/app", "ref": "main", "task": f"simulated task {n}"},
                },
            )
            ids.append(job["id"])
        return ids

    def workload(self, stop: threading.Event, jobs_per_minute: int = 20) -> None:
        """Keep work flowing until `stop`: at most `jobs_per_minute`, for the roles the
        fleet has, and only while fewer jobs wait than half the online agents, so the
        queue follows the fleet's capacity instead of growing without bound. Rides out
        the server's outages."""
        roles = sorted(agent.state.role for agent in self.agents) or ROLES
        n = 0
        while not stop.wait(60 / max(jobs_per_minute, 1)):
            try:
                metrics = self.customer().call("GET", "/fleet/metrics")
                if metrics["queue_depth"] >= max(1, metrics["agents_online"] // 2):
                    continue
                self.submit(1, role=roles[n % len(roles)])
                n += 1
            except (ApiError, Unreachable) as exc:
                self.log(f"workload: {exc}")

    def flap(self, stop: threading.Event, share: float, rng: random.Random) -> None:
        """Now and then an agent goes quiet for four minutes (longer than the online window)."""
        while not stop.wait(60):
            if not self.agents or rng.random() > share:
                continue
            agent = rng.choice(self.agents)
            self.log(f"agent {agent.state.agent_id} goes quiet for 4 minutes")
            agent.halt()
            if stop.wait(240):
                return
            agent.start()

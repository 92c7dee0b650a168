"""A simulated fleet on the real API: tokens minted with a customer API key, agents
activated and run by the reference agent's own code, each in a thread. A share of them can
flap offline, fail jobs, or fail their upgrade's smoke check.

Each job reports what its model calls cost, by role (coders on a large model, testers on
a small one, indexers on embeddings), twice as much on `worse_version`; now and then a job
asks a person (the simulator answers questions left open for a while, as a person on
call would); a judge reports verdicts on finished jobs through the outcome API (fewer
accepted on `worse_version`); and now and then the model provider rate-limits most of
the fleet for a few minutes (one provider incident on the Control Plane)."""

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
from agentina.runner import ANSWER, QUESTION, STOPPED, USAGE, Runner, StoppableExecutor, Upgrader
from agentina.state import AgentState, install_key

ROLES = ["coder", "coder", "reviewer", "tester", "indexer"]
TOKENS_PER_CALL = 100  # the API's limit on one mint (fleet.policy.TOKENS_PER_MINT_MAX)
ZONES = ["zone-a", "zone-b"]


# Per role: (model, provider, input tokens range, output tokens range, USD per million
# input tokens, USD per million output tokens). Roughly what such agents spend a job.
MODELS: dict[str, tuple[str, str, tuple[int, int], tuple[int, int], float, float]] = {
    "coder": ("claude-sonnet-4", "anthropic", (30_000, 120_000), (3_000, 12_000), 3.0, 15.0),
    "reviewer": ("claude-sonnet-4", "anthropic", (10_000, 40_000), (1_000, 3_000), 3.0, 15.0),
    "tester": ("claude-haiku-4", "anthropic", (5_000, 20_000), (1_000, 4_000), 0.8, 4.0),
    "indexer": ("text-embedding-3-small", "openai", (50_000, 200_000), (0, 0), 0.02, 0.0),
}
QUESTIONS = [
    ("The migration drops a column still read by the billing job. Go ahead?", ["yes", "no"]),
    ("Two flaky tests block the merge. Quarantine them or fix first?", ["quarantine", "fix"]),
    ("The ticket names two repositories. Which one?", ["app", "infra"]),
]


def job_usage(role: str, rng: random.Random, factor: float = 1.0) -> list[dict[str, Any]]:
    """What one job of `role` spent on its model calls (`factor`: a costlier release)."""
    model, provider, (in_lo, in_hi), (out_lo, out_hi), in_usd, out_usd = MODELS.get(
        role, MODELS["coder"]
    )
    tokens_in = int(rng.randint(in_lo, in_hi) * factor)
    tokens_out = int(rng.randint(out_lo, out_hi) * factor) if out_hi else 0
    cost = (tokens_in * in_usd + tokens_out * out_usd) / 1_000_000
    return [
        {
            "model": model,
            "provider": provider,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cost_usd": round(cost, 6),
        }
    ]


def demo_executor(
    state: AgentState,
    *,
    failure_rate: float,
    seconds: tuple[float, float],
    rng: random.Random,
    question_rate: float = 0.0,
    worse_version: str = "",
) -> StoppableExecutor:
    """Works for a while, fails a share, asks a person now and then, and reports usage."""

    def run(payload: dict[str, Any], stop: threading.Event) -> tuple[bool, Any]:
        if stop.wait(rng.uniform(*seconds)):
            return False, STOPPED
        if ANSWER not in payload and rng.random() < question_rate:
            text, options = rng.choice(QUESTIONS)
            return True, {QUESTION: {"text": text, "options": options}}
        factor = 2.0 if worse_version and state.version == worse_version else 1.0
        usage = job_usage(state.role, rng, factor)
        if rng.random() < failure_rate:
            return False, "simulated failure"
        summary = f"did {payload.get('task', 'the task')}"
        return True, {"summary": summary, "answer": payload.get(ANSWER), USAGE: usage}

    return StoppableExecutor(run)


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
    question_rate: float = 0.0  # the share of jobs that ask a person first
    worse_version: str = ""  # a release that costs twice as much and is accepted less
    incident: dict[str, str] | None = None  # the provider incident going on, if any
    incident_agents: set[int] = field(default_factory=set)  # the indexes it hits
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
                demo_executor(
                    state,
                    failure_rate=self.failure_rate,
                    seconds=self.job_seconds,
                    rng=random.Random(i),
                    question_rate=self.question_rate,
                    worse_version=self.worse_version,
                ),
                upgrader=Upgrader(smoke_check=self._smoke_check(i)),
                log=self._logger(i),
                outbox=Outbox.in_state_dir(state_dir, self._logger(i)),
                activity_hint=self._hint(i),
            )
            self.agents.append(SimulatedAgent(state, runner))
        return self.agents

    def _smoke_check(self, index: int) -> Callable[[str], bool]:
        return lambda version: index not in self.smoke_failures

    def _hint(self, index: int) -> Callable[[], dict[str, str] | None]:
        return lambda: self.incident if index in self.incident_agents else None

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

    def answer_questions(self, stop: threading.Event, after_seconds: float = 90) -> None:
        """A person on call: questions open longer than `after_seconds` get an answer
        (the first option, or "go ahead"), so the demo shows some waiting, never stuck."""
        while not stop.wait(15):
            try:
                open_ = self.customer().call("GET", "/questions?state=open&page_size=50")
                for question in open_["results"]:
                    if question["waited_seconds"] < after_seconds:
                        continue
                    answer = (question["options"] or ["go ahead"])[0]
                    self.customer().call(
                        "POST", f"/questions/{question['id']}/answer", {"answer": answer}
                    )
            except (ApiError, Unreachable) as exc:
                self.log(f"questions: {exc}")

    def judge(self, stop: threading.Event, rng: random.Random, accepted: float = 0.85) -> None:
        """Reviewers report verdicts on finished jobs (through the outcome API): most are
        accepted; on `worse_version` about half as many."""
        judged: set[int] = set()
        while not stop.wait(30):
            try:
                jobs = self.customer().call("GET", "/jobs?status=succeeded&page_size=50")
                for job in jobs["results"]:
                    if job["id"] in judged or job.get("verdict"):
                        continue
                    judged.add(job["id"])
                    worse = self.worse_version and job.get("agent_version") == self.worse_version
                    share = accepted / 2 if worse else accepted
                    verdict = "accepted" if rng.random() < share else "changes_requested"
                    self.customer().call(
                        "POST",
                        f"/jobs/{job['id']}/outcome",
                        {"verdict": verdict, "source": "human", "note": "simulated review"},
                    )
            except ApiError as exc:
                if exc.status in (404, 405) and exc.code in ("not_found", "method_not_allowed"):
                    self.log("judge: this server takes no outcomes; stopping")
                    return
                self.log(f"judge: {exc}")
            except Unreachable as exc:
                self.log(f"judge: {exc}")

    def provider_incidents(
        self, stop: threading.Event, rng: random.Random, every_minutes: float, minutes: float = 3
    ) -> None:
        """About every `every_minutes`, the model provider rate-limits most of the fleet for
        `minutes`: those agents report `rate_limited` (and keep working, slowly retrying)."""
        while not stop.wait(60):
            if not self.agents or every_minutes <= 0 or rng.random() > 1 / every_minutes:
                continue
            hit = {i for i in range(len(self.agents)) if rng.random() < 0.7}
            self.log(f"provider incident: anthropic rate-limits {len(hit)} agents")
            self.incident_agents = hit
            self.incident = {
                "activity": "rate_limited",
                "provider": "anthropic",
                "detail": "429 Too Many Requests; retrying with backoff",
            }
            if stop.wait(minutes * 60):
                return
            self.incident, self.incident_agents = None, set()

"""The agent's loop: heartbeat at the interval the server gives, claim jobs up to the
license's cap, run them, report findings, and obey upgrade orders (drain, install, smoke
check, roll back on failure)."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from agentina.client import ApiError, Client, Unreachable
from agentina.state import AgentState

Executor = Callable[[dict[str, Any]], tuple[bool, Any]]  # payload -> (succeeded, result)


def simulated_executor(
    failure_rate: float = 0.0,
    seconds: tuple[float, float] = (0.2, 1.0),
    rng: random.Random | None = None,
) -> Executor:
    """Pretends to work for a moment; fails a share of jobs."""
    rng = rng or random.Random()

    def run(payload: dict[str, Any]) -> tuple[bool, Any]:
        time.sleep(rng.uniform(*seconds))
        if rng.random() < failure_rate:
            return False, "simulated failure"
        return True, {"summary": f"did {payload.get('task', 'the task')}"}

    return run


def command_executor(command: str, timeout: float = 3600) -> Executor:
    """Runs `command` with the payload as JSON on stdin; stdout is the result, the exit
    code decides success."""

    def run(payload: dict[str, Any]) -> tuple[bool, Any]:
        done = subprocess.run(  # noqa: S602 - the operator's own command line
            command,
            shell=True,
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = done.stdout.strip()
        try:
            result: Any = json.loads(output) if output else None
        except json.JSONDecodeError:
            result = output
        return done.returncode == 0, result if done.returncode == 0 else (done.stderr or output)

    return run


@dataclass
class Upgrader:
    """How an upgrade is applied; the simulated one switches the reported version."""

    install: Callable[[str], None] = lambda version: None
    smoke_check: Callable[[str], bool] = lambda version: True


@dataclass
class Runner:
    client: Client
    state: AgentState
    executor: Executor
    upgrader: Upgrader = field(default_factory=Upgrader)
    log: Callable[[str], None] = print
    running: dict[int, tuple[str, Future[tuple[bool, Any]]]] = field(default_factory=dict)
    draining: dict[str, Any] | None = None
    cap: int = 1
    interval: float = 30.0

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=16)

    def start(self) -> None:
        me = self.client.me()
        self.cap = (me.get("license") or {}).get("max_concurrent_tasks_per_agent", 1)

    def step(self) -> None:
        """One turn: collect finished jobs, heartbeat, upgrade if told, and claim if room
        and the heartbeat says jobs are waiting (claim is not polled)."""
        self._collect()
        beat = self.client.heartbeat(self.state.version, list(self.running))
        self.interval = float(beat.get("next_heartbeat_seconds", 30))
        if beat.get("upgrade"):
            self.draining = beat["upgrade"]
        if self.draining:
            if not self.running:
                self._upgrade(self.draining)
            return
        waiting = beat.get("jobs_pending", 1)  # older servers do not say: try
        while waiting > 0 and len(self.running) < self.cap:
            waiting -= 1
            job = self.client.claim()
            if not job:
                break
            future = self.pool.submit(self.executor, job["payload"])
            self.running[job["id"]] = (job["lease_id"], future)

    def _collect(self) -> None:
        for job_id, (lease, future) in list(self.running.items()):
            if not future.done():
                continue
            del self.running[job_id]
            try:
                ok, result = future.result()
            except Exception as exc:
                ok, result = False, repr(exc)
            try:
                if ok:
                    self.client.complete(job_id, lease, result)
                else:
                    self.client.fail(job_id, lease, str(result), retryable=True)
                    # A finding too; repeats fold into one row on the server.
                    self.client.report(
                        f"job {job_id} failed: {str(result)[:500]}", fingerprint="job-failed"
                    )
            except ApiError as exc:
                self.log(f"job {job_id}: the server refused the result: {exc.detail}")

    def _upgrade(self, order: dict[str, Any]) -> None:
        old, new = self.state.version, order["version"]
        self.log(f"upgrading {old} → {new} (rollout {order.get('rollout_id')})")
        self.upgrader.install(new)
        if self.upgrader.smoke_check(new):
            self.state.version = new
            self.client.upgrade_result("succeeded", old, new)
        else:
            self.upgrader.install(old)  # roll back
            self.client.upgrade_result(
                "smoke_check_failed", old, new, "the smoke check failed; rolled back"
            )
        self.draining = None

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; then drain: finish what is held, then return."""
        self.start()
        while not stop.is_set():
            try:
                self.step()
            except (Unreachable, ApiError) as exc:
                self.log(f"heartbeat failed: {exc}; retrying")
            stop.wait(self.interval)
        wait([future for _, future in self.running.values()])
        self._collect()

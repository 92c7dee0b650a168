"""What the soak's clients see, recorded without changing the reference agent: every answer's
status by route, each 5xx and network failure with its time, each agent's heartbeats, and
every job an executor started. It wraps agentina/client.py's transport and client and the
runner's executor; it imports nothing from the Control Plane."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agentina.client import Answer, ApiError, Client, Transport, Unreachable
from agentina.runner import Executor

# The job's id, added to the payload the executor gets (the runner hands it the payload only).
JOB_ID = "_soak_job_id"


def route(method: str, url: str) -> str:
    """'POST https://host/api/v1/jobs/17/complete' -> 'POST /jobs/{id}/complete'."""
    path = re.sub(r"/\d+", "/{id}", urlsplit(url).path.removeprefix("/api/v1"))
    return f"{method} {path}"


class Observations:
    """One process's record; the agents' threads write it at once, so it is locked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.statuses: Counter[str] = Counter()  # "POST /agents/heartbeat 200": count
        self.server_errors: list[tuple[float, int, str]] = []  # (time, status, route)
        self.unreachable: list[tuple[float, str, str]] = []  # (time, route, error)
        self.executions: list[tuple[int, int, float]] = []  # (job id, agent id, time)

    def answered(self, where: str, status: int) -> None:
        with self._lock:
            self.statuses[f"{where} {status}"] += 1
            if status >= 500:
                self.server_errors.append((time.time(), status, where))

    def failed(self, where: str, error: str) -> None:
        with self._lock:
            self.unreachable.append((time.time(), where, error[:200]))

    def executed(self, job_id: int, agent_id: int) -> None:
        with self._lock:
            self.executions.append((job_id, agent_id, time.time()))

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {
                "answers": sum(self.statuses.values()),
                "server_errors": len(self.server_errors),
                "unreachable": len(self.unreachable),
                "executions": len(self.executions),
            }

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "statuses": dict(self.statuses),
                "server_errors": list(self.server_errors),
                "unreachable": list(self.unreachable),
                "executions": list(self.executions),
            }


class ObservedTransport:
    """A transport that notes each answer's status, and each network failure, then passes
    it on unchanged (the client's own retries are each noted)."""

    def __init__(self, inner: Transport, seen: Observations) -> None:
        self.inner, self.seen = inner, seen

    def request(
        self, method: str, url: str, *, json: Any = None, headers: dict[str, str]
    ) -> Answer:
        where = route(method, url)
        try:
            answer = self.inner.request(method, url, json=json, headers=headers)
        except ConnectionError as exc:
            self.seen.failed(where, str(exc))
            raise
        self.seen.answered(where, answer[0])
        return answer

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


@dataclass
class Heartbeats:
    """When an agent's heartbeats were answered, and when one failed for good (after the
    client's retries)."""

    ok: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)


@dataclass
class ObservedClient(Client):
    """The reference agent's client, noting its heartbeats and telling the executor which
    job it runs."""

    beats: Heartbeats = field(default_factory=Heartbeats)

    def heartbeat(
        self, version: str, running_job_ids: list[int], activity: dict[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            answer = super().heartbeat(version, running_job_ids, activity)
        except (ApiError, Unreachable):
            self.beats.failed.append(time.time())
            raise
        self.beats.ok.append(time.time())
        return answer

    def claim(self) -> dict[str, Any] | None:
        job = super().claim()
        if job:
            job["payload"] = {**job["payload"], JOB_ID: job["id"]}
        return job


def counted(executor: Executor, agent_id: int, seen: Observations) -> Executor:
    """The executor, noting each job it starts (by id) before running it."""

    def run(payload: dict[str, Any]) -> tuple[bool, Any]:
        seen.executed(int(payload.get(JOB_ID, 0)), agent_id)
        return executor(payload)

    return run

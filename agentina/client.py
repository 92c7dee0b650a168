"""The Control Plane's public API, with retries on network failures and clear errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

RETRYABLE_STATUSES = {429, 502, 503, 504}
RETRY_AFTER_CAP = 60.0  # seconds: the longest wait a server's Retry-After can impose

# An answer: (status, body), or (status, body, headers) from a transport that has them
# (a Retry-After header is honoured only then).
Answer = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]


class ApiError(Exception):
    """The server refused: its code and detail, and the rest of its answer."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{detail} ({code})")
        self.status, self.code, self.detail, self.body = status, code, detail, body


class Unreachable(Exception):
    """The server could not be reached, even after retries."""


class Transport(Protocol):
    def request(
        self, method: str, url: str, *, json: Any = None, headers: dict[str, str]
    ) -> Answer: ...


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a Retry-After header asks for (seconds, or an HTTP date), or None."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpxTransport:
    def __init__(self, timeout: float = 10.0) -> None:
        self._client = httpx.Client(timeout=timeout)

    def request(
        self, method: str, url: str, *, json: Any = None, headers: dict[str, str]
    ) -> Answer:
        try:
            response = self._client.request(method, url, json=json, headers=headers)
        except httpx.TransportError as exc:
            raise ConnectionError(str(exc)) from exc
        try:
            body = response.json() if response.content else None
        except ValueError:  # a proxy's HTML error page, say
            body = None
        return response.status_code, body, response.headers

    def close(self) -> None:
        self._client.close()


IDLE_HEADER = "X-Agentina-Idle"  # a claim's 204 says why the agent should idle


@dataclass
class Client:
    server: str
    secret: str = ""
    transport: Transport | None = None
    retries: int = 5
    backoff: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        self.transport = self.transport or HttpxTransport()
        self.last_headers: Mapping[str, str] = {}  # of the last answer that succeeded
        self.idle_reason = ""  # why the last claim got nothing, when the server said

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        """One API call. Network failures, 429 and 502 to 504 are retried with exponential
        backoff, waiting at least what a Retry-After header asks (at most
        RETRY_AFTER_CAP); any other error answer raises ApiError at once."""
        headers = {"Authorization": f"Bearer {self.secret}"} if auth and self.secret else {}
        assert self.transport is not None
        for attempt in range(self.retries + 1):
            delay = min(self.backoff * 2**attempt, 30)
            try:
                status, answer, *rest = self.transport.request(
                    method, f"{self.server}/api/v1{path}", json=body, headers=headers
                )
            except ConnectionError as exc:
                if attempt == self.retries:
                    raise Unreachable(f"{self.server} is unreachable: {exc}") from exc
            else:
                if status < 400:
                    self.last_headers = rest[0] if rest else {}
                    return answer
                if status not in RETRYABLE_STATUSES or attempt == self.retries:
                    answer = answer if isinstance(answer, dict) else {}
                    raise ApiError(
                        status,
                        answer.get("code", f"http_{status}"),
                        answer.get("detail", "The server refused."),
                        answer,
                    )
                asked = retry_after_seconds(rest[0]) if rest else None
                if asked is not None:
                    delay = min(max(delay, asked), RETRY_AFTER_CAP)
            self.sleep(delay)
        raise Unreachable(self.server)  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        """Close kept-alive connections (each holds a server thread)."""
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    # --- the agent's calls ----------------------------------------------------------------

    def activate(self, **identity: Any) -> dict[str, Any]:
        return self.call("POST", "/agents/activate", identity, auth=False)

    def heartbeat(
        self, version: str, running_job_ids: list[int], activity: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """`activity` ({"activity", "provider", "detail"}) only when it changed: the
        server keeps the last one."""
        body: dict[str, Any] = {"version": version, "running_job_ids": running_job_ids}
        return self.call("POST", "/agents/heartbeat", {**body, **(activity or {})})

    def me(self) -> dict[str, Any]:
        return self.call("GET", "/agents/me")

    def claim(self) -> dict[str, Any] | None:
        """The claimed job, or None; `idle_reason` then says why when the server said
        (`budget_exhausted`: a budget cap is reached, idle until it is raised)."""
        job = self.call("POST", "/jobs/claim")
        self.idle_reason = "" if job else self.last_headers.get(IDLE_HEADER, "")
        return job

    def complete(
        self, job_id: int, lease_id: str, result: Any, usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """`usage`: {"usage": [...], "wall_seconds": ...} when the executor reported it."""
        return self.call(
            "POST",
            f"/jobs/{job_id}/complete",
            {"lease_id": lease_id, "result": result, **(usage or {})},
        )

    def fail(
        self,
        job_id: int,
        lease_id: str,
        error: str,
        retryable: bool,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self.call(
            "POST",
            f"/jobs/{job_id}/fail",
            {
                "lease_id": lease_id,
                "error": error[:10_000],
                "retryable": retryable,
                **(usage or {}),
            },
        )

    def ask(self, job_id: int, text: str, options: list[str]) -> dict[str, Any]:
        """Ask a person about a running job; the answer comes in a heartbeat's `answers`."""
        return self.call(
            "POST", f"/jobs/{job_id}/questions", {"text": text[:4000], "options": options[:20]}
        )

    def ack(self, question_id: int) -> dict[str, Any]:
        """Say the answer arrived: heartbeats stop carrying it (idempotent)."""
        return self.call("POST", f"/questions/{question_id}/ack")

    def exit(self) -> dict[str, Any]:
        return self.call("POST", "/agents/exit")

    def stopped(self, job_id: int, lease_id: str) -> dict[str, Any]:
        return self.call("POST", f"/jobs/{job_id}/stopped", {"lease_id": lease_id})

    def upgrade_result(
        self,
        outcome: str,
        from_version: str,
        to_version: str,
        detail: str = "",
        *,
        rolled_back_to: str | None = None,
        rollback_level: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "outcome": outcome,
            "from_version": from_version,
            "to_version": to_version,
            "detail": detail[:2000],
        }
        if rolled_back_to is not None:  # sent only when said: older servers refuse them
            body["rolled_back_to"] = rolled_back_to
            body["rollback_level"] = rollback_level
        return self.call("POST", "/agents/upgrade-result", body)

    def release(self, version: str) -> dict[str, Any]:
        """A release's artifact facts: sha256, size, signature, url."""
        return self.call("GET", f"/releases/{quote(version, safe='')}")

    def signing_key(self, secret: str = "") -> str | None:
        """The release signing key the server serves (base64), or None when it has none;
        asked with the agent's secret (this client's, or the one just given)."""
        asker = (
            self
            if self.secret or not secret
            else Client(self.server, secret, self.transport, self.retries, self.backoff, self.sleep)
        )
        try:
            answer = asker.call("GET", "/releases/signing-key")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        key = (answer or {}).get("public_key") if isinstance(answer, dict) else None
        return key or None

    def report(self, message: str, severity: str = "warning", fingerprint: str = "") -> Any:
        return self.call(
            "POST",
            "/anomalies",
            {"message": message[:2000], "severity": severity, "fingerprint": fingerprint[:150]},
        )

"""The agent's loop: heartbeat at the interval the server gives, claim jobs up to the
license's cap, run them, report findings, and obey upgrade orders (drain, install, smoke
check, roll back on failure). A finished job's result goes to the outbox first and leaves
it only once the server answered it (see agentina/outbox.py).

What an executor may put in its result (a JSON object; a command prints it on stdout):
- `"agentina_usage": [{"model", "provider", "input_tokens", "output_tokens", "cost_usd"}]`,
  one item per model it used: reported with the result (and the job's wall time), then
  dropped from it. A command may instead print it on a line of its own,
  `{"agentina_usage": [...]}`, anywhere in its output.
- `"agentina_question": {"text": ..., "options": [...]}`: the job needs a person. The
  runner asks (the agent shows `waiting_for_input`), and once the answer arrives in a
  heartbeat it acknowledges it and runs the executor again with the payload plus
  `"agentina_answer"`.
The heartbeat says what the agent is doing (`activity`) when that changes: working, idle,
waiting_for_input, budget_exhausted (a claim answered so), or what `activity_hint`
reports (rate_limited or provider_error, with the provider)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from agentina.client import ApiError, Client, Unreachable
from agentina.outbox import Finished, Outbox
from agentina.state import AgentState

if TYPE_CHECKING:
    from agentina.upgrade import VersionedUpgrader

Executor = Callable[[dict[str, Any]], tuple[bool, Any]]  # payload -> (succeeded, result)
STOPPED = "stopped"  # what a stopped job's executor returns (the runner discards it)
STOP_GRACE_SECONDS = 5.0  # SIGTERM to a stopped command's processes, SIGKILL after this
STOP_POLL_SECONDS = 0.1  # how soon a running command notices it was told to stop


@dataclass(frozen=True)
class StoppableExecutor:
    """An executor that ends a job early once the runner sets that job's `stop` event (the
    Control Plane cancelled it, or it ran past its max runtime). Called with the payload
    alone, as any Executor, nothing stops it."""

    run: Callable[[dict[str, Any], threading.Event], tuple[bool, Any]]
    # The smoke check's self-test after an upgrade: what is wrong, or None.
    self_test: Callable[[], str | None] = lambda: None

    def __call__(
        self, payload: dict[str, Any], stop: threading.Event | None = None
    ) -> tuple[bool, Any]:
        return self.run(payload, stop or threading.Event())


def simulated_executor(
    failure_rate: float = 0.0,
    seconds: tuple[float, float] = (0.2, 1.0),
    rng: random.Random | None = None,
) -> StoppableExecutor:
    """Pretends to work for a moment (less when told to stop); fails a share of jobs."""
    rng = rng or random.Random()

    def run(payload: dict[str, Any], stop: threading.Event) -> tuple[bool, Any]:
        if stop.wait(rng.uniform(*seconds)):
            return False, STOPPED
        if rng.random() < failure_rate:
            return False, "simulated failure"
        return True, {"summary": f"did {payload.get('task', 'the task')}"}

    return StoppableExecutor(run)


def command_executor(
    command: str, timeout: float = 3600, grace: float = STOP_GRACE_SECONDS
) -> StoppableExecutor:
    """Runs `command` with the payload as JSON on stdin; stdout is the result, the exit
    code decides success. The command gets a process group of its own (a new session), so
    when it is stopped (told to, or past `timeout`) everything it started ends with it,
    not only the shell: see end_process_group."""

    def run(payload: dict[str, Any], stop: threading.Event) -> tuple[bool, Any]:
        deadline = time.monotonic() + timeout
        with subprocess.Popen(  # noqa: S602 - the operator's own command line
            command,
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as process:
            stdin: str | None = json.dumps(payload)
            while True:
                left = max(0.0, deadline - time.monotonic())
                try:
                    stdout, stderr = process.communicate(
                        stdin, timeout=min(STOP_POLL_SECONDS, left)
                    )
                    break
                except subprocess.TimeoutExpired:
                    stdin = None  # given once: communicate() again goes on writing it
                if stop.is_set():
                    end_process_group(process, grace)
                    return False, STOPPED
                if time.monotonic() >= deadline:
                    end_process_group(process, grace)
                    return False, f"the command ran past its {timeout:g} s timeout and was ended"
        output, usage = _usage_lines(stdout)
        try:
            result: Any = json.loads(output) if output else None
        except json.JSONDecodeError:
            result = output
        if usage and process.returncode == 0:
            result = {**(result if isinstance(result, dict) else {"output": result}), USAGE: usage}
        return process.returncode == 0, result if process.returncode == 0 else (stderr or output)

    def self_test() -> str | None:
        """The shell can read the command (`sh -n`: parsed, nothing run; a job may have
        effects a self-test must not)."""
        checked = subprocess.run(  # noqa: S603 - the operator's own command line, not run
            ["/bin/sh", "-n", "-c", command], capture_output=True, text=True, check=False
        )
        return None if checked.returncode == 0 else f"the command: {checked.stderr.strip()}"

    return StoppableExecutor(run, self_test)


USAGE = "agentina_usage"
QUESTION = "agentina_question"
ANSWER = "agentina_answer"


def _usage_lines(stdout: str) -> tuple[str, list[Any]]:
    """A command's output without its `{"agentina_usage": [...]}` lines, and their items."""
    kept, usage = [], []
    for line in stdout.splitlines():
        text = line.strip()
        if text.startswith("{") and USAGE in text:
            try:
                item = json.loads(text)
            except json.JSONDecodeError:
                item = None
            if isinstance(item, dict) and set(item) == {USAGE} and isinstance(item[USAGE], list):
                usage += item[USAGE]
                continue
        kept.append(line)
    return "\n".join(kept).strip(), usage


def split_usage(result: Any, wall_seconds: float) -> tuple[Any, dict[str, Any] | None]:
    """The result without its usage, and what complete or fail reports of it."""
    if not isinstance(result, dict) or USAGE not in result:
        return result, None
    result = dict(result)
    usage = result.pop(USAGE)
    if not isinstance(usage, list):
        return result, None
    return result, {"usage": usage[:20], "wall_seconds": round(wall_seconds, 3)}


def end_process_group(process: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM to the process group `process` leads (the shell and all it started, unless
    they moved to a session of their own), SIGKILL to whatever is left `grace` seconds
    later; returns once the shell is reaped."""
    _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(process):
        _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # all gone already
        os.killpg(process.pid, signum)


def _group_alive(process: subprocess.Popen[str]) -> bool:
    """Whether any process of the group is left. A zombie counts: an orphan that its init
    does not reap (PID 1 of some containers) keeps the wait to the full grace; harmless."""
    process.poll()  # reaps the shell once it ended
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Upgrader:
    """How an upgrade is applied. This simulated one only switches the version the agent
    reports (simulate.py, in-process tests); `agentina run` from a state dir uses the
    real one, agentina.upgrade.VersionedUpgrader, which has the same three methods."""

    install: Callable[[str], None] = lambda version: None
    smoke_check: Callable[[str], bool] = lambda version: True

    def apply(self, runner: Runner, order: dict[str, Any]) -> None:
        old, new = runner.state.version, order["version"]
        self.install(new)
        if self.smoke_check(new):
            runner.state.version = new
            runner.client.upgrade_result("succeeded", old, new)
        else:
            self.install(old)  # roll back
            runner.client.upgrade_result(
                "smoke_check_failed", old, new, "the smoke check failed; rolled back"
            )

    def requested(self) -> dict[str, Any] | None:
        """An upgrade asked for by hand, not by the server: none here."""
        return None

    def after_heartbeat(self, version: str) -> None:
        """A heartbeat went through on `version`."""


class HeldJob(NamedTuple):
    """A job the runner holds: its lease, the executor's future, and the event that asks a
    StoppableExecutor to end it."""

    lease_id: str
    future: Future[tuple[bool, Any]]
    stop_requested: threading.Event
    started: float = 0.0  # time.monotonic() when it was handed to the executor
    payload: dict[str, Any] = {}  # never mutated; kept to run it again with an answer

    def stop(self) -> None:
        """Not started yet: it never runs. Running: a StoppableExecutor ends it (a command's
        processes are terminated); any other executor runs on, its result unused."""
        self.future.cancel()
        self.stop_requested.set()


@dataclass
class Runner:
    client: Client
    state: AgentState
    executor: Executor
    upgrader: Upgrader | VersionedUpgrader = field(default_factory=Upgrader)
    log: Callable[[str], None] = print
    running: dict[int, HeldJob] = field(default_factory=dict)
    draining: dict[str, Any] | None = None
    cap: int = 1
    interval: float = 30.0
    # Results not yet acknowledged; in memory only unless given a directory (`agentina
    # run` keeps it in the state dir).
    outbox: Outbox = field(default_factory=Outbox)
    clock: Callable[[], float] = time.monotonic
    retry_base: float = 1.0  # seconds before the outbox is sent again after a fault, doubling…
    retry_cap: float = 60.0  # …up to this
    _outbox_failures: int = field(default=0, init=False)  # sends that failed in a row
    _outbox_next_at: float = field(default=float("-inf"), init=False)  # the next send's time
    # An ephemeral agent (its token said so) runs one job; once its result is delivered
    # the server has retired it, and the runner is `done`.
    ephemeral: bool = False
    claimed: int = 0
    done: bool = False
    # Set when the server refused this agent's secret at start (401): it was decommissioned
    # (an ephemeral agent retires itself), and no retry or restart can bring it back.
    refused: ApiError | None = field(default=None, init=False)
    # Jobs waiting for a person's answer, by question id: (job id, lease, payload).
    waiting: dict[int, tuple[int, str, dict[str, Any]]] = field(default_factory=dict)
    # What the agent is doing besides working or idling, when something says so (the
    # simulator's provider incidents): {"activity", "provider", "detail"} or None.
    activity_hint: Callable[[], dict[str, str] | None] = lambda: None
    budget_exhausted: bool = field(default=False, init=False)
    _activity_sent: dict[str, str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=16)

    def start(self) -> None:
        self.send_outbox()  # results a previous run could not deliver
        me = self.client.me()
        self.cap = (me.get("license") or {}).get("max_concurrent_tasks_per_agent", 1)
        self.ephemeral = bool(me.get("ephemeral"))
        if self.ephemeral:
            self.cap = 1

    def held_job_ids(self) -> list[int]:
        """The jobs heartbeats name: running ones and finished ones whose result waits in
        the outbox (so their leases are extended until the server has the result)."""
        waiting = (job_id for job_id, _, _ in self.waiting.values())
        return sorted({*self.running, *self.outbox.job_ids(), *waiting})

    def activity(self) -> dict[str, str]:
        """What the heartbeat says the agent is doing."""
        if self.waiting:
            _, _, payload = next(iter(self.waiting.values()))
            text = str(payload.get("agentina_asked", ""))[:500]
            return {"activity": "waiting_for_input", "provider": "", "detail": text}
        hint = self.activity_hint()
        if hint:
            return {"provider": "", "detail": "", **hint}
        if self.budget_exhausted:
            detail = "a budget cap is reached: idle until it is raised or the period turns"
            return {"activity": "budget_exhausted", "provider": "", "detail": detail}
        return {"activity": "working" if self.running else "idle", "provider": "", "detail": ""}

    def step(self) -> None:
        """One turn: collect finished jobs, send the outbox, heartbeat, upgrade if told,
        and claim if room and the heartbeat says jobs are waiting (claim is not polled)."""
        self._collect()
        self.send_outbox()
        if self.ephemeral and self.claimed and not self.running and not len(self.outbox):
            self.done = True  # its one job is reported: the server retired it
            self.log("ephemeral agent: its job is done and reported; it is retired")
            return
        activity = self.activity()
        changed = activity if activity != self._activity_sent else None
        beat = self.client.heartbeat(self.state.version, self.held_job_ids(), changed)
        self._activity_sent = activity
        self.interval = float(beat.get("next_heartbeat_seconds", 30))
        self.upgrader.after_heartbeat(self.state.version)
        for answer in beat.get("answers") or []:
            self._answered(answer)
        if beat.get("cancel"):
            self._stop(beat["cancel"])
        if beat.get("upgrade"):
            self.draining = beat["upgrade"]
        elif not self.draining:
            self.draining = self.upgrader.requested()
        if self.draining:
            if not self.running:
                self._upgrade(self.draining)
            return
        waiting = beat.get("jobs_pending", 1)  # older servers do not say: try
        while waiting > 0 and len(self.running) + len(self.waiting) < self.cap:
            waiting -= 1
            if self.ephemeral and self.claimed:
                break  # one job, its only one
            job = self.client.claim()
            self.budget_exhausted = getattr(self.client, "idle_reason", "") == "budget_exhausted"
            if not job:
                break
            self.claimed += 1
            self.running[job["id"]] = self._execute(job["lease_id"], job["payload"])

    def _execute(self, lease_id: str, payload: dict[str, Any]) -> HeldJob:
        stop = threading.Event()
        if isinstance(self.executor, StoppableExecutor):
            future = self.pool.submit(self.executor, payload, stop)
        else:
            future = self.pool.submit(self.executor, payload)
        return HeldJob(lease_id, future, stop, self.clock(), payload)

    def _ask(self, job_id: int, held: HeldJob, question: Any) -> None:
        """The executor needs a person: ask, and hold the job (its lease renewed by the
        heartbeats) until the answer comes."""
        question = question if isinstance(question, dict) else {"text": str(question)}
        text = str(question.get("text") or "The job needs a decision.")
        options = [str(o)[:200] for o in question.get("options") or []]
        asked = self.client.ask(job_id, text, options)
        self.waiting[asked["id"]] = (
            job_id,
            held.lease_id,
            {**held.payload, "agentina_asked": text},
        )
        self.log(f"job {job_id}: waiting for an answer to question {asked['id']}: {text[:80]}")

    def _answered(self, answer: dict[str, Any]) -> None:
        """An answer arrived (perhaps again: delivery is at least once): acknowledge it,
        and run its job on with the answer once."""
        question_id = answer["question_id"]
        held = self.waiting.pop(question_id, None)
        with contextlib.suppress(ApiError):  # a question of a job no longer held: 404
            self.client.ack(question_id)
        if held is None:
            return
        job_id, lease_id, payload = held
        payload = {k: v for k, v in payload.items() if k != "agentina_asked"}
        self.log(f"job {job_id}: answered, going on")
        self.running[job_id] = self._execute(lease_id, {**payload, ANSWER: answer["answer"]})

    def _stop(self, job_ids: list[int]) -> None:
        """Jobs the server told it to stop (cancelled, or past their max runtime): stop
        each one (see HeldJob.stop; its result, if any, is discarded), and report it
        stopped through the outbox, so the report survives faults like any result."""
        for job_id in job_ids:
            held = self.running.pop(job_id, None)
            if held is None:
                continue
            held.stop()
            self.outbox.put(Finished(job_id, held.lease_id, False, error=STOPPED, stopped=True))
            self.log(f"job {job_id}: stopped, as the Control Plane asked")
        self.send_outbox(now_or_never=True)

    def _collect(self) -> None:
        """Finished jobs move to the outbox: on disk before the server is asked."""
        for job_id, held in list(self.running.items()):
            lease, future = held.lease_id, held.future
            if not future.done():
                continue
            try:
                ok, result = future.result()
            except Exception as exc:
                ok, result = False, repr(exc)
            del self.running[job_id]
            if ok and isinstance(result, dict) and QUESTION in result:
                try:
                    self._ask(job_id, held, result[QUESTION])
                    continue
                except (ApiError, Unreachable) as exc:
                    ok, result = False, f"could not ask the question: {exc}"
            result, usage = split_usage(result, self.clock() - held.started)
            finished = (
                Finished(job_id, lease, True, result=result, usage=usage)
                if ok
                else Finished(job_id, lease, False, error=str(result), retryable=True, usage=usage)
            )
            self.outbox.put(finished)

    def send_outbox(self, *, now_or_never: bool = False) -> None:
        """Send the waiting results, unless the last try failed less than a backoff ago
        (or `now_or_never`: a last try before stopping). Acknowledged (2xx) or refused for
        good (404, a 409 `stale_lease` or `job_already_finished`, any other 4xx): removed.
        Unreachable, 429 or 5xx: kept, and the outbox waits a backoff that doubles up to
        `retry_cap` (the server is having trouble: the other results wait too)."""
        if self.clock() < self._outbox_next_at and not now_or_never:
            return
        for report in self.outbox.reports():
            try:
                self.client.upgrade_result(
                    report.outcome,
                    report.from_version,
                    report.to_version,
                    report.detail,
                    rolled_back_to=report.rolled_back_to,
                    rollback_level=report.rollback_level,
                )
            except (Unreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status != 429 and exc.status < 500:
                    self.log(f"upgrade report {report.outcome} was refused for good ({exc})")
                else:
                    self._outbox_failures += 1
                    self._outbox_next_at = self.clock() + min(
                        self.retry_base * 2**self._outbox_failures, self.retry_cap
                    )
                    self.log(f"upgrade report {report.outcome} waits in the outbox ({exc})")
                    return
            else:
                self.log(f"reported {report.outcome} for {report.to_version}")
            self.outbox.remove_report(report.to_version)
        for finished in self.outbox.entries():
            try:
                self._send(finished)
            except (Unreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and exc.status != 429 and exc.status < 500:
                    self.log(
                        f"job {finished.job_id}: the server refused the result for good "
                        f"({exc.status} {exc.code}: {exc.detail}); dropped"
                    )
                else:
                    delay = min(self.retry_base * 2**self._outbox_failures, self.retry_cap)
                    self._outbox_failures += 1
                    self._outbox_next_at = self.clock() + delay
                    self.log(
                        f"job {finished.job_id}: the result waits in the outbox ({exc}); "
                        f"sending again in {delay:.3g} s"
                    )
                    return
            else:
                self._outbox_failures = 0
            self.outbox.remove(finished.job_id)
        self._outbox_next_at = float("-inf")

    def _send(self, finished: Finished) -> None:
        if finished.stopped:
            self.client.stopped(finished.job_id, finished.lease_id)
            return
        if finished.succeeded:
            if finished.usage:
                self.client.complete(
                    finished.job_id, finished.lease_id, finished.result, finished.usage
                )
            else:
                self.client.complete(finished.job_id, finished.lease_id, finished.result)
            return
        if finished.usage:
            self.client.fail(
                finished.job_id,
                finished.lease_id,
                finished.error,
                retryable=finished.retryable,
                usage=finished.usage,
            )
        else:
            self.client.fail(
                finished.job_id, finished.lease_id, finished.error, retryable=finished.retryable
            )
        try:  # A finding too (repeats fold into one row on the server); best effort.
            self.client.report(
                f"job {finished.job_id} failed: {finished.error[:500]}", fingerprint="job-failed"
            )
        except (ApiError, Unreachable) as exc:
            self.log(f"job {finished.job_id}: the failure finding was not reported: {exc}")

    def _upgrade(self, order: dict[str, Any]) -> None:
        """Drained: apply the order (a real upgrade ends this process: RestartRequested)."""
        self.log(
            f"upgrading {self.state.version} → {order['version']} "
            f"(rollout {order.get('rollout_id')})"
        )
        try:
            self.upgrader.apply(self, order)
        finally:
            self.draining = None

    def _start_when_reachable(self, stop: threading.Event) -> bool:
        """start(), retried with backoff while the server is away (a restart, an outage);
        False when stopped first, or when the server no longer knows this agent (then
        `refused` says why)."""
        delay = self.retry_base
        while not stop.is_set():
            try:
                self.start()
                return True
            except Unreachable as exc:
                self.log(f"the Control Plane is unreachable: {exc}; retrying in {delay:.3g} s")
            except ApiError as exc:
                if exc.status == 401:
                    self.refused = exc
                    self.log(
                        f"the Control Plane refused this agent ({exc}): it was decommissioned, "
                        "or retired after its ephemeral run; stopping for good"
                    )
                    return False
                self.log(f"the Control Plane did not answer: {exc}; retrying in {delay:.3g} s")
            stop.wait(delay)
            delay = min(delay * 2, self.retry_cap)
        return False

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; then drain: finish what is held, then return. Between
        heartbeats it wakes to send outbox results whose retry is due."""
        if not self._start_when_reachable(stop):
            return
        next_beat = self.clock()
        while not stop.is_set() and not self.done:
            try:
                if self.clock() >= next_beat:
                    next_beat = self.clock() + self.interval
                    self.step()
                    next_beat = self.clock() + self.interval
                else:
                    self.send_outbox()
            except (Unreachable, ApiError) as exc:
                self.log(f"the Control Plane did not answer: {exc}; retrying")
            wake = next_beat
            if len(self.outbox):
                wake = min(wake, max(self._outbox_next_at, self.clock() + 0.1))
            stop.wait(max(0.0, wake - self.clock()))
        self.shutdown()

    def shutdown(self) -> None:
        """Drain: finish what is held and send its results; then an ephemeral agent tells
        the server it exits for good."""
        wait([held.future for held in self.running.values()])
        self._collect()
        self.send_outbox(now_or_never=True)
        if self.outbox.job_ids():
            self.log(f"{len(self.outbox)} result(s) wait in the outbox; the next run sends them")
        elif self.ephemeral and not self.done:
            self.exit_cleanly()

    def exit_cleanly(self) -> None:
        """Tell the server this ephemeral agent stops for good: it is retired, its seat
        free at once. Best effort: an agent already retired is refused, which is fine."""
        try:
            self.client.exit()
            self.log("ephemeral agent: exited cleanly; the Control Plane retired it")
        except (ApiError, Unreachable) as exc:
            self.log(f"ephemeral agent: the exit was not acknowledged ({exc})")

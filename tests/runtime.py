"""Running the real processes (Celery worker and beat) against the test database."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

CELERY = str(Path(sys.executable).parent / "celery")


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(predicate: Callable[[], bool], timeout: float = 60, interval: float = 0.1) -> bool:
    """Poll until `predicate` holds (True) or `timeout` seconds pass (False). The timeout is
    a deadline for a broken run, not a wait: a healthy one returns within an interval of
    the condition coming true, so make it generous."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (a worker finishes its task first), then reap."""
    if proc.poll() is None:
        proc.terminate()
    reap(proc)


def reap(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait for a process told to stop; SIGKILL it if it hangs. Reaped either way, so no
    child outlives the test holding a database connection."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class CeleryProcesses:
    """A running worker and beat, and the log they share."""

    log: Path
    procs: list[subprocess.Popen]

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        """Wait until `predicate` holds; fail at once, with the log, if the worker or beat
        has exited (nothing would ever make it true), or at the deadline."""

        def holds() -> bool:
            exited = [p.args[3] for p in self.procs if p.poll() is not None]
            if exited:
                raise AssertionError(
                    f"celery {' and '.join(exited)} exited while waiting for {what}:\n{self.tail()}"
                )
            return predicate()

        assert wait_for(holds, timeout), f"no {what} within {timeout} s:\n{self.tail()}"


@contextmanager
def celery_processes(tmp_path: Path, **env: str) -> Iterator[CeleryProcesses]:
    """A worker (solo pool) and beat on the test database, started together as `make run`
    starts them."""
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "beat-schedule"),
        **env,
    }
    log_path = tmp_path / "celery.log"
    log = log_path.open("w")
    procs = [
        subprocess.Popen(
            [CELERY, "-A", "config", *args],
            env=full_env,
            cwd=settings.BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for args in (
            ["worker", "--pool", "solo", "--loglevel", "INFO", "--hostname", "test-worker@%h"],
            ["beat", "--loglevel", "INFO"],
        )
    ]
    try:
        yield CeleryProcesses(log_path, procs)
    finally:
        for proc in procs:  # both told at once (once: a second signal may escalate)
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            reap(proc)
        log.close()


@contextmanager
def celery_worker_and_beat(tmp_path: Path, **env: str) -> Iterator[Path]:
    """A worker (solo pool) and beat on the test database; yields their log file."""
    with celery_processes(tmp_path, **env) as celery:
        yield celery.log


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def web_process(tmp_path: Path, **env: str) -> Iterator[str]:
    """The app under gunicorn (one sync worker: a web process of its own, with its own
    memory) on the test database; yields its base URL."""
    port = free_port()
    log = (tmp_path / f"gunicorn-{port}.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "config.wsgi",
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        env={**os.environ, "DEBUG": "true", "DATABASE_URL": database_url(), **env},
        cwd=settings.BASE_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: answers(f"{base}/api/v1/health"), timeout=60), "gunicorn is down"
        yield base
    finally:
        stop(proc)
        log.close()


@contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen]:
    """A private Redis (nothing kept on disk) that a test may kill."""
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    try:
        assert wait_for(lambda: _pings(client), timeout=60), "redis-server did not start"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _pings(client) -> bool:  # type: ignore[no-untyped-def]
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # browser screenshots
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own download does not work here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

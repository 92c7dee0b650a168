"""Run the whole Control Plane in one terminal: web (gunicorn), Celery worker, Celery beat.

Each process runs in its own session so that Ctrl-C reaches only this runner, which then
asks each child to stop with one SIGTERM (a Celery worker's warm shutdown) and waits for
it; only a child still running after the grace period is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GRACE_SECONDS = 25


def _commands(host: str, port: str) -> dict[str, list[str]]:
    return {
        "web": [
            str(BIN / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"{host}:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--access-logfile",
            "-",
        ],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--hostname",
            "worker1@agentina",
            "--concurrency",
            "2",
        ],
        "beat": [str(BIN / "celery"), "-A", "config", "beat", "--loglevel", "INFO"],
    }


def _pipe(name: str, stream: object) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sys.stdout.write(f"{name:<6} | {line}")
        sys.stdout.flush()


def _spawn(name: str, command: list[str]) -> subprocess.Popen[str]:
    """Start a child in its own session, its output prefixed with its name."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        bufsize=1,
    )
    threading.Thread(target=_pipe, args=(name, proc.stdout), daemon=True).start()
    return proc


def _wait_until_up(url: str, children: dict[str, subprocess.Popen[str]]) -> bool:
    for _ in range(120):
        if any(p.poll() is not None for p in children.values()):
            return False
        try:
            with urllib.request.urlopen(url + "api/v1/health", timeout=2):  # noqa: S310
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _stop(children: dict[str, subprocess.Popen[str]]) -> int:
    """The simulated agents first (they drain their jobs through the web), then the rest."""
    _terminate({n: children.pop(n) for n in list(children) if n.startswith("agents")})
    _terminate(children)
    return 0


def _terminate(children: dict[str, subprocess.Popen[str]]) -> None:
    """One SIGTERM each, then wait up to the grace period; kill what is still running."""
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for name, proc in children.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            print(f"runner | {name} stopped (exit {proc.returncode})", flush=True)
        except subprocess.TimeoutExpired:
            print(f"runner | {name} did not stop in {GRACE_SECONDS}s; killing it", flush=True)
            proc.kill()
            proc.wait()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def main() -> int:
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    url = f"http://{host}:{port}/"
    if not _port_free(host, int(port)):
        print(
            f"runner | {host}:{port} is already in use (another `make run`?); "
            "stop it or choose another port: PORT=9000 make run",
            flush=True,
        )
        return 1
    seed = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stdout.write(seed.stdout + seed.stderr)
    if seed.returncode:
        return seed.returncode

    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    children: dict[str, subprocess.Popen[str]] = {}
    for name, command in _commands(host, port).items():
        children[name] = _spawn(name, command)

    up = _wait_until_up(url, children)
    agents = os.environ.get("SIMULATED_AGENTS", "10")
    if up and agents != "0":
        # The demo fleets on the real API, so the demo moves by itself: every seeded agent
        # heartbeats and works, and Acme activates a few more through tokens.
        for customer, count in (("acme", agents), ("globex", "3")):
            children[f"agents-{customer}"] = _spawn(
                f"{customer}",
                [
                    sys.executable,
                    "manage.py",
                    "simulate_fleet",
                    "--customer",
                    customer,
                    "--agents",
                    count,
                    "--server",
                    url,
                ],
            )
    if up:
        print(
            f"\n  Agentina Control Plane is up: {url}\n"
            f"    staff admin  {url}admin/\n"
            f"    portal       {url}portal/\n"
            f"    API docs     {url}api/v1/docs\n\n"
            + "\n".join(f"  {line}" for line in seed.stdout.strip().splitlines())
            + f"\n\n  The demo fleets heartbeat and work through the API: {agents} agents of Acme"
            "\n  Robotics, 3 of Globex Labs (SIMULATED_AGENTS=0 to run without them)."
            "\n  Ctrl-C stops everything.\n",
            flush=True,
        )
    else:
        print("runner | the web process did not come up; stopping", flush=True)
        stopping.set()

    while not stopping.is_set():
        exited = [n for n, p in children.items() if p.poll() is not None]
        if exited:
            print(f"runner | {', '.join(exited)} exited; stopping the rest", flush=True)
            break
        stopping.wait(0.5)
    print("runner | stopping web, worker and beat…", flush=True)
    return _stop(children)


if __name__ == "__main__":
    sys.exit(main())

"""Upgrades that really happen on the host: versioned installs, an atomic switch, a restart,
a smoke check, and a start watcher that rolls back in two levels.

State dir layout:

    versions/<v>/agentina/...   one directory per installed version (PYTHONPATH root)
    current -> versions/<v>     the version `agentina run` starts (a symlink, switched by
                                renaming a new link over it, so it is never missing)
    upgrade.json                {previous, last_known_good, good, pending}
    downloads/<v>.tar.gz.part   a download in progress (a broken one resumes from here)
    release.key                 the pinned release signing key (base64 Ed25519)

An upgrade: download (resumed with Range), check size, SHA-256 and signature BEFORE
anything is unpacked (a mismatch is `verify_failed` and nothing changes), unpack into
versions/<v>, write `pending`, start the watcher from the old (known-good) code, switch
`current`, restart. The new version's first start runs the smoke check; passing it makes
the new version current for good (the old one becomes `previous`), failing it switches
back and restarts. The watcher waits for the version `pending` expects to confirm itself;
past the deadline (or when the process is gone, outside systemd) it switches back to
`previous`, and if that does not come up either, to `last_known_good` (the last version
that passed its smoke check and then ran GOOD_AFTER, a day by default).

Reports go through the persisted outbox (agentina/outbox.py), so the process that runs
next delivers them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

import agentina
from agentina import artifact, signing
from agentina.client import ApiError, Client, Unreachable
from agentina.outbox import Outbox, UpgradeReport
from agentina.service import EXIT_RESTART

if TYPE_CHECKING:
    from agentina.runner import Runner

UPGRADE_FILE = "upgrade.json"
VERSIONS_DIR = "versions"
CURRENT = "current"
DOWNLOADS_DIR = "downloads"
RELEASE_KEY_FILE = "release.key"
WATCH_LOG = "watch.log"
AGENT_LOG = "agentina.log"
RUN_PID = "run.pid"  # the process running the agent now (`agentina run`)
WATCH_PID = "watch.pid"  # the start watcher's, while one runs
PREVIOUS, LAST_KNOWN_GOOD, NEW = "previous", "last_known_good", "new"
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
ARTIFACT_PATH_PREFIX = "/api/v1/releases/"


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if seconds_valid(value) else default


def seconds_valid(value: float) -> bool:
    """A deadline a thread's join takes: positive and finite (no nan, no inf)."""
    return math.isfinite(value) and 0 < value <= threading.TIMEOUT_MAX


@dataclass(frozen=True)
class Deadlines:
    """How long a new version has to confirm itself (start), to pass its smoke check, and
    to run after it before it is the last known good. From env (short in tests)."""

    start: float = field(default_factory=lambda: _seconds("AGENTINA_START_DEADLINE", 120))
    smoke: float = field(default_factory=lambda: _seconds("AGENTINA_SMOKE_DEADLINE", 60))
    good_after: float = field(default_factory=lambda: _seconds("AGENTINA_GOOD_AFTER", 86400))


class VerifyFailed(Exception):
    """The artifact is not the one the release names and signs: nothing was changed."""


class RestartRequested(Exception):
    """`current` was switched: the process must restart to run it (see restart())."""


def running_root() -> Path:
    """The directory the running `agentina` package was imported from (its PYTHONPATH)."""
    return Path(agentina.__file__).resolve().parent.parent


# --- the state dir ------------------------------------------------------------------------


class Installs:
    """The versioned installs in a state dir and upgrade.json, changed under a file lock
    (the runner and the watcher both write it)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir)
        self.versions = self.root / VERSIONS_DIR
        self.current = self.root / CURRENT
        self.file = self.root / UPGRADE_FILE

    def code_root(self, version: str) -> Path:
        return self.versions / version

    def installed(self, version: str) -> bool:
        return (self.code_root(version) / artifact.PACKAGE / "__init__.py").is_file()

    def current_version(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            data = {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def change(self) -> Iterator[dict[str, Any]]:
        """upgrade.json to change in the block; written whole (a rename) when it ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{UPGRADE_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.load()
            yield data
            partial = self.file.with_name(f".{UPGRADE_FILE}.{os.getpid()}.tmp")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.file)

    def switch(self, version: str) -> None:
        """Point `current` at versions/<version>: a new link renamed over the old one."""
        if not self.installed(version):
            raise FileNotFoundError(f"version {version} is not installed in {self.versions}")
        partial = self.root / f".{CURRENT}.tmp"
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        os.symlink(Path(VERSIONS_DIR) / version, partial)
        os.replace(partial, self.current)

    def adopt_running(self, version: str) -> None:
        """The code running now, copied into versions/<version> if it is not there (the
        first upgrade of an agent installed by pip): something to roll back to."""
        if self.installed(version):
            return
        staging = self.versions / f".adopt-{version}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(
            artifact.source_dir(),
            staging / artifact.PACKAGE,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        shutil.rmtree(self.code_root(version), ignore_errors=True)
        os.rename(staging, self.code_root(version))

    def install(self, archive: Path, version: str) -> None:
        """Unpack a verified archive into versions/<version> (a leftover of an earlier try
        is replaced; the running version never is)."""
        target = self.code_root(version)
        if target.exists():
            if self.current_version() == version:
                raise RuntimeError(f"version {version} is current; it is not replaced")
            shutil.rmtree(target)
        artifact.unpack(archive, target)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove installed versions other than `keep`; returns what went."""
        removed: list[str] = []
        if not self.versions.is_dir():
            return removed
        for path in sorted(self.versions.iterdir()):
            if path.name in keep or path.name.startswith("."):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        return removed

    def pinned_key(self) -> str | None:
        try:
            return (self.root / RELEASE_KEY_FILE).read_text().strip() or None
        except OSError:
            return None

    def pin_key(self, public_key_b64: str) -> None:
        signing.load_public_key(public_key_b64)  # refuses what is not a key
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{RELEASE_KEY_FILE}.tmp"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(public_key_b64.strip() + "\n")
        os.replace(partial, self.root / RELEASE_KEY_FILE)


# --- download and verify ------------------------------------------------------------------


def artifact_url(server: str, url: str) -> str:
    """The artifact's URL on the agent's own server: only a path under /api/v1/releases/
    is followed (the agent's secret goes nowhere else), never one that climbs with '..'."""
    if (
        not isinstance(url, str)
        or not url.startswith(ARTIFACT_PATH_PREFIX)
        or ".." in url.split("/")
        or "\\" in url
        or "//" in url
        or any(ord(c) < 33 for c in url)
    ):
        raise VerifyFailed(f"the artifact URL {str(url)[:200]!r} is not a release path")
    return server.rstrip("/") + url


def download(
    url: str,
    secret: str,
    part: Path,
    size: int,
    *,
    attempts: int = 4,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Fetch into `part`, resuming what an earlier try left there (`Range: bytes=N-`; a
    200 answer starts over). Never writes more than `size` bytes."""
    part.parent.mkdir(parents=True, exist_ok=True)
    failure = ""
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            return
        headers = {"Authorization": f"Bearer {secret}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code == 416:
                    part.unlink(missing_ok=True)
                    failure = "the server refused the range"
                    continue
                if response.status_code == 206 and have:
                    served = response.headers.get("Content-Range", "")
                    if not served.startswith(f"bytes {have}-"):  # not where it left off
                        part.unlink(missing_ok=True)
                        failure = f"the server resumed elsewhere ({served!r})"
                        continue
                    mode, written = "ab", have
                elif response.status_code == 200:
                    mode, written = "wb", 0
                elif response.status_code == 429 or response.status_code >= 500:
                    failure = f"the server answered {response.status_code}"
                    sleep(min(0.5 * 2**attempt, 5))
                    continue
                else:
                    raise VerifyFailed(
                        f"the artifact download was refused ({response.status_code})"
                    )
                with open(part, mode) as handle:
                    for chunk in response.iter_bytes(65536):
                        written += len(chunk)
                        if written > size:
                            handle.truncate(0)
                            raise VerifyFailed(f"the artifact is longer than its {size} bytes")
                        handle.write(chunk)
                if written < size:  # the answer ended whole, short of the stated size
                    part.unlink()
                    raise VerifyFailed(f"the artifact has {written} bytes, the release says {size}")
        except httpx.HTTPError as exc:
            failure = str(exc) or type(exc).__name__
            sleep(min(0.5 * 2**attempt, 5))
    if not part.exists() or part.stat().st_size != size:
        raise Unreachable(f"the artifact download did not finish ({failure}); it resumes later")


def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify(path: Path, release: dict[str, Any], public_key_b64: str | None) -> None:
    """The signature covers this version, hash and size, and the file has that hash and
    size: else VerifyFailed."""
    if not public_key_b64:
        raise VerifyFailed("no release signing key is pinned in the state dir")
    try:
        signing.verify_release(
            public_key_b64,
            str(release["version"]),
            str(release["sha256"]),
            int(release["size"]),
            str(release["signature"]),
        )
    except (signing.SignatureInvalid, KeyError, TypeError, ValueError) as exc:
        raise VerifyFailed(f"the signature was refused: {exc}") from exc
    sha256, size = file_digest(path)
    if size != release["size"]:
        raise VerifyFailed(f"the artifact has {size} bytes, the release says {release['size']}")
    if sha256 != release["sha256"]:
        raise VerifyFailed("the artifact's SHA-256 does not match the release")


# --- processes: watcher, restart ----------------------------------------------------------


def write_pid(state_dir: str | Path, name: str) -> None:
    with contextlib.suppress(OSError):
        (Path(state_dir) / name).write_text(f"{os.getpid()}\n")


def under_systemd() -> bool:
    return bool(os.environ.get("INVOCATION_ID"))


def python_env(code_root: Path) -> dict[str, str]:
    """This environment with `code_root` first on PYTHONPATH (and no other version's)."""
    env = dict(os.environ)
    rest = [
        entry
        for entry in env.get("PYTHONPATH", "").split(os.pathsep)
        if entry and Path(entry).parent.name != VERSIONS_DIR
    ]
    env["PYTHONPATH"] = os.pathsep.join([str(code_root), *rest])
    return env


def agentina_command(*argv: str) -> list[str]:
    """`python -P -m agentina ARGV`: -P keeps the working directory off sys.path, so the
    package comes from PYTHONPATH (a versioned install), whatever the directory holds."""
    return [sys.executable, "-P", "-m", "agentina", *argv]


def pid_alive(pid: int) -> bool:
    """Alive, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn_watcher(state_dir: Path, unit_name: str) -> str | None:
    """Start the watcher from the code running now (the known-good version), detached from
    this process: under systemd as a transient unit of its own (the agent's unit kills
    what is left in its cgroup when it restarts), else in a new session. Returns why it
    could not be started, or None."""
    root = running_root()
    # This module alone (not the CLI, which imports everything): the fewer modules the
    # watcher needs, the fewer can break it.
    command = [sys.executable, "-P", "-m", "agentina.upgrade", "watch", str(state_dir)]
    systemd_run = shutil.which("systemd-run")
    if under_systemd() and systemd_run:
        started = subprocess.run(  # noqa: S603 - systemd-run, our own arguments
            [
                systemd_run,
                *systemctl_scope(),
                "--collect",
                "--quiet",
                f"--unit={unit_name}-watch-{int(time.time())}",
                f"--setenv=PYTHONPATH={root}",
                *command,
            ],
            env=python_env(root),
            capture_output=True,
            text=True,
            check=False,
        )
        return None if started.returncode == 0 else f"systemd-run: {started.stderr.strip()}"
    log = open(state_dir / WATCH_LOG, "ab")  # noqa: SIM115 - handed to the child
    with log:
        subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command,
            env=python_env(root),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return None


def systemctl_scope() -> list[str]:
    """A root agent's units are the system's; anyone else's are their user's."""
    return [] if os.geteuid() == 0 else ["--user"]


def run_argv(state_dir: str | Path, exec_command: str | None) -> list[str]:
    argv = ["run", "--state-dir", str(Path(state_dir).resolve())]
    return [*argv, "--exec", exec_command] if exec_command else argv


def exec_current(state_dir: Path, argv: list[str]) -> None:
    """Replace this process with `python -m agentina ARGV` run from `current`."""
    root = Installs(state_dir).current.resolve()
    sys.stdout.flush()
    sys.stderr.flush()
    env = python_env(root)
    env["AGENTINA_LAUNCHED_FROM"] = str(root)
    os.execve(sys.executable, agentina_command(*argv), env)  # noqa: S606 - our own interpreter


def relaunch_if_elsewhere(state_dir: str | Path, argv: list[str]) -> None:
    """`agentina run` starts from `current` when it exists and is not the code running:
    so whatever started it (systemd, a shell, the watcher), it runs the switched version."""
    installs = Installs(state_dir)
    if installs.current_version() is None or not installs.current.exists():
        return
    target = installs.current.resolve()
    if target == running_root():
        return
    if os.environ.get("AGENTINA_LAUNCHED_FROM") == str(target):
        print(f"agentina: {target} did not take over; running {running_root()}", file=sys.stderr)
        return
    exec_current(Path(state_dir), argv)


def restart(state_dir: Path, argv: list[str]) -> int:
    """After a switch: under systemd, the status the unit restarts (see EXIT_RESTART);
    else re-exec from `current` here and now (returns only if that fails)."""
    if under_systemd():
        return EXIT_RESTART
    exec_current(state_dir, argv)
    return EXIT_RESTART  # pragma: no cover - execve does not return


def end_process(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the smoke check ----------------------------------------------------------------------


def self_test(executor: Any) -> str | None:
    """The executor's self-test (its `self_test`, when it has one): a problem, or None."""
    if getattr(agentina, "__test_fault__", None) == "smoke":  # test-only: see artifact.FAULTS
        return "the executor's self-test failed (a release built to fail it)"
    check = getattr(executor, "self_test", None)
    return check() if callable(check) else None


def smoke_check(runner: Runner, deadline: float) -> str | None:
    """Authenticate (GET me), heartbeat on the running version, the executor's self-test,
    all within `deadline` seconds: None when it passed, else why not."""
    outcome: list[str | None] = []

    def check() -> None:
        try:
            runner.client.me()
            runner.client.heartbeat(agentina.__version__, runner.held_job_ids())
            outcome.append(self_test(runner.executor))
        except Exception as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=check, daemon=True, name="smoke-check")
    thread.start()
    thread.join(deadline)
    if not outcome:
        return f"the smoke check did not finish within {deadline:g} s"
    return outcome[0]


# --- the upgrader -------------------------------------------------------------------------


@dataclass
class VersionedUpgrader:
    """The real Upgrader for `agentina run` from a state dir (the Runner calls these)."""

    state_dir: Path
    run_argv: list[str]
    deadlines: Deadlines = field(default_factory=Deadlines)
    log: Callable[[str], None] = print
    refused: set[tuple[str, str]] = field(default_factory=set)  # (version, sha256) seen bad

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.installs = Installs(self.state_dir)

    # an order, by the server or by hand
    def requested(self) -> dict[str, Any] | None:
        """An upgrade asked for by hand (`agentina upgrade --to`), taken once."""
        path = self.state_dir / REQUEST_FILE
        try:
            order = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        path.unlink(missing_ok=True)
        return order if isinstance(order, dict) and order.get("version") else None

    def apply(self, runner: Runner, order: dict[str, Any]) -> None:
        old, new = agentina.__version__, str(order["version"])
        reported_from = runner.state.version
        if new == old:
            runner.client.upgrade_result("succeeded", reported_from, new, "already running it")
            return
        if not signing.VERSION.fullmatch(new):  # it names directories: checked first
            self.log(f"an upgrade order named no release version ({new[:64]!r}); ignored")
            return
        part = self.state_dir / DOWNLOADS_DIR / f"{new}.tar.gz.part"
        try:
            self.fetch(runner.client, order, part)  # Unreachable: kept, resumed next time
        except VerifyFailed as exc:
            self._abandon(runner, "verify_failed", new, str(exc))
            return
        try:
            self.installs.adopt_running(old)
            self.installs.install(part, new)
        except artifact.UnsafeArchive as exc:  # signed, yet not an archive to unpack
            self._abandon(runner, "verify_failed", new, str(exc))
            return
        except OSError as exc:  # a full disk, say: the running version stays
            self._abandon(runner, "start_failed", new, f"it could not be installed: {exc}")
            return
        finally:
            part.unlink(missing_ok=True)
        with self.installs.change() as data:
            if not data.get(LAST_KNOWN_GOOD):
                data[LAST_KNOWN_GOOD] = old  # it ran before any versioned upgrade
            data["pending"] = {
                "from": old,
                "to": new,
                "reported_from": reported_from,
                "rollout_id": order.get("rollout_id"),
                "expect": new,
                "level": NEW,
                "deadline": time.time() + self.deadlines.start,
                "start_deadline": self.deadlines.start,
                "pid": os.getpid(),
                "run_argv": self.run_argv,
                "systemd": under_systemd(),
                "unit": runner.state.unit_name,
            }
        unwatched = spawn_watcher(self.state_dir, runner.state.unit_name)
        if unwatched:
            with self.installs.change() as data:
                data["pending"] = None
            detail = f"no watcher could be started ({unwatched}); it was not switched to"
            self._abandon(runner, "start_failed", new, detail)
            return
        self.installs.switch(new)
        self.log(f"installed {new} and switched to it; restarting (the watcher stands by)")
        raise RestartRequested(new)

    def _abandon(self, runner: Runner, outcome: str, new: str, detail: str) -> None:
        """Nothing was switched: the running version stays, and the report says why (a
        start_failed also names the version the agent is back on)."""
        old = agentina.__version__
        self.log(f"upgrade to {new} abandoned: {detail}; staying on {old}")
        back = None if outcome == "verify_failed" else old
        runner.outbox.put_report(
            UpgradeReport(
                outcome,
                runner.state.version,
                new,
                detail,
                rolled_back_to=back,
                rollback_level=PREVIOUS if back else None,
            )
        )
        runner.send_outbox(now_or_never=True)

    def fetch(self, client: Client, order: dict[str, Any], part: Path) -> None:
        """The order's artifact, downloaded into `part` and verified: else VerifyFailed
        (and `part` is gone)."""
        version = str(order["version"])
        try:
            release = order if order.get("sha256") else client.release(version)
        except ApiError as exc:
            if exc.status != 404:
                raise
            raise VerifyFailed(f"release {version} is not available ({exc.code})") from exc
        if not release.get("sha256") or not release.get("url"):
            raise VerifyFailed(f"release {version} has no artifact to install")
        if str(release.get("version", version)) != version:
            raise VerifyFailed("the release answer names another version")
        size = release.get("size")
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 0 < size <= MAX_ARTIFACT_BYTES
        ):
            raise VerifyFailed(f"the artifact size {size!r} is not acceptable")
        key = (version, str(release["sha256"]))
        if key in self.refused:
            raise VerifyFailed("this artifact was refused already")
        url = artifact_url(client.server, release["url"])
        try:
            download(url, client.secret, part, size)
            verify(part, {**release, "version": version}, self.installs.pinned_key())
        except VerifyFailed:
            part.unlink(missing_ok=True)
            self.refused.add(key)
            raise

    # the new version's first start
    def first_start(self, runner: Runner) -> str | None:
        """When `pending` expects this version to prove itself: the smoke check. Passed:
        it is current for good, a `succeeded` report waits in the outbox. Failed: switched
        back to the previous version, a `smoke_check_failed` report waits, and
        RestartRequested is raised. Returns what it did, or None."""
        pending = self.installs.load().get("pending") or {}
        version = agentina.__version__
        if pending.get("expect") != version or pending.get("level") != NEW:
            return None
        problem = smoke_check(runner, self.deadlines.smoke)
        if problem is None:
            self._confirm_new(runner, pending)
            return f"{version} passed its smoke check"
        self.log(f"{version} failed its smoke check: {problem}; rolling back")
        with self.installs.change() as data:
            pending = data.get("pending") or {}
            if pending.get("expect") != version:
                return None  # the watcher acted first
            back = pending["from"]
            self.installs.switch(back)
            data["pending"] = {
                **pending,
                "expect": back,
                "level": PREVIOUS,
                "deadline": time.time() + pending.get("start_deadline", self.deadlines.start),
                "pid": os.getpid(),
                "outcome": "smoke_check_failed",
            }
            runner.outbox.put_report(
                UpgradeReport(
                    "smoke_check_failed",
                    pending.get("reported_from", back),
                    version,
                    f"the smoke check failed: {problem}; rolled back to {back}",
                    rolled_back_to=back,
                    rollback_level=PREVIOUS,
                )
            )
        raise RestartRequested(back)

    def _confirm_new(self, runner: Runner, pending: dict[str, Any]) -> None:
        version = agentina.__version__
        with self.installs.change() as data:
            if (data.get("pending") or {}).get("expect") != version:
                # The watcher gave up on it first (a smoke check slower than the start
                # deadline) and switched back: its decision stands.
                self.log(f"{version} passed its smoke check too late; the watcher rolled back")
                raise RestartRequested(self.installs.current_version())
            data[PREVIOUS] = pending["from"]
            data["good"] = {"version": version, "since": time.time()}
            data["pending"] = None
            keep = {version, pending["from"], data.get(LAST_KNOWN_GOOD) or version}
        removed = self.installs.prune(keep)
        runner.state.version = version
        runner.outbox.put_report(
            UpgradeReport("succeeded", pending.get("reported_from", pending["from"]), version)
        )
        self.log(
            f"{version} passed its smoke check; previous {pending['from']}"
            + (f"; pruned {', '.join(removed)}" if removed else "")
        )

    def after_heartbeat(self, version: str) -> None:
        """A heartbeat went through on `version`: a rollback target confirms it came up,
        and a version that passed its smoke check a day ago becomes the last known good."""
        data = self.installs.load()
        pending = data.get("pending") or {}
        good = data.get("good") or {}
        rolled_back_here = pending.get("expect") == version and pending.get("level") != NEW
        ran_long = (
            good.get("version") == version
            and data.get(LAST_KNOWN_GOOD) != version
            and time.time() - float(good.get("since", time.time())) >= self.deadlines.good_after
        )
        if not rolled_back_here and not ran_long:
            return
        with self.installs.change() as data:
            if rolled_back_here and (data.get("pending") or {}).get("expect") == version:
                data["pending"] = None
                self.log(f"{version} is back up after the rollback")
            if ran_long:
                data[LAST_KNOWN_GOOD] = version
                self.log(f"{version} ran {self.deadlines.good_after:g} s: the last known good")


REQUEST_FILE = "upgrade-request.json"


def request_upgrade(state_dir: str | Path, version: str) -> Path:
    """`agentina upgrade --to VERSION`: the running agent takes it at its next turn and
    applies it as it applies an order from the server (drain first)."""
    path = Path(state_dir) / REQUEST_FILE
    partial = path.with_name(f".{REQUEST_FILE}.tmp")
    partial.write_text(json.dumps({"version": version, "rollout_id": None}))
    os.replace(partial, path)
    return path


# --- the watcher --------------------------------------------------------------------------


@dataclass
class Watcher:
    """`agentina watch`: run from the old, known-good code; waits for the version
    `pending` expects to confirm itself, and rolls back a level each time it does not."""

    state_dir: Path
    log: Callable[[str], None] = print
    poll: float = 0.2
    children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.installs = Installs(self.state_dir)

    def run(self) -> int:
        while True:
            pending = self.installs.load().get("pending")
            if not pending:
                self.log("the upgrade is settled; the watcher exits")
                return 0
            gone = not pending.get("systemd") and not self._alive(int(pending.get("pid", 0)))
            if time.time() < float(pending.get("deadline", 0)) and not gone:
                time.sleep(self.poll)
                continue
            escalated = self.escalate(pending, gone)
            if escalated is None:
                continue  # the agent confirmed meanwhile: look again
            if not escalated:
                return 2

    def _alive(self, pid: int) -> bool:
        child = self.children.get(pid)
        if child is not None:
            return child.poll() is None
        return pid > 0 and pid_alive(pid)

    def escalate(self, seen: dict[str, Any], gone: bool) -> bool | None:
        """Switch a level back and restart the agent; False when no level is left, None
        when `pending` changed since it was read (nothing done)."""
        with self.installs.change() as data:
            pending = data.get("pending")
            if pending != seen:
                return None
            failed = pending["expect"]
            why = "exited" if gone else "did not confirm itself within its deadline"
            if pending["level"] == NEW:
                target, level = pending["from"], PREVIOUS
            else:
                lkg = data.get(LAST_KNOWN_GOOD)
                target, level = lkg, LAST_KNOWN_GOOD
                if (
                    pending["level"] == LAST_KNOWN_GOOD
                    or not lkg
                    or lkg == failed
                    or not self.installs.installed(lkg)
                ):
                    target = None
            if target is None:
                self.log(
                    f"{failed} {why}, and no version is left to fall back to; "
                    f"{self.installs.current_version()} stays current"
                )
                data["pending"] = None
                return False
            self.installs.switch(target)
            outcome = pending.get("outcome", "start_failed")
            detail = f"{failed} {why}; rolled back to {target} ({level})"
            Outbox.in_state_dir(self.state_dir, log=self.log).put_report(
                UpgradeReport(
                    outcome,
                    pending.get("reported_from", pending["from"]),
                    pending["to"],
                    detail,
                    rolled_back_to=target,
                    rollback_level=level,
                )
            )
            self.log(detail)
            pid = self._restart(pending, target)
            data["pending"] = {
                **pending,
                "expect": target,
                "level": level,
                "outcome": outcome,
                "deadline": time.time() + float(pending.get("start_deadline", 120)),
                "pid": pid,
            }
        return True

    def _restart(self, pending: dict[str, Any], target: str) -> int:
        """The agent restarted on `current`: by its unit under systemd, else ended (if it
        hangs) and started anew by this watcher. Returns the pid to watch (0: systemd's)."""
        if pending.get("systemd"):
            systemctl = [shutil.which("systemctl") or "systemctl", *systemctl_scope()]
            unit = f"{pending['unit']}.service"
            # A crash loop may have hit the unit's start limit: cleared, or restart is refused.
            for action in ("reset-failed", "restart"):
                subprocess.run([*systemctl, action, unit], check=False)  # noqa: S603
            return 0
        pid = int(pending.get("pid", 0))
        if pid > 0 and self._alive(pid):
            end_process(pid)
        log = open(self.state_dir / AGENT_LOG, "ab")  # noqa: SIM115 - handed to the child
        with log:
            child = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                agentina_command(*pending["run_argv"]),
                env=python_env(self.installs.code_root(target)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.children[child.pid] = child
        self.log(f"started {target} as process {child.pid}")
        return child.pid


def main(argv: list[str] | None = None) -> int:
    """`python -m agentina.upgrade watch STATE_DIR`: how an upgrade starts its watcher."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "watch":
        print("usage: python -m agentina.upgrade watch STATE_DIR", file=sys.stderr)
        return 2
    write_pid(args[1], WATCH_PID)
    return Watcher(Path(args[1]), log=lambda m: print(f"watch: {m}", flush=True)).run()


if __name__ == "__main__":
    sys.exit(main())

"""Finished jobs' results the server has not acknowledged yet, kept on disk.

A result is written to `<state dir>/outbox/<job id>.json` (mode 0600, through a temporary
file and `os.replace`, so a crash leaves the old file or the new one, never half of one)
before `complete` or `fail` is sent, and removed only once the server answered it. The
runner sends what waits on every turn and when it starts, so a server fault or a restart
loses no result, and names the waiting jobs in its heartbeats so their leases hold."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OUTBOX_DIR = "outbox"
UPGRADE_REPORTS_DIR = "upgrades"  # inside the outbox: how upgrades went, by target version


@dataclass
class Finished:
    """What a job came to: a result to `complete` with, an error to `fail` with, or
    (`stopped`) a job the server told it to stop, to report as stopped."""

    job_id: int
    lease_id: str
    succeeded: bool
    result: Any = None
    error: str = ""
    retryable: bool = True
    stopped: bool = False
    # What the executor reported its model calls cost ({"usage": [...], "wall_seconds"}).
    usage: dict[str, Any] | None = None


@dataclass
class UpgradeReport:
    """How applying a version went, for POST /agents/upgrade-result. Made by a process that
    is about to be replaced (or by the start watcher), delivered by the next one; one per
    target version, so a later word on the same upgrade (a deeper rollback) replaces it."""

    outcome: str
    from_version: str
    to_version: str
    detail: str = ""
    rolled_back_to: str | None = None
    rollback_level: str | None = None


def _report_name(to_version: str) -> str:
    """A file name for any version string (it comes from the server: never a path)."""
    return hashlib.sha256(to_version.encode()).hexdigest()[:32]


class Outbox:
    """The results waiting for the server's answer, by job id. With no directory they are
    kept in memory only (and lost with the process)."""

    def __init__(
        self, directory: str | Path | None = None, log: Callable[[str], None] = print
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.log = log
        self._waiting: dict[int, Finished] = {}
        self._reports: dict[str, UpgradeReport] = {}
        if self.directory is not None:
            self._load(self.directory)
            self._load_reports(self.directory / UPGRADE_REPORTS_DIR)

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, log: Callable[[str], None] = print) -> Outbox:
        return cls(Path(state_dir) / OUTBOX_DIR, log)

    def put(self, finished: Finished) -> bool:
        """Keep a result; on disk before this returns (False, and kept in memory only,
        when the disk refused: it is still sent, but would not survive a restart)."""
        # What is kept is what JSON carries, so a restart sends exactly the same thing.
        text = json.dumps(asdict(finished), default=str)
        kept = Finished(**json.loads(text))
        self._waiting[kept.job_id] = kept
        if self.directory is None:
            return True
        try:
            self._write(kept.job_id, text)
        except OSError as exc:
            self.log(f"job {kept.job_id}: could not save the result in {self.directory}: {exc}")
            return False
        return True

    def remove(self, job_id: int) -> None:
        self._waiting.pop(job_id, None)
        if self.directory is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{job_id}.json").unlink()

    def put_report(self, report: UpgradeReport) -> None:
        """Keep an upgrade report, on disk before this returns (the process that made it
        may be replaced a moment later)."""
        self._reports[report.to_version] = report
        if self.directory is not None:
            self._write_file(
                self.directory / UPGRADE_REPORTS_DIR,
                _report_name(report.to_version),
                json.dumps(asdict(report)),
            )

    def reports(self) -> list[UpgradeReport]:
        return [self._reports[key] for key in sorted(self._reports)]

    def remove_report(self, to_version: str) -> None:
        self._reports.pop(to_version, None)
        if self.directory is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / UPGRADE_REPORTS_DIR / f"{_report_name(to_version)}.json").unlink()

    def job_ids(self) -> list[int]:
        return sorted(self._waiting)

    def entries(self) -> list[Finished]:
        return [self._waiting[job_id] for job_id in sorted(self._waiting)]

    def __len__(self) -> int:
        return len(self._waiting)

    def _write(self, job_id: int, text: str) -> None:
        assert self.directory is not None
        self._write_file(self.directory, str(job_id), text)

    @staticmethod
    def _write_file(directory: Path, name: str, text: str) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = directory / f"{name}.json"
        temporary = directory / f".{name}.json.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        with contextlib.suppress(OSError):  # the rename itself is durable once the dir is
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _load(self, directory: Path) -> None:
        if not directory.is_dir():
            return
        for leftover in directory.glob(".*.tmp"):  # a write a crash interrupted
            with contextlib.suppress(OSError):
                leftover.unlink()
        for path in sorted(directory.glob("*.json")):
            try:
                finished = Finished(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                self.log(f"outbox: {path} is unreadable ({exc}); left where it is")
                continue
            self._waiting[finished.job_id] = finished

    def _load_reports(self, directory: Path) -> None:
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.json")):
            try:
                report = UpgradeReport(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                self.log(f"outbox: {path} is unreadable ({exc}); left where it is")
                continue
            self._reports[report.to_version] = report

"""The soak's counting, apart from the processes it runs, so it can be tested on its own:
fault windows, jobs executed more than once, snapshot minutes missing, an agent's longest
silence, and the final table. Times are Unix seconds (every process is on this machine)."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)


@dataclass
class Fault:
    """One injected fault: from the moment it was made to the moment it was healed."""

    name: str
    started: float
    healed: float | None = None

    def window(self, margin: float, end: float) -> tuple[float, float]:
        """Start to heal (or `end`, if never healed) plus the recovery margin."""
        return self.started, (end if self.healed is None else self.healed) + margin


def in_window(at: float, windows: Iterable[tuple[float, float]]) -> bool:
    return any(start <= at <= end for start, end in windows)


def split_by_windows(
    times: Iterable[float], windows: list[tuple[float, float]]
) -> tuple[list[float], list[float]]:
    """(inside any window, outside every window)."""
    inside: list[float] = []
    outside: list[float] = []
    for at in times:
        (inside if in_window(at, windows) else outside).append(at)
    return inside, outside


def executed_more_than_once(job_ids: Iterable[int]) -> dict[int, int]:
    """Job id -> executions, for every job started more than once (by one agent or several)."""
    return {job: n for job, n in Counter(job_ids).items() if n > 1}


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def ceil_minute(at: datetime) -> datetime:
    floor = floor_minute(at)
    return floor if floor == at else floor + MINUTE


def missing_minutes(present: Iterable[datetime], first: datetime, last: datetime) -> list[datetime]:
    """The minutes from `first` to `last` (both included) with no snapshot."""
    have = {floor_minute(at) for at in present}
    missing, at = [], first
    while at <= last:
        if at not in have:
            missing.append(at)
        at += MINUTE
    return missing


def unexplained_backfills(
    backfilled: Iterable[datetime], windows: list[tuple[float, float]]
) -> list[datetime]:
    """Rebuilt minutes no fault explains: beat missed them on its own, so their presence
    was never measured. Each counts as missing; a minute is explained when a fault window
    overlaps it."""
    return [
        minute
        for minute in backfilled
        if not any(
            start < (minute + MINUTE).timestamp() and minute.timestamp() <= end
            for start, end in windows
        )
    ]


def longest_silence(answered: Iterable[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] without an answered heartbeat."""
    points = [start, *sorted(t for t in answered if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(points))


_RECEIVED = re.compile(r"Task ([\w.]+)\[([\w-]+)\] received")
_FINISHED = re.compile(
    r"Task [\w.]+\[([\w-]+)\] (?:succeeded|failed|raised|retry)"
    r"|Discarding revoked task: [\w.]+\[([\w-]+)\]"
)


def unfinished_tasks(worker_log: str) -> list[str]:
    """The tasks a Celery worker's log shows it received and never finished (name and the
    start of the id): what it held when it died."""
    received = {task_id: name for name, task_id in _RECEIVED.findall(worker_log)}
    finished = {a or b for a, b in _FINISHED.findall(worker_log)}
    return [f"{name}[{key[:8]}]" for key, name in received.items() if key not in finished]


def clock(at: float, zero: float) -> str:
    """Seconds since the soak started, as t+MM:SS."""
    seconds = max(0, round(at - zero))
    return f"t+{seconds // 60:02d}:{seconds % 60:02d}"


def utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, tz=UTC)


@dataclass(frozen=True)
class Verdict:
    """The four numbers the soak is judged by; each must be 0."""

    false_offline: int
    run_more_than_once: int
    server_errors_outside: int
    snapshot_minutes_missing: int

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("false offline agents", self.false_offline),
            ("jobs run more than once", self.run_more_than_once),
            ("5xx answers outside the fault windows", self.server_errors_outside),
            ("snapshot minutes missing", self.snapshot_minutes_missing),
        ]

    @property
    def passed(self) -> bool:
        return all(value == 0 for _, value in self.rows())

    def table(self, notes: dict[str, str]) -> list[str]:
        """The table, one line a measure, with a note beside each (by measure name)."""
        lines = [f"{'measure':<40} {'result':>7} {'must be':>8}  notes"]
        for name, value in self.rows():
            mark = "" if value == 0 else "  <-- FAILED"
            lines.append(f"{name:<40} {value:>7} {0:>8}  {notes.get(name, '')}{mark}")
        lines.append(f"{'verdict':<40} {'PASS' if self.passed else 'FAIL':>7}")
        return lines

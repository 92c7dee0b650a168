"""The soak's counting (scripts/soak): fault windows, jobs run twice, missing snapshot
minutes, silences, what a killed worker held, and what the observed client records."""

from datetime import UTC, datetime
from typing import Any

import pytest

from agentina.client import ApiError, Client
from scripts.soak.soak_observe import (
    JOB_ID,
    Observations,
    ObservedClient,
    ObservedTransport,
    counted,
    route,
)
from scripts.soak.soak_report import (
    Fault,
    Verdict,
    ceil_minute,
    clock,
    executed_more_than_once,
    floor_minute,
    longest_silence,
    missing_minutes,
    split_by_windows,
    unexplained_backfills,
    unfinished_tasks,
)


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 12, 1, 18, minute, second, tzinfo=UTC)


def test_a_window_runs_from_the_fault_to_its_heal_plus_the_margin() -> None:
    assert Fault("redis kill", 100.0, healed=160.0).window(15, end=999) == (100.0, 175.0)
    assert Fault("never healed", 100.0).window(15, end=500) == (100.0, 515.0)


def test_answers_split_inside_and_outside_the_windows_edges_included() -> None:
    inside, outside = split_by_windows([99.9, 100, 150, 175, 175.1, 300], [(100, 175), (290, 310)])
    assert inside == [100, 150, 175, 300]
    assert outside == [99.9, 175.1]


def test_a_job_started_twice_by_one_agent_or_two_counts_once_with_its_executions() -> None:
    assert executed_more_than_once([1, 2, 2, 3, 3, 3, 4]) == {2: 2, 3: 3}
    assert executed_more_than_once([]) == {}


def test_minutes_without_a_snapshot_are_missing_backfilled_ones_are_not() -> None:
    present = [at(1), at(2, 0), at(4), at(5)]  # 18:03 missing; seconds never matter
    assert missing_minutes(present, at(1), at(5)) == [at(3)]
    assert missing_minutes(present, at(1), at(6)) == [at(3), at(6)]
    assert missing_minutes([], at(1), at(0)) == []


def test_a_rebuilt_minute_counts_as_missing_unless_a_fault_window_overlaps_it() -> None:
    window = (at(2, 30).timestamp(), at(4, 10).timestamp())  # 18:02:30 to 18:04:10
    rebuilt = [at(1), at(2), at(4), at(5)]
    assert unexplained_backfills(rebuilt, [window]) == [at(1), at(5)]
    assert unexplained_backfills(rebuilt, []) == rebuilt


def test_a_soak_counts_the_whole_minutes_inside_it() -> None:
    assert ceil_minute(at(1, 20)) == at(2)
    assert ceil_minute(at(2)) == at(2)
    assert floor_minute(at(9, 59)) == at(9)


def test_the_longest_silence_counts_from_the_start_and_to_the_end() -> None:
    assert longest_silence([10, 40, 70], start=0, end=100) == 30
    assert longest_silence([5, 10], start=0, end=100) == 90  # silent after its last beat
    assert longest_silence([], start=0, end=100) == 100
    assert longest_silence([-5, 50, 150], start=0, end=100) == 50  # beats outside ignored


def test_clock_reads_minutes_and_seconds_since_the_start() -> None:
    assert clock(1000 + 272.4, zero=1000) == "t+04:32"
    assert clock(999, zero=1000) == "t+00:00"


def test_the_verdict_passes_only_when_all_four_are_zero() -> None:
    assert Verdict(0, 0, 0, 0).passed
    failed = Verdict(0, 1, 0, 0)
    assert not failed.passed
    table = failed.table({"jobs run more than once": "job 7 twice"})
    assert any("jobs run more than once" in line and "FAILED" in line for line in table)
    assert table[-1].split() == ["verdict", "FAIL"]


def test_a_killed_worker_held_the_tasks_it_received_and_never_finished() -> None:
    log = "\n".join(
        [
            "[..] Task fleet.flush_presence[aaaa1111-0] received",
            "[..] Task fleet.flush_presence[aaaa1111-0] succeeded in 0.01s: 3",
            "[..] Task fleet.flush_presence[bbbb2222-0] received",
            "[..] Discarding revoked task: fleet.flush_presence[bbbb2222-0]",
            "[..] Task fleet.mark_stale_agents[cccc3333-0] received",
            "[..] Task fleet.mark_stale_agents[cccc3333-0] raised unexpected: OperationalError",
            "[..] Task fleet.take_snapshots[dddd4444-0] received",
        ]
    )
    assert unfinished_tasks(log) == ["fleet.take_snapshots[dddd4444]"]


class Scripted:
    """A transport answering from a list, recording nothing itself."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)

    def request(self, method: str, url: str, *, json: Any = None, headers: dict[str, str]) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_routes_name_the_operation_not_the_job() -> None:
    assert route("POST", "http://h:1/api/v1/jobs/17/complete") == "POST /jobs/{id}/complete"
    assert route("POST", "http://h:1/api/v1/agents/heartbeat") == "POST /agents/heartbeat"


def test_every_answer_is_counted_and_each_5xx_and_network_failure_kept_with_its_time() -> None:
    seen = Observations()
    transport = Scripted(
        ConnectionError("refused"), (503, {"code": "service_unavailable"}), (200, {"ok": 1})
    )
    observed = ObservedTransport(transport, seen)
    client = Client("http://h:1", "s", transport=observed, sleep=lambda _: None)
    assert client.call("GET", "/agents/me") == {"ok": 1}  # the client retried twice
    assert seen.statuses == {"GET /agents/me 503": 1, "GET /agents/me 200": 1}
    assert [(status, where) for _, status, where in seen.server_errors] == [(503, "GET /agents/me")]
    assert [where for _, where, _ in seen.unreachable] == ["GET /agents/me"]


def test_the_observed_client_notes_heartbeats_and_tells_the_executor_its_job() -> None:
    seen = Observations()
    transport = Scripted(
        (200, {"next_heartbeat_seconds": 30}),
        (409, {"code": "gone", "detail": "no"}),
        (200, {"id": 7, "payload": {"task": "t"}, "lease_id": "l"}),
    )
    client = ObservedClient("http://h:1", "s", transport=ObservedTransport(transport, seen))
    client.heartbeat("1.9.3", [])
    with pytest.raises(ApiError):
        client.heartbeat("1.9.3", [])
    assert len(client.beats.ok) == 1 and len(client.beats.failed) == 1
    job = client.claim()
    assert job is not None
    ran = counted(lambda payload: (True, payload["task"]), agent_id=3, seen=seen)
    assert ran(job["payload"]) == (True, "t")
    assert [(job_id, agent) for job_id, agent, _ in seen.executions] == [(7, 3)]
    assert job["payload"][JOB_ID] == 7

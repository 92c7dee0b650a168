"""The presence buffer on its own: steady heartbeats collected in this process, sent to
one Redis hash, and written to the database by the flush, only ever forward in time;
with Redis gone, the batch goes to the database and the flush says it may have lost
beats."""

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AgentStatus
from fleet.models import Agent
from fleet.services.presence import (
    FLUSHING,
    MARKER,
    PENDING,
    PresenceFlush,
    presence_buffer,
    presence_flush,
    presence_send,
)
from tests import factories
from tests.runtime import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def agents(customer):
    seen = timezone.now() - timedelta(minutes=1)
    return [factories.agent(customer, last_heartbeat_at=seen) for _ in range(3)]


def seen(agent) -> tuple:
    row = Agent.objects.get(pk=agent.pk)
    return row.last_heartbeat_at, row.load, row.clock_offset_seconds


def test_without_a_buffer_heartbeats_are_not_taken_and_a_flush_is_complete(settings, agents):
    settings.PRESENCE_BUFFER_URL = ""
    assert presence_buffer(agent_id=agents[0].pk, at=timezone.now(), load=0.5, offset=0) is False
    assert presence_send() == 0
    assert presence_flush() == PresenceFlush(0, complete=True)


@pytest.mark.redis
def test_beats_stay_in_the_process_until_sent_and_the_latest_per_agent_wins(buffer, agents):
    now = timezone.now()
    earlier = now - timedelta(seconds=30)
    for agent in agents[:2]:
        assert presence_buffer(agent_id=agent.pk, at=earlier, load=0.1, offset=1)
    assert presence_buffer(agent_id=agents[0].pk, at=now, load=0.9, offset=-2)
    assert buffer.hlen(PENDING) == 0  # nothing sent yet
    assert presence_send() == 2
    assert buffer.hlen(PENDING) == 2
    assert presence_send() == 0  # sent once: nothing left to send
    presence_flush()
    assert seen(agents[0]) == (now, 0.9, -2)
    assert seen(agents[1]) == (earlier, 0.1, 1)


@pytest.mark.redis
def test_the_flush_writes_what_was_sent_once_and_empties_the_buffer(buffer, agents):
    before = seen(agents[2])
    now = timezone.now()
    for agent in agents[:2]:
        presence_buffer(agent_id=agent.pk, at=now, load=None, offset=None)
    presence_send()
    assert seen(agents[0]) != (now, None, None)  # sent, not written yet
    assert presence_flush() == PresenceFlush(2, complete=True)
    assert [seen(a) for a in agents] == [(now, None, None), (now, None, None), before]
    assert not buffer.exists(PENDING) and not buffer.exists(FLUSHING)
    assert presence_flush() == PresenceFlush(0, complete=True)  # twice: nothing more
    assert seen(agents[0]) == (now, None, None)


@pytest.mark.redis
def test_the_flush_sends_this_processs_own_batch_first(buffer, agents):
    now = timezone.now()
    presence_buffer(agent_id=agents[0].pk, at=now, load=0.3, offset=0)
    assert presence_flush().written == 1
    assert seen(agents[0]) == (now, 0.3, 0)


@pytest.mark.redis
def test_a_beat_older_than_the_database_row_moves_nothing(buffer, agents):
    """Two flushes at once, or a heartbeat that wrote the database while Redis was away,
    must never move an agent's last-seen back."""
    newer = timezone.now()
    Agent.objects.filter(pk=agents[0].pk).update(last_heartbeat_at=newer, load=0.5)
    presence_buffer(agent_id=agents[0].pk, at=newer - timedelta(seconds=20), load=0.1, offset=3)
    presence_buffer(agent_id=agents[1].pk, at=newer, load=0.2, offset=None)
    assert presence_flush() == PresenceFlush(1, complete=True)
    assert seen(agents[0]) == (newer, 0.5, None)
    assert seen(agents[1]) == (newer, 0.2, None)


@pytest.mark.redis
def test_a_batch_whose_flush_died_is_written_by_the_next_before_newer_beats(buffer, agents):
    """A flush renames the pending hash to FLUSHING and deletes it once written; one that
    died between the two leaves it for the next flush."""
    earlier, later = timezone.now() - timedelta(seconds=10), timezone.now()
    presence_buffer(agent_id=agents[0].pk, at=earlier, load=None, offset=None)
    presence_send()
    buffer.rename(PENDING, FLUSHING)  # the flush that died had got this far
    presence_buffer(agent_id=agents[1].pk, at=later, load=None, offset=None)
    presence_send()
    assert presence_flush() == PresenceFlush(1, complete=True)
    assert seen(agents[0])[0] == earlier
    assert buffer.hlen(PENDING) == 1  # the newer beats wait for the next flush
    assert presence_flush() == PresenceFlush(1, complete=True)
    assert seen(agents[1])[0] == later


@pytest.mark.redis
def test_a_decommissioned_agents_buffered_beat_is_not_written(buffer, agents):
    Agent.objects.filter(pk=agents[0].pk).update(
        status="decommissioned", decommissioned_at=timezone.now()
    )
    before = seen(agents[0])
    presence_buffer(agent_id=agents[0].pk, at=timezone.now(), load=0.4, offset=None)
    assert presence_flush().written == 0
    assert seen(agents[0]) == before


@pytest.mark.redis
def test_a_flush_that_finds_the_marker_gone_says_beats_may_be_lost_until_the_sweep(buffer, agents):
    """Redis restarted without its data: the beats sent before are gone, and only a flush
    can tell. Every flush says so until the sweep's own (which then waits a window)."""
    buffer.delete(MARKER)
    now = timezone.now()
    presence_buffer(agent_id=agents[0].pk, at=now, load=None, offset=None)
    assert presence_flush() == PresenceFlush(1, complete=False)
    assert seen(agents[0])[0] == now
    assert presence_flush() == PresenceFlush(0, complete=False)  # the task's, a snapshot's
    assert presence_flush(for_sweep=True) == PresenceFlush(0, complete=False)
    assert presence_flush() == PresenceFlush(0, complete=True)


@pytest.mark.redis
def test_the_sweep_grants_grace_for_a_lost_buffer_whichever_flush_saw_it_first(
    buffer, agents, settings
):
    """Found by `make soak`: the flush task (or a snapshot) ran first after Redis came
    back empty and declared the buffer whole, so the sweep granted no grace and marked
    offline an agent whose newest heartbeats were in the lost buffer."""
    from fleet.services.sweeps import agents_mark_stale

    factories.sweep_state()  # the sweep ran a moment ago: no gap of its own
    agents_mark_stale()  # it has seen the buffer whole
    silent = agents[0]
    Agent.objects.filter(pk=silent.pk).update(
        last_heartbeat_at=timezone.now() - settings.AGENT_ONLINE_WINDOW - timedelta(seconds=20)
    )
    buffer.flushall()  # Redis restarted empty: its newest heartbeats were lost with it
    presence_flush()  # the flush task notices first
    sweep = agents_mark_stale()
    assert (sweep.in_grace, sweep.marked_offline) == (True, 0)
    assert Agent.objects.get(pk=silent.pk).status == AgentStatus.ONLINE


def test_with_redis_unreachable_the_batch_goes_to_the_database(settings, agents):
    settings.PRESENCE_BUFFER_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    settings.PRESENCE_BATCH_SECONDS = 3600
    now = timezone.now()
    assert presence_buffer(agent_id=agents[0].pk, at=now, load=0.7, offset=4)
    assert presence_buffer(
        agent_id=agents[1].pk, at=now - timedelta(minutes=5), load=0.7, offset=4
    )  # older than its row: the database keeps the newer time
    before = seen(agents[1])
    assert presence_send() == 2  # Redis refuses: written to the database instead
    assert seen(agents[0]) == (now, 0.7, 4)
    assert seen(agents[1]) == before
    # Known unreachable now: heartbeats are refused by the buffer (the caller writes the
    # database) and the flush says beats may have been lost.
    assert presence_buffer(agent_id=agents[2].pk, at=now, load=None, offset=None) is False
    assert presence_flush() == PresenceFlush(0, complete=False)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_flushes_run_one_at_a_time_and_none_believes_the_buffer_lost(buffer, agents):
    """A flush waits for the one under way (two at once could delete the batch the other
    had just taken, or fail on its rename and report the buffer lost)."""
    import threading

    from django.db import connection

    from fleet.services.presence import FLUSH_LOCK

    later = timezone.now()
    for agent in agents:
        presence_buffer(agent_id=agent.pk, at=later, load=0.1, offset=0)
    presence_send()
    held = buffer.lock(FLUSH_LOCK, timeout=30)
    assert held.acquire(blocking=False)
    results: list[PresenceFlush] = []

    def flush() -> None:
        try:
            results.append(presence_flush())
        finally:
            connection.close()

    waiting = threading.Thread(target=flush)
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive() and not results  # it waits for the flush under way
    held.release()
    waiting.join(timeout=30)
    assert results == [PresenceFlush(3, complete=True)]
    assert all(seen(agent)[0] == later for agent in agents)
    # Eight at once: every one complete, every heartbeat written once.
    for agent in agents:
        presence_buffer(agent_id=agent.pk, at=later + timedelta(seconds=1), load=0.2, offset=0)
    presence_send()
    results.clear()
    threads = [threading.Thread(target=flush) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r.complete for r in results) and sum(r.written for r in results) == 3, results

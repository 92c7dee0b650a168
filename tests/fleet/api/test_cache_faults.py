"""A database fault does not fail a kept agent's authentication: the agent cache's change
poll is retried, not raised; a steady heartbeat answers; but never for longer than
AGENT_CACHE_STALE_LIMIT_SECONDS (then 503), and a revocation made meanwhile is honoured
as soon as polls work again."""

import logging
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import OperationalError, connection
from django.utils import timezone

from fleet import agent_cache
from fleet.agent_cache import agent_cached_for_secret
from fleet.choices import AgentStatus
from fleet.errors import ServiceUnavailable
from fleet.models import Agent, AgentFactsChange
from tests import factories
from tests.fleet.api.conftest import beat

pytestmark = pytest.mark.django_db


def unreachable(*args, **kwargs):
    raise OperationalError("could not connect to server: Connection refused")


class Outage:
    """The poll's query fails while `on`."""

    def __init__(self, monkeypatch) -> None:
        self.on = True
        original = AgentFactsChange.objects.filter

        def failing_filter(*args, **kwargs):
            if self.on:
                unreachable()
            return original(*args, **kwargs)

        monkeypatch.setattr(AgentFactsChange.objects, "filter", failing_filter)

    def end(self) -> None:
        self.on = False


@pytest.fixture
def polls_fail(agent, settings, monkeypatch) -> Outage:
    """The agent is kept by this process; from here on every poll fails (and is tried
    again at every call) until the outage ends."""
    assert beat(agent).status_code == 200  # the process loads and keeps the agent
    settings.AGENT_CACHE_POLL_SECONDS = 0
    return Outage(monkeypatch)


def revoked_by_another_process(agent) -> None:
    """Another web process decommissions the agent: the row and its change record only."""
    Agent.objects.filter(pk=agent.agent.pk).update(
        status=AgentStatus.DECOMMISSIONED, decommissioned_at=timezone.now()
    )
    factories.agent_facts_change(agent_id=agent.agent.pk)


def cache_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fleet.agent_cache" and r.levelno == logging.WARNING
    ]


def test_a_kept_agent_is_served_while_polls_fail_and_the_outage_is_logged_once(
    agent, polls_fail, caplog
):
    caplog.set_level(logging.WARNING, logger="fleet.agent_cache")
    for _ in range(5):
        assert agent_cached_for_secret(agent.secret).pk == agent.agent.pk
    assert agent.api.get("/agents/me").status_code == 200
    [warning] = cache_warnings(caplog)
    assert "polling for changes failed (OperationalError" in warning


@pytest.mark.redis
def test_a_steady_heartbeat_answers_while_the_database_is_unreachable(
    agent,
    buffer,
    settings,
):
    # With the presence buffer a steady heartbeat needs no database at all; here every
    # statement this connection sends fails, as with the database down.
    assert beat(agent).status_code == 200
    settings.AGENT_CACHE_POLL_SECONDS = 0  # and every heartbeat tries to poll
    later = timezone.now() + timedelta(seconds=40)
    with time_machine.travel(later, tick=False), connection.execute_wrapper(unreachable):
        for load in (0.1, 0.2, 0.3):
            answer = beat(agent, load=load)
            assert answer.status_code == 200, answer.content
            assert answer.json()["next_heartbeat_seconds"] >= 30


def test_after_the_stale_limit_a_kept_agent_is_refused_with_503(agent, polls_fail, settings):
    settings.AGENT_CACHE_STALE_LIMIT_SECONDS = 0.3
    assert agent_cached_for_secret(agent.secret).pk == agent.agent.pk  # within the limit
    time.sleep(0.35)
    with pytest.raises(ServiceUnavailable):
        agent_cached_for_secret(agent.secret)
    refused = beat(agent)
    assert (refused.status_code, refused.json()["code"]) == (503, "service_unavailable")
    assert int(refused["Retry-After"]) >= 1
    # The database back: the next call polls, and the agent is served again.
    polls_fail.end()
    assert beat(agent).status_code == 200


def test_once_the_database_is_back_a_revocation_made_meanwhile_is_honoured(
    agent, polls_fail, caplog
):
    caplog.set_level(logging.WARNING, logger="fleet.agent_cache")
    revoked_by_another_process(agent)
    # Not seen yet (bounded by the stale limit), and its writes are conditional anyway.
    assert agent_cached_for_secret(agent.secret) is not None
    polls_fail.end()
    assert agent_cached_for_secret(agent.secret) is None
    refused = agent.api.get("/agents/me")
    assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
    assert [w.split(" after ")[0] for w in cache_warnings(caplog)][-1] == (
        "agent cache: polling works again"
    )


def test_a_revocation_older_than_the_look_back_when_polls_resume_is_honoured(
    agent, polls_fail, monkeypatch
):
    # An outage longer than half the look-back window (60 s; here 0.4 s): the change
    # record is out of the window when polls resume, so everything kept is re-read.
    monkeypatch.setattr(agent_cache, "LOOKBACK", timedelta(seconds=0.4))
    revoked_by_another_process(agent)
    time.sleep(0.5)
    assert agent_cached_for_secret(agent.secret) is not None  # within the stale limit
    polls_fail.end()
    assert agent_cached_for_secret(agent.secret) is None


def test_a_process_idle_past_the_look_back_forgets_what_it_kept(agent, monkeypatch):
    """No agent request for longer than the change rows are read back: a revocation in
    that gap would go unseen, so the first poll after it trusts nothing it kept."""
    import time
    from datetime import timedelta

    from django.utils import timezone

    from fleet.agent_cache import agent_cached_for_secret
    from fleet.models import Agent, AgentFactsChange

    assert agent_cached_for_secret(agent.secret) is not None
    # Retired in another process, its change row already older than the look-back.
    Agent.objects.filter(pk=agent.agent.pk).update(
        status="decommissioned", decommissioned_at=timezone.now()
    )
    AgentFactsChange.objects.create(
        changed_at=timezone.now() - timedelta(minutes=5), agent_id=agent.agent.pk
    )
    later = time.monotonic() + 120  # two idle minutes in this process
    monkeypatch.setattr("fleet.agent_cache.time.monotonic", lambda: later)
    assert agent_cached_for_secret(agent.secret) is None

"""Shared fixtures, and the rule for tests that need real services.

A test marked `postgres` or `redis` skips with its reason where the service is not
configured (a laptop on the embedded default) and fails where CI requires it:
AGENTINA_REQUIRE_SERVICES=postgres,redis makes a missing service a failure, not a skip.
"""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings
from django.db import connection

from tests import factories
from tests.faults import TcpProxy

REQUIRED = {
    s.strip() for s in os.environ.get("AGENTINA_REQUIRE_SERVICES", "").split(",") if s.strip()
}


def _postgres_missing() -> str | None:
    if connection.vendor != "postgresql":
        return "needs PostgreSQL: set DATABASE_URL=postgres://…"
    return None


def _redis_missing() -> str | None:
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis"):
        return "needs Redis: set CELERY_BROKER_URL=redis://…"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"needs Redis at {url}: {exc}"
    return None


def _chromium_missing() -> str | None:
    import shutil

    if not shutil.which("chromium") and not os.path.exists("/usr/bin/chromium"):
        return "needs Chromium: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs Playwright for Python: pip install playwright"
    return None


SERVICE_CHECKS: dict[str, Callable[[], str | None]] = {
    "postgres": _postgres_missing,
    "redis": _redis_missing,
    "browser": _chromium_missing,
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for service, check in SERVICE_CHECKS.items():
        if item.get_closest_marker(service) is None:
            continue
        reason = check()
        if reason is None:
            continue
        if service in REQUIRED:
            pytest.fail(
                f"{item.nodeid}: {reason} (required by AGENTINA_REQUIRE_SERVICES)", pytrace=False
            )
        pytest.skip(f"{item.nodeid}: {reason}")


@pytest.fixture
def customer():
    return factories.customer()


@pytest.fixture
def other_customer():
    return factories.customer(name="Other Corp")


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user(
        "staffer", password="x", is_staff=True, is_superuser=True
    )
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_throttles(settings):
    """Rate limits count in the cache: start each test from zero, with room to work."""
    from django.core.cache import cache

    cache.clear()
    settings.API_THROTTLE_RATES = {"activate": "10000/min", "api_key": "10000/min"}
    settings.PORTAL_WRITE_RATE = "10000/min"


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@contextmanager
def data_statements() -> Iterator[list[str]]:
    """The SQL statements the block issues (filled in when it ends), leaving out
    transaction control (BEGIN on SQLite, and the savepoints that the test's own wrapping
    transaction turns atomic blocks into), which differs by backend and harness but not by
    code path. Statements sent together in one round trip (joined by ";\n") count one each."""
    from django.test.utils import CaptureQueriesContext

    statements: list[str] = []
    with CaptureQueriesContext(connection) as ctx:
        yield statements
    statements.extend(
        sql
        for q in ctx.captured_queries
        for sql in q["sql"].split(";\n")
        if not sql.lstrip().upper().startswith(TRANSACTION_CONTROL)
    )


@pytest.fixture
def assert_data_statements():
    """Pin the data statements a block issues (see data_statements)."""

    @contextmanager
    def check(expected: int):
        with data_statements() as statements:
            yield
        assert len(statements) == expected, "\n\n".join(statements)

    return check


@pytest.fixture(autouse=True)
def _tasks_run_in_process():
    """Tasks a test's code queues (alert deliveries after commit) run at once in the test,
    never through a broker other processes may be reading."""
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def _fresh_hot_paths():
    """Each test starts with a process that knows no agent and holds no heartbeat."""
    from fleet.agent_cache import agent_cache_reset
    from fleet.services.presence import presence_reset

    agent_cache_reset()
    presence_reset()
    yield
    agent_cache_reset()
    presence_reset()


@pytest.fixture
def database_through_proxy() -> Iterator[TcpProxy]:
    """The test's database connection goes through a proxy (tests/faults.py) the test can
    cut, as a PostgreSQL restart or a network fault would; the shared server keeps running."""
    saved = {k: connection.settings_dict[k] for k in ("HOST", "PORT")}
    target = (saved["HOST"] or "127.0.0.1", int(saved["PORT"] or 5432))
    with TcpProxy(*target) as proxy:
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(proxy.port))
        try:
            yield proxy
        finally:
            connection.close()
            connection.settings_dict.update(saved)


@pytest.fixture
def buffer(settings) -> Iterator[redis.Redis]:
    """The presence buffer (steady heartbeats) on Redis database 13, emptied; batches are
    sent by the test (the sending thread waits an hour). For tests marked redis."""
    from fleet.services.presence import presence_flush

    host = urlsplit(settings.CELERY_BROKER_URL)  # the redis marker checked it answers
    url = f"redis://{host.hostname}:{host.port or 6379}/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings.PRESENCE_BUFFER_URL = url
    settings.PRESENCE_BATCH_SECONDS = 3600
    presence_flush(for_sweep=True)  # the buffer is known intact from here on
    yield client
    client.flushdb()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page of Debian's Chromium driven by Playwright (tests marked browser); its
    console errors and 4xx/5xx answers are collected in `page.console_errors`."""
    from playwright.sync_api import sync_playwright

    from tests.runtime import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on(
            "response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        page.console_errors = errors
        yield page
        browser.close()

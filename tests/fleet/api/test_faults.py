"""Faults cost nothing: a database fault answers 503 with Retry-After (so clients retry
instead of dropping work) and the app recovers by itself; a dead or frozen Redis never
fails or stalls the API, whose rate limits then fail open. Real faults go through a TCP
proxy (tests/faults.py) between the app and the shared servers, which keep running."""

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import OperationalError, ProgrammingError, connection

from fleet.api import throttles
from tests.faults import TcpProxy
from tests.fleet.api.conftest import ApiClient

pytestmark = pytest.mark.django_db


def submit(key_api: ApiClient):
    return key_api.post("/jobs", {"role": "coder", "payload": {"repo": "a/b", "task": "lint"}})


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "service_unavailable"
    assert int(response["Retry-After"]) >= 1


def test_every_operation_declares_503(client):
    doc = client.get("/api/v1/openapi.json").json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if path.endswith("/health"):
                continue  # answers without the database
            assert "503" in operation["responses"], (method, path)


def test_a_transient_database_error_is_503_with_retry_after(key_api, monkeypatch, caplog):
    def lost(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("fleet.api.jobs.job_submit", lost)
    assert_unavailable(submit(key_api))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("database unavailable" in r.getMessage() for r in warnings)
    assert not any(r.exc_info for r in caplog.records)  # one line, no traceback


def test_a_database_bug_is_still_a_500(key_api, monkeypatch):
    def bug(**kwargs):
        raise ProgrammingError('column "nope" does not exist')

    monkeypatch.setattr("fleet.api.jobs.job_submit", bug)
    response = submit(key_api)
    assert (response.status_code, response.json()["code"]) == (500, "internal_error")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_read_only_database_is_503_not_500(key_api):
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    try:
        assert_unavailable(submit(key_api))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    assert submit(key_api).status_code == 201


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_cut_is_503_and_the_app_recovers_without_a_restart(
    key_api, database_through_proxy
):
    proxy = database_through_proxy
    assert submit(key_api).status_code == 201  # the connection now runs through the proxy
    proxy.cut()
    assert_unavailable(submit(key_api))  # the open connection dropped under the request
    assert_unavailable(submit(key_api))  # a new connection refused
    proxy.heal()
    assert submit(key_api).status_code == 201  # not stuck on the broken connection


@pytest.fixture
def redis_cache_through_proxy(settings) -> Iterator[TcpProxy]:
    """The default cache (throttle counters) on the shared Redis, through a proxy, with
    the production cache options and tight rate limits; its own key prefix, never cleared
    (the Redis database is shared)."""
    broker = urlsplit(django_settings.CELERY_BROKER_URL)
    with TcpProxy(broker.hostname or "127.0.0.1", broker.port or 6379) as proxy:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{proxy.port}{broker.path or '/0'}",
                "OPTIONS": django_settings.CACHE_REDIS_OPTIONS,
                "KEY_PREFIX": f"test-faults-{time.time_ns()}",
            }
        }
        settings.API_THROTTLE_RATES = {"activate": "2/hour", "api_key": "2/hour"}
        throttles.throttle_stats_reset()
        try:
            yield proxy
        finally:
            throttles.throttle_stats_reset()
            caches["default"].close()


@pytest.mark.redis
def test_submit_succeeds_while_redis_is_cut_and_limits_return_when_it_heals(
    key_api, redis_cache_through_proxy, monkeypatch, caplog
):
    proxy = redis_cache_through_proxy
    monkeypatch.setattr(throttles, "RETRY_AFTER", 0.3)
    assert [submit(key_api).status_code for _ in range(3)] == [201, 201, 429]  # Redis counts
    proxy.cut()
    assert [submit(key_api).status_code for _ in range(3)] == [201, 201, 201]  # fails open
    assert throttles.throttle_stats.failed_open == 3
    assert any("rate-limit cache unreachable" in r.getMessage() for r in caplog.records)
    proxy.heal()
    time.sleep(0.4)  # past RETRY_AFTER: Redis is tried again
    assert submit(key_api).status_code == 429  # the limit holds again, its count kept


@pytest.mark.redis
def test_a_frozen_redis_costs_milliseconds_not_seconds(key_api, redis_cache_through_proxy):
    proxy = redis_cache_through_proxy
    assert submit(key_api).status_code == 201  # connected through the proxy
    proxy.freeze()
    watchdog = threading.Timer(5, proxy.cut)  # without a socket timeout the call hangs
    watchdog.start()
    try:
        started = time.monotonic()
        statuses = [submit(key_api).status_code for _ in range(3)]
        elapsed = time.monotonic() - started
    finally:
        watchdog.cancel()
    assert statuses == [201, 201, 201]
    assert elapsed < 2.0, f"3 requests took {elapsed:.2f}s against a frozen Redis"
    assert throttles.throttle_stats.failed_open == 3

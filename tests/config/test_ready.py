"""/ready says whether this process can serve, and how fresh beat and the workers are,
in JSON a load balancer and a person can read; /health never touches the database."""

import pytest
from django.db import OperationalError, connection

from fleet import tasks

pytestmark = pytest.mark.django_db


def ready(client):
    response = client.get("/api/v1/ready")
    return response.status_code, response.json()


def test_ready_once_beat_and_a_worker_have_run_the_sweep(client, settings):
    settings.CELERY_BROKER_URL = "filesystem://"  # not Redis here: not checked
    status, body = ready(client)
    assert (status, body["status"]) == (200, "degraded")  # serving, but no sweep yet
    assert body["checks"]["beat_and_workers"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    tasks.mark_stale_agents()
    status, body = ready(client)
    assert (status, body["status"]) == (200, "ready"), body
    assert "last ran 0 s ago" in body["checks"]["beat_and_workers"]["detail"]
    assert body["checks"]["broker"]["ok"] is None


def test_an_unreachable_redis_is_degraded_not_down(client, settings):
    tasks.mark_stale_agents()
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    status, body = ready(client)
    assert (status, body["status"]) == (200, "degraded")
    assert body["checks"]["broker"]["ok"] is False
    assert "unreachable" in body["checks"]["broker"]["detail"]


def test_an_unreachable_database_is_503_while_health_still_answers(client):
    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection refused")

    with connection.execute_wrapper(refuse):
        status, body = ready(client)
        assert client.get("/api/v1/health").status_code == 200
    assert (status, body["status"], body["code"]) == (503, "unavailable", "service_unavailable")
    assert body["checks"]["database"] == {
        "ok": False,
        "detail": "unreachable: OperationalError",
        "ms": None,
    }

"""gunicorn settings for `manage.py bench`: each worker starts knowing every agent, counts
its requests and SQL statements by path, and writes them to BENCH_STATS_DIR at exit."""

import json
import os
from collections import Counter

from django.core.signals import request_started
from django.db.backends.signals import connection_created

requests: Counter[str] = Counter()
statements: Counter[str] = Counter()
kinds: Counter[str] = Counter()  # by path and first word: SELECT, UPDATE, BEGIN ...
current = {"path": "(outside a request)"}


def _count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
    statements[current["path"]] += 1
    kinds[f"{current['path']} {sql.split(None, 1)[0].upper()}"] += 1
    return execute(sql, params, many, context)


def _started(sender, environ=None, **kwargs):  # type: ignore[no-untyped-def]
    current["path"] = (environ or {}).get("PATH_INFO", "?")
    requests[current["path"]] += 1


def _connected(sender, connection, **kwargs):  # type: ignore[no-untyped-def]
    if _count not in connection.execute_wrappers:  # the wrapper outlives a reconnection
        connection.execute_wrappers.append(_count)


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    request_started.connect(_started, weak=False)
    connection_created.connect(_connected, weak=False)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Measure the steady state: a worker that has served the fleet for a while knows
    every agent (a cold lookup is one SELECT, ~3 ms; `manage.py bench` reports it)."""
    from django.db import connection

    from fleet.agent_cache import agent_cache_warm

    agent_cache_warm()
    connection.close()


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    path = os.path.join(os.environ["BENCH_STATS_DIR"], f"{os.getpid()}.json")
    with open(path, "w") as out:
        json.dump({"requests": requests, "statements": statements, "kinds": kinds}, out)


timeout = 120  # a worker loads the whole fleet before it serves

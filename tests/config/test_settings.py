import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

TEST_ONLY = (
    "SECURE_SSL_REDIRECT",
    "SECRET_KEY",
    "STATICFILES_BACKEND",
    "DEBUG",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in TEST_ONLY}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_settings_pass_check_deploy():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_debug_a_missing_secret_key_stops_the_process():
    result = _manage("check", DEBUG="false")
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_check_deploy_flags_a_weak_secret_key():
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", DEBUG="false", SECRET_KEY="short"
    )
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_debug_is_off_unless_asked_for():
    result = _manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.DEBUG)",
        SECRET_KEY=secrets.token_urlsafe(50),
    )
    assert result.stdout.strip() == "False"


@pytest.mark.postgres
def test_postgres_connections_are_persistent():
    assert settings.DATABASES["default"]["CONN_MAX_AGE"] > 0


def test_sqlite_connections_are_persistent_too():
    """Every configuration keeps its connections, the embedded default included."""
    result = _manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.DATABASES['default']['CONN_MAX_AGE'])",
        DEBUG="true",
        DATABASE_URL="sqlite:///var/settings-test.sqlite3",
    )
    assert int(result.stdout.strip()) > 0


@pytest.mark.django_db
def test_migrations_match_the_models():
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_the_benchmark_refuses_a_real_database():
    from scripts.bench.bench import BenchRefused, main

    with pytest.raises(BenchRefused, match="_bench"):
        main(["--agents", "10", "--jobs", "10"])


def test_a_task_a_killed_worker_held_comes_back_in_minutes_not_an_hour():
    """On Redis, an unacknowledged task is redelivered after the visibility timeout: longer
    than any task may run (or it would run twice), and not an hour."""
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'], s.CELERY_TASK_TIME_LIMIT)",
        DEBUG="true",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
    )
    assert result.returncode == 0, result.stderr
    visibility, longest = map(int, result.stdout.split()[-2:])
    assert longest < visibility <= 600

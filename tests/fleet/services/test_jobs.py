"""The claim's statements live in one place: PostgreSQL runs them in a function that a
migration installs, written from the code by `manage.py claim_function_migration`; a
test fails when the two differ, and the function comes and goes with its migration."""

import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from fleet.services.jobs import claim_function_sql


def deployed_claim_function() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'fleet_claim_job'")
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_migrations_install_the_claim_the_code_describes():
    """Change _CLAIM_STATEMENTS without `manage.py claim_function_migration` and this fails."""
    call_command("claim_function_migration", check=True)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_runs_the_claim_the_code_describes():
    assert deployed_claim_function() == claim_function_sql().split("$claim$")[1]


@pytest.mark.postgres
def test_migrate_fleet_zero_and_back_on_postgresql():
    """The whole schema unapplies (the function first, it depends on fleet_job's type) and
    applies again, on a database of its own."""
    db = settings.DATABASES["default"]
    name = f"agentina_migrations_{uuid.uuid4().hex[:8]}"
    dsn = f"host={db['HOST']} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{name}"
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "true"}

    def migrate(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", *args, "--no-input", "-v", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=settings.BASE_DIR,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def claim_function_exists() -> bool:
        with psycopg.connect(url.replace("postgres://", "postgresql://")) as c:
            return bool(
                c.execute("SELECT 1 FROM pg_proc WHERE proname = 'fleet_claim_job'").fetchone()
            )

    try:
        migrate()
        assert claim_function_exists()
        assert "Unapplying fleet.0001_initial... OK" in migrate("fleet", "zero")
        assert not claim_function_exists()
        migrate()
        assert claim_function_exists()
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""The claim's statements live in one place: PostgreSQL runs them in a function that every
migrate recreates from the code, so the two can never drift apart."""

import pytest
from django.core.management import call_command
from django.db import connection

from fleet.services.jobs import claim_function_sql

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def deployed_claim_function() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'fleet_claim_job'")
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_database_runs_the_claim_the_code_describes():
    body = claim_function_sql().split("$claim$")[1]
    assert deployed_claim_function() == body


def test_migrate_replaces_a_stale_claim_function():
    with connection.cursor() as cursor:
        cursor.execute(claim_function_sql().replace("'job.claim'", "'job.stale'"))
    assert "'job.stale'" in deployed_claim_function()
    call_command("migrate", verbosity=0)
    assert deployed_claim_function() == claim_function_sql().split("$claim$")[1]

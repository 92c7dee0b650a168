from django.apps import AppConfig
from django.db.models.signals import post_migrate


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        post_migrate.connect(_create_database_functions, sender=self)


def _create_database_functions(using: str = "default", **kwargs: object) -> None:
    """After every migrate, the PostgreSQL functions match the code that calls them (the
    claim's statements live in fleet/services/jobs.py, one place for both databases)."""
    from django.db import connections

    from fleet.services.jobs import claim_function_sql

    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(claim_function_sql())

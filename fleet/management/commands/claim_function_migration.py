"""Write the migration that installs the claim function as fleet/services/jobs.py now
describes it, when the latest one installs something else (`--check`: only say so)."""

import importlib
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.migrations.loader import MigrationLoader

from fleet.services.jobs import claim_function_sql

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TEMPLATE = '''"""The claim function as fleet/services/jobs.py describes it. Written by
`manage.py claim_function_migration`; do not edit by hand."""

from django.db import migrations

CLAIM_FUNCTION = """{sql}"""
PREVIOUS = """{previous}"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":  # elsewhere the claim runs inline
        schema_editor.execute(CLAIM_FUNCTION, params=None)


def restore_previous(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PREVIOUS, params=None)


class Migration(migrations.Migration):
    dependencies = [("fleet", "{parent}")]

    operations = [migrations.RunPython(install, restore_previous)]
'''
DROP = "DROP FUNCTION IF EXISTS fleet_claim_job"


def installed_claim_function() -> tuple[str | None, str]:
    """(the SQL the newest claim migration installs or None, the newest fleet migration)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    leaf = max(name for app, name in loader.graph.leaf_nodes() if app == "fleet")
    names = sorted(p.stem for p in MIGRATIONS.glob("[0-9]*.py"))
    for name in reversed(names):
        module = importlib.import_module(f"fleet.migrations.{name}")
        sql: Any = getattr(module, "CLAIM_FUNCTION", None)
        if sql is not None:
            return sql, leaf
    return None, leaf


def _signature(sql: str) -> str:
    """The function's name and parameters, as its CREATE statement gives them."""
    return sql.split(" RETURNS ", 1)[0].removeprefix("CREATE OR REPLACE FUNCTION ")


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="exit 1 if a migration is due")

    def handle(self, *args: Any, check: bool = False, **options: Any) -> None:
        installed, leaf = installed_claim_function()
        wanted = claim_function_sql()
        if installed == wanted:
            self.stdout.write("The claim function's migration is up to date.")
            return
        if installed is not None and _signature(installed) != _signature(wanted):
            raise CommandError(
                "The claim's parameters changed: CREATE OR REPLACE would add a second "
                "fleet_claim_job beside the old one. Write that migration by hand, dropping "
                f"the old one first: {_signature(installed)}"
            )
        if check:
            raise CommandError(
                "fleet/services/jobs.py's claim differs from the function the migrations "
                "install: run `manage.py claim_function_migration`."
            )
        if '"""' in wanted or "\\" in wanted:
            raise CommandError("The claim's SQL cannot sit in a triple-quoted string as it is.")
        number = int(leaf.split("_", 1)[0]) + 1
        path = MIGRATIONS / f"{number:04d}_claim_function.py"
        path.write_text(TEMPLATE.format(sql=wanted, previous=installed or DROP, parent=leaf))
        self.stdout.write(f"Wrote {path.name}.")

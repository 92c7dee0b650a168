"""Room on every page of fleet_agent for a new row version, so the bulk presence UPDATE
(last-seen, load, clock offset: no indexed column) is a HOT update: no index is touched
and far less WAL is written. PostgreSQL only; pages written before keep no room until
they are rewritten."""

from django.db import migrations


def set_fillfactor(apps, schema_editor, value: int = 70) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE fleet_agent SET (fillfactor = {int(value)})")


def reset_fillfactor(apps, schema_editor) -> None:
    set_fillfactor(apps, schema_editor, 100)


class Migration(migrations.Migration):
    dependencies = [("fleet", "0006_leaner_indexes")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]

import fleet.models.releases
import fleet.versions
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0029_audit_target_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="pinned_version",
            field=fleet.versions.SemVerField(
                blank=True,
                help_text="Pinned to exactly this release: update_available points at it (and nowhere newer) until the pin is lifted.",
                max_length=800,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="update_channel",
            field=models.CharField(
                blank=True,
                choices=[("stable", "Stable"), ("beta", "Beta")],
                db_default="",
                help_text="Pinned to this update channel; empty: its license's channel.",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="customer",
            name="maintenance_days",
            field=models.JSONField(
                blank=True,
                db_default=models.Value([], output_field=models.JSONField()),
                default=list,
                help_text="ISO weekdays (1 Monday … 7 Sunday) on which a maintenance window opens; empty: no window, upgrade waves step at any time.",
            ),
        ),
        migrations.AddField(
            model_name="customer",
            name="maintenance_end",
            field=models.TimeField(
                blank=True,
                help_text="Local time the window closes (earlier than the start: the next day).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="customer",
            name="maintenance_start",
            field=models.TimeField(blank=True, help_text="Local time the window opens.", null=True),
        ),
        migrations.AddField(
            model_name="customer",
            name="update_pins",
            field=models.JSONField(
                blank=True,
                db_default=models.Value([], output_field=models.JSONField()),
                default=list,
                help_text="Pins by label: [{labels: {key: value}, channel, version}]; an agent with every label of a rule follows its channel or version (the first rule that matches; the agent's own pin comes first).",
            ),
        ),
        migrations.AddField(
            model_name="customer",
            name="time_zone",
            field=models.CharField(
                db_default="UTC",
                default="UTC",
                help_text="An IANA time zone (Europe/Berlin): the maintenance window is in it.",
                max_length=64,
            ),
        ),
        migrations.AddField(
            model_name="release",
            name="artifact",
            field=models.FileField(
                blank=True,
                db_default="",
                max_length=255,
                storage=fleet.models.releases.release_storage_for_field,
                upload_to="",
            ),
        ),
        migrations.AddField(
            model_name="release",
            name="sha256",
            field=models.CharField(blank=True, db_default="", max_length=64),
        ),
        migrations.AddField(
            model_name="release",
            name="signature",
            field=models.CharField(blank=True, db_default="", max_length=88),
        ),
        migrations.AddField(
            model_name="release",
            name="size",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name="release",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("artifact", ""), ("sha256", ""), ("signature", ""), ("size__isnull", True)
                    ),
                    models.Q(
                        models.Q(("artifact", ""), _negated=True),
                        ("sha256__regex", "^[0-9a-f]{64}$"),
                        ("size__gte", 0),
                        ("signature__regex", "^[A-Za-z0-9+/]{86}==$"),
                    ),
                    _connector="OR",
                ),
                name="release_artifact_complete",
            ),
        ),
    ]

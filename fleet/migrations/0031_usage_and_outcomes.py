from decimal import Decimal

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0030_release_artifacts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations: list[migrations.operations.base.Operation] = [
        migrations.AddField(
            model_name="job",
            name="cost_usd",
            field=models.DecimalField(db_default=0, decimal_places=6, default=0, max_digits=14),
        ),
        migrations.AddField(
            model_name="job",
            name="input_tokens",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="job",
            name="output_tokens",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="job",
            name="usage",
            field=models.JSONField(
                blank=True,
                db_default=models.Value([], output_field=models.JSONField()),
                default=list,
                help_text="One item per model used: model, provider, tokens, cost_usd.",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="wall_seconds",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="GithubIntegration",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("secret_salt", models.CharField(max_length=64)),
                ("secret_prefix", models.CharField(max_length=32)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.CreateModel(
            name="JobOutcome",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("source", models.CharField(help_text="github, gitlab, human, ...", max_length=50)),
                (
                    "verdict",
                    models.CharField(
                        choices=[
                            ("accepted", "Accepted"),
                            ("changes_requested", "Changes requested"),
                            ("rejected", "Rejected"),
                            ("reverted", "Reverted"),
                        ],
                        max_length=24,
                    ),
                ),
                ("url", models.CharField(blank=True, max_length=2000)),
                ("note", models.TextField(blank=True)),
                ("reported_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["-reported_at", "-id"],
            },
        ),
        migrations.AddField(
            model_name="fleetrollup",
            name="cost_usd",
            field=models.DecimalField(
                db_default=0,
                decimal_places=6,
                default=0,
                help_text="Finished jobs'.",
                max_digits=16,
            ),
        ),
        migrations.AddField(
            model_name="fleetrollup",
            name="jobs_accepted",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="fleetrollup",
            name="jobs_judged",
            field=models.PositiveIntegerField(db_default=0, default=0, help_text="Verdicts."),
        ),
        migrations.AddField(
            model_name="fleetrollup",
            name="tokens",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="fleetsnapshot",
            name="cost_usd_last_hour",
            field=models.DecimalField(db_default=0, decimal_places=6, default=0, max_digits=14),
        ),
        migrations.AddField(
            model_name="fleetsnapshot",
            name="jobs_accepted_last_hour",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="fleetsnapshot",
            name="jobs_judged_last_hour",
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="fleetsnapshot",
            name="tokens_last_hour",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.AddField(
            model_name="fleetsnapshot",
            name="usage_by_role",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="{role: {jobs, tokens, cost_usd, judged, accepted}} over the last hour.",
            ),
        ),
        migrations.AddField(
            model_name="fleetsnapshot",
            name="usage_by_version",
            field=models.JSONField(
                blank=True, default=dict, help_text="The same by the version that ran the job."
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="agent_version",
            field=models.CharField(
                blank=True,
                db_default="",
                help_text="Its agent's version when it finished.",
                max_length=64,
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="pull_request",
            field=models.CharField(
                blank=True,
                db_default="",
                help_text="The result's `pull_request` URL (the GitHub receiver matches it).",
                max_length=500,
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="verdict",
            field=models.CharField(
                blank=True,
                choices=[
                    ("accepted", "Accepted"),
                    ("changes_requested", "Changes requested"),
                    ("rejected", "Rejected"),
                    ("reverted", "Reverted"),
                ],
                db_default="",
                max_length=24,
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="verdict_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="rollout",
            name="acceptance_drop_tolerance",
            field=models.DecimalField(
                db_default=Decimal("0.20"),
                decimal_places=2,
                default=Decimal("0.20"),
                help_text="How much (relative) the upgraded agents' acceptance rate may drop.",
                max_digits=3,
            ),
        ),
        migrations.AddField(
            model_name="rollout",
            name="cost_increase_tolerance",
            field=models.DecimalField(
                db_default=Decimal("0.50"),
                decimal_places=2,
                default=Decimal("0.50"),
                help_text="How much (relative) their cost per accepted job may grow.",
                max_digits=4,
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("verdict_at__isnull", False)),
                fields=["customer", "verdict_at"],
                name="job_judged",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("verdict_at__isnull", False)),
                fields=["verdict_at"],
                name="job_judged_at",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("pull_request", ""), _negated=True),
                fields=["customer", "pull_request"],
                name="job_pull_request",
            ),
        ),
        migrations.AddField(
            model_name="githubintegration",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="githubintegration",
            name="customer",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="github_integration",
                to="fleet.customer",
            ),
        ),
        migrations.AddField(
            model_name="joboutcome",
            name="customer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="fleet.customer"
            ),
        ),
        migrations.AddField(
            model_name="joboutcome",
            name="job",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="outcomes", to="fleet.job"
            ),
        ),
        migrations.AddConstraint(
            model_name="joboutcome",
            constraint=models.UniqueConstraint(
                fields=("job", "source"), name="outcome_one_per_job_source"
            ),
        ),
    ]

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0031_usage_and_outcomes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="BudgetCap",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "scope",
                    models.CharField(
                        choices=[
                            ("customer", "The whole fleet"),
                            ("role", "A role"),
                            ("agent", "An agent"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "scope_key",
                    models.CharField(blank=True, help_text="Role or agent id.", max_length=32),
                ),
                (
                    "period",
                    models.CharField(
                        choices=[("day", "Per day (UTC)"), ("month", "Per month (UTC)")],
                        max_length=8,
                    ),
                ),
                (
                    "max_cost_usd",
                    models.DecimalField(blank=True, decimal_places=6, max_digits=14, null=True),
                ),
                ("max_tokens", models.BigIntegerField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["scope", "scope_key", "period"],
            },
        ),
        migrations.CreateModel(
            name="BudgetSpend",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "scope",
                    models.CharField(
                        choices=[
                            ("customer", "The whole fleet"),
                            ("role", "A role"),
                            ("agent", "An agent"),
                        ],
                        max_length=16,
                    ),
                ),
                ("scope_key", models.CharField(blank=True, max_length=32)),
                (
                    "period",
                    models.CharField(
                        choices=[("day", "Per day (UTC)"), ("month", "Per month (UTC)")],
                        max_length=8,
                    ),
                ),
                (
                    "period_start",
                    models.DateField(help_text="The UTC day, or the first day of the month."),
                ),
                ("cost_usd", models.DecimalField(decimal_places=6, default=0, max_digits=16)),
                ("tokens", models.BigIntegerField(default=0)),
            ],
            options={
                "ordering": ["-period_start"],
            },
        ),
        migrations.CreateModel(
            name="Question",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("text", models.TextField()),
                (
                    "options",
                    models.JSONField(
                        blank=True, default=list, help_text="Suggested answers, if any."
                    ),
                ),
                ("asked_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("answer", models.TextField(blank=True)),
                ("answered_at", models.DateTimeField(blank=True, null=True)),
                ("answered_by_label", models.CharField(blank=True, max_length=200)),
                (
                    "acked_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When the agent said it received the answer.",
                        null=True,
                    ),
                ),
            ],
            options={
                "ordering": ["-asked_at"],
            },
        ),
        migrations.AddField(
            model_name="agent",
            name="activity",
            field=models.CharField(
                blank=True,
                choices=[
                    ("working", "Working"),
                    ("idle", "Idle"),
                    ("waiting_for_input", "Waiting for input"),
                    ("rate_limited", "Rate-limited by its model provider"),
                    ("provider_error", "Model provider failing"),
                    ("budget_exhausted", "Budget exhausted"),
                ],
                db_default="",
                max_length=24,
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="activity_detail",
            field=models.CharField(blank=True, db_default="", max_length=500),
        ),
        migrations.AddField(
            model_name="agent",
            name="activity_provider",
            field=models.CharField(
                blank=True, db_default="", help_text="The model provider it blames.", max_length=50
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="activity_since",
            field=models.DateTimeField(
                blank=True, help_text="When it started reporting its current activity.", null=True
            ),
        ),
        migrations.AddField(
            model_name="fleetsnapshot",
            name="agents_by_activity",
            field=models.JSONField(
                default=dict, help_text="Online agents by role, then by reported activity."
            ),
        ),
        migrations.AddIndex(
            model_name="agent",
            index=models.Index(
                condition=models.Q(("activity__in", ("rate_limited", "provider_error"))),
                fields=["customer", "activity_provider"],
                name="agent_provider_trouble",
            ),
        ),
        migrations.AddField(
            model_name="budgetcap",
            name="customer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="budget_caps",
                to="fleet.customer",
            ),
        ),
        migrations.AddField(
            model_name="budgetspend",
            name="customer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="budget_spend",
                to="fleet.customer",
            ),
        ),
        migrations.AddField(
            model_name="question",
            name="agent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="questions",
                to="fleet.agent",
            ),
        ),
        migrations.AddField(
            model_name="question",
            name="answered_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="question",
            name="customer",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="questions",
                to="fleet.customer",
            ),
        ),
        migrations.AddField(
            model_name="question",
            name="job",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="questions",
                to="fleet.job",
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetcap",
            constraint=models.UniqueConstraint(
                fields=("customer", "scope", "scope_key", "period"), name="budget_cap_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetcap",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("max_cost_usd__isnull", True), ("max_cost_usd__gte", 0), _connector="OR"
                    ),
                    models.Q(("max_tokens__isnull", True), ("max_tokens__gte", 0), _connector="OR"),
                ),
                name="budget_cap_not_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetspend",
            constraint=models.UniqueConstraint(
                fields=("customer", "scope", "scope_key", "period", "period_start"),
                name="budget_spend_unique",
            ),
        ),
        migrations.AddIndex(
            model_name="question",
            index=models.Index(
                fields=["customer", "answered_at", "asked_at"], name="question_open"
            ),
        ),
        migrations.AddIndex(
            model_name="question",
            index=models.Index(
                condition=models.Q(("acked_at__isnull", True), ("answered_at__isnull", False)),
                fields=["agent"],
                name="question_undelivered",
            ),
        ),
        migrations.AddConstraint(
            model_name="question",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("answered_at__isnull", False), ("acked_at__isnull", True), _connector="OR"
                ),
                name="question_acked_only_when_answered",
            ),
        ),
    ]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("fleet", "0029_audit_target_index")]

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
    ]


import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Count, Q


def keep_finished_counts(apps, schema_editor):
    """Waves that ended before this migration keep their counts too."""
    Rollout = apps.get_model("fleet", "Rollout")
    RolloutTarget = apps.get_model("fleet", "RolloutTarget")
    for rollout in Rollout.objects.filter(finished_at__isnull=False).only("pk"):
        counts = RolloutTarget.objects.filter(rollout=rollout).aggregate(
            final_targets=Count("pk", filter=~Q(state="excluded")),
            final_done=Count("pk", filter=Q(state="succeeded")),
        )
        Rollout.objects.filter(pk=rollout.pk).update(**counts)


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0032_activity_budgets_questions'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='job',
            name='job_finished_at',
        ),
        migrations.AddField(
            model_name='rollout',
            name='final_done',
            field=models.PositiveIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='rollout',
            name='final_targets',
            field=models.PositiveIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name='rollouttarget',
            name='rollout',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='targets', to='fleet.rollout'),
        ),
        migrations.AddIndex(
            model_name='agent',
            index=models.Index(fields=['customer', 'status', 'name', 'id'], name='agent_customer_list'),
        ),
        migrations.AddIndex(
            model_name='agent',
            index=models.Index(fields=['name'], name='agent_name'),
        ),
        migrations.AddIndex(
            model_name='agent',
            index=models.Index(fields=['version', 'status'], name='agent_version'),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['finished_at'], include=('customer', 'status'), name='job_finished_at'),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('status', 'running')), fields=['customer', 'agent'], name='job_running_customer'),
        ),
        migrations.AddIndex(
            model_name='rollouttarget',
            index=models.Index(fields=['rollout', 'state'], name='rollout_target_state'),
        ),
        migrations.RunPython(keep_finished_counts, migrations.RunPython.noop, elidable=True),
    ]

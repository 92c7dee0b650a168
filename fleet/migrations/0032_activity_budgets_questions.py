from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("fleet", "0031_usage_and_outcomes")]

    operations: list[migrations.operations.base.Operation] = []

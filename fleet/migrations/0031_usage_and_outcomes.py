from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("fleet", "0029_audit_target_index")]

    operations: list[migrations.operations.base.Operation] = []

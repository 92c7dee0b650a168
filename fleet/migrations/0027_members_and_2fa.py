# Members and sign-in (issue 19): invitations by email (only a digest of each link's token
# is stored; one open invitation per address and customer), the customer's "require
# two-factor" flag, sessions that carry their user's id (SESSION_ENGINE = "fleet.sessions",
# so a removed member's sessions end at once; sessions in django_session from before are
# not carried over: everyone signs in again once), and the audit actions for all of it.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0026_list_order_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='UserSession',
            fields=[
                ('session_key', models.CharField(max_length=40, primary_key=True, serialize=False, verbose_name='session key')),
                ('session_data', models.TextField(verbose_name='session data')),
                ('expire_date', models.DateTimeField(db_index=True, verbose_name='expire date')),
                ('user_id', models.IntegerField(blank=True, db_index=True, null=True)),
            ],
            options={
                'verbose_name': 'session',
                'verbose_name_plural': 'sessions',
                'abstract': False,
            },
        ),
        migrations.AddField(
            model_name='customer',
            name='require_two_factor',
            field=models.BooleanField(db_default=False, default=False, help_text='Every member signs in with a second factor (an authenticator app); members without one are sent to set it up before they use the portal.'),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('agent.activate', 'Agent activated'), ('agent.reactivate', 'Agent recovered a lost activation'), ('agent.rotate_secret', 'Agent secret rotated'), ('agent.heartbeat_state', 'Agent state changed by its heartbeat'), ('agent.offline', 'Agent went offline'), ('agent.decommission', 'Agent decommissioned'), ('agent.pause', 'Agent paused'), ('agent.drain', 'Agent set to drain, then pause'), ('agent.drained', 'Agent drained: its last running job finished, now paused'), ('agent.resume', 'Agent resumed'), ('agent.labels', 'Agent labels changed'), ('agents.bulk', 'Action on every agent matching a filter'), ('agent.clean_up', 'Agent cleaned up after days offline'), ('agent.restore', 'Cleaned-up agent restored'), ('agent.upgrade_succeeded', 'Agent upgraded'), ('agent.upgrade_smoke_check_failed', 'Agent upgrade rolled back (smoke check failed)'), ('agent.upgrade_start_failed', 'Agent upgrade rolled back (start failed)'), ('token.mint', 'Activation tokens minted'), ('token.revoke', 'Activation token revoked'), ('token.expire', 'Activation token expired'), ('token.redemption_refused', 'Token redemption refused'), ('api_key.mint', 'API key minted'), ('api_key.revoke', 'API key revoked'), ('job.submit', 'Job submitted'), ('job.claim', 'Job claimed'), ('job.succeeded', 'Job succeeded'), ('job.failed', 'Job failed'), ('job.queued', 'Job failed and went back to the queue for another try'), ('job.cancel', 'Job cancelled'), ('job.cancel_request', 'Running job told to stop'), ('job.timed_out', 'Running job past its max runtime told to stop'), ('job.stopped', 'Running job stopped by its agent'), ('job.lease_expired', 'Job lease expired'), ('anomaly.open', 'Finding opened'), ('anomaly.resolve', 'Finding resolved'), ('anomaly.reopen', 'Finding reopened'), ('customer.create', 'Customer created'), ('customer.update', 'Customer updated'), ('membership.create', 'Member added'), ('membership.update', "Member's role changed"), ('membership.remove', 'Member removed'), ('membership.invite', 'Member invited by email'), ('membership.invite_withdraw', 'Invitation withdrawn'), ('membership.invite_accept', 'Invitation accepted'), ('user.two_factor_enable', 'Two-factor sign-in turned on'), ('user.two_factor_disable', 'Two-factor sign-in turned off'), ('user.recovery_codes', 'Recovery codes replaced'), ('user.recovery_code_used', 'Signed in with a recovery code'), ('user.password_reset', 'Password reset by email'), ('license.create', 'License created'), ('license.update', 'License updated'), ('license.suspend', 'License suspended'), ('license.resume', 'License resumed'), ('release.publish', 'Release published'), ('release.update', 'Release updated'), ('release.yank', 'Release yanked'), ('rollout.start', 'Upgrade wave started'), ('rollout.batch', 'Upgrade wave moved to its next batch'), ('rollout.pause', 'Upgrade wave paused'), ('rollout.resume', 'Upgrade wave resumed'), ('rollout.floor', 'Upgrade wave online-ratio floor changed'), ('rollout.abort', 'Upgrade wave aborted'), ('rollout.skip_soak', 'Upgrade wave soak skipped'), ('rollout.retry_failed', 'Upgrade wave retried failed agents'), ('rollout.complete', 'Upgrade wave completed'), ('alert_channel.create', 'Alert channel created'), ('alert_channel.delete', 'Alert channel removed'), ('alert_channel.test', 'Test alert sent'), ('alert_channel.disable', 'Alert channel disabled after 24 h of failures'), ('alert_channel.enable', 'Alert channel enabled again'), ('alert.redeliver', 'Alert delivery retried by hand')], max_length=64),
        ),
        migrations.CreateModel(
            name='Invitation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('email', models.EmailField(help_text='Lowercased; the account that accepts must have it.', max_length=254)),
                ('role', models.CharField(choices=[('owner', 'Owner'), ('admin', 'Admin'), ('viewer', 'Viewer')], default='viewer', max_length=16)),
                ('digest', models.CharField(max_length=64, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('expires_at', models.DateTimeField()),
                ('accepted_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('accepted_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('customer', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='invitations', to='fleet.customer')),
                ('invited_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-created_at', '-id'],
                'constraints': [models.UniqueConstraint(condition=models.Q(('accepted_at__isnull', True), ('revoked_at__isnull', True)), fields=('customer', 'email'), name='invitation_one_open_per_email'), models.CheckConstraint(condition=models.Q(('accepted_at__isnull', True), ('revoked_at__isnull', True), _connector='OR'), name='invitation_accepted_or_withdrawn')],
            },
        ),
    ]

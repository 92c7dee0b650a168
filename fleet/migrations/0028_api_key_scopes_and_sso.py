# API keys gain scopes, an optional expiry and the address they were last used from; a
# customer's OpenID Connect provider (SSO) and the identities it signed in.
# Keys minted before this get every scope (the column's database default, which also
# covers rows written without it): they go on doing all they did.

import django.db.models.deletion
import fleet.models.api_keys
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('fleet', '0027_members_and_2fa'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='customerapikey',
            name='scopes',
            field=models.JSONField(
                db_default=models.Value(
                    ['read', 'tokens', 'jobs', 'agents', 'alerts', 'rollouts', 'settings'],
                    output_field=models.JSONField(),
                ),
                default=fleet.models.api_keys.api_key_scopes_all,
            ),
        ),
        migrations.AddField(
            model_name='customerapikey',
            name='expires_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='customerapikey',
            name='last_used_address',
            field=models.GenericIPAddressField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name='CustomerSso',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('issuer', models.URLField(help_text="The provider's issuer URL; its /.well-known/openid-configuration is read.", max_length=500)),
                ('client_id', models.CharField(max_length=255)),
                ('client_secret', models.CharField(max_length=500)),
                ('default_role', models.CharField(choices=[('owner', 'Owner'), ('admin', 'Admin'), ('viewer', 'Viewer')], default='viewer', help_text='The role of someone signing in for the first time; owners change it later.', max_length=16)),
                ('enabled', models.BooleanField(default=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('customer', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='sso', to='fleet.customer')),
            ],
            options={
                'verbose_name': 'customer SSO (OpenID Connect)',
                'verbose_name_plural': 'customer SSO (OpenID Connect)',
            },
        ),
        migrations.CreateModel(
            name='SsoIdentity',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('subject', models.CharField(max_length=255)),
                ('email', models.EmailField(blank=True, max_length=254)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('last_sign_in_at', models.DateTimeField(blank=True, null=True)),
                ('customer', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='fleet.customer')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='sso_identities', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'SSO identity',
                'verbose_name_plural': 'SSO identities',
                'constraints': [models.UniqueConstraint(fields=('customer', 'subject'), name='sso_identity_subject')],
            },
        ),
    ]

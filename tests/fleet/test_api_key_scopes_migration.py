"""Keys minted before scopes existed keep every scope through the migration."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from fleet.choices import ApiKeyScope

BEFORE = [("fleet", "0026_list_order_indexes")]
AFTER = [("fleet", "0028_api_key_scopes_and_sso")]


@pytest.mark.django_db(transaction=True)
def test_keys_from_before_scopes_get_every_scope():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    customer = old.get_model("fleet", "Customer").objects.create(name="Old Co", slug="old-co")
    old.get_model("fleet", "CustomerApiKey").objects.create(
        customer=customer, name="ci", display_prefix="agtn_key_abc", digest="d" * 64
    )
    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    key = new.get_model("fleet", "CustomerApiKey").objects.get(name="ci")
    assert key.scopes == list(ApiKeyScope.values)
    assert key.expires_at is None
    assert key.last_used_address is None
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db
def test_a_key_row_written_without_scopes_holds_every_scope(customer):
    """The column's database default: raw SQL (a bench, a restore script) keeps full scope."""
    from django.utils import timezone

    from fleet.models import CustomerApiKey

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO fleet_customerapikey (customer_id, name, display_prefix, digest,"
            " created_at) VALUES (%s, 'raw', 'agtn_key_raw', %s, %s)",
            [customer.pk, "e" * 64, timezone.now()],
        )
    assert CustomerApiKey.objects.get(name="raw").scopes == list(ApiKeyScope.values)

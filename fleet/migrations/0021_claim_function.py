"""The claim function as fleet/services/jobs.py describes it. Written by
`manage.py claim_function_migration`; do not edit by hand."""

from django.db import migrations

CLAIM_FUNCTION = """CREATE OR REPLACE FUNCTION fleet_claim_job(p_agent bigint, p_customer bigint, p_role text, p_cap integer, p_lease uuid, p_now timestamptz, p_expires timestamptz, p_actor text) RETURNS SETOF fleet_job
LANGUAGE plpgsql AS $claim$
BEGIN
PERFORM status FROM fleet_agent WHERE id = p_agent FOR UPDATE;
RETURN QUERY UPDATE fleet_job
   SET status = 'running', agent_id = p_agent, lease_id = p_lease,
       lease_expires_at = p_expires, started_at = p_now, attempts = attempts + 1
 WHERE id = (
       SELECT id FROM fleet_job
        WHERE customer_id = p_customer AND role = p_role AND status = 'queued'
          AND (SELECT status FROM fleet_agent WHERE id = p_agent) = 'online'
          AND required_labels <@ (SELECT labels FROM fleet_agent WHERE id = p_agent)
          AND (SELECT COUNT(*) FROM fleet_job
                WHERE agent_id = p_agent AND status = 'running') < p_cap
        ORDER BY priority DESC, queued_at, id
        LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING *;
INSERT INTO fleet_auditevent (at, actor_user_id, actor_label, customer_id, action,
                              target_type, target_id, target_repr, changes, ip_address)
SELECT p_now, NULL, p_actor, customer_id, 'job.claim', 'fleet.job', CAST(id AS TEXT),
       'job ' || id || ' (' || role || ', ' || status || ')',
       CAST('{"status": ["queued", "running"], "attempt": [null, ' || attempts || ']}' AS jsonb), NULL
  FROM fleet_job
 WHERE agent_id = p_agent AND status = 'running' AND lease_id = p_lease;
END
$claim$"""
PREVIOUS = """CREATE OR REPLACE FUNCTION fleet_claim_job(p_agent bigint, p_customer bigint, p_role text, p_cap integer, p_lease uuid, p_now timestamptz, p_expires timestamptz, p_actor text) RETURNS SETOF fleet_job
LANGUAGE plpgsql AS $claim$
BEGIN
PERFORM status FROM fleet_agent WHERE id = p_agent FOR UPDATE;
RETURN QUERY UPDATE fleet_job
   SET status = 'running', agent_id = p_agent, lease_id = p_lease,
       lease_expires_at = p_expires, started_at = p_now, attempts = attempts + 1
 WHERE id = (
       SELECT id FROM fleet_job
        WHERE customer_id = p_customer AND role = p_role AND status = 'queued'
          AND (SELECT status FROM fleet_agent WHERE id = p_agent) = 'online'
          AND (SELECT COUNT(*) FROM fleet_job
                WHERE agent_id = p_agent AND status = 'running') < p_cap
        ORDER BY priority DESC, queued_at, id
        LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING *;
INSERT INTO fleet_auditevent (at, actor_user_id, actor_label, customer_id, action,
                              target_type, target_id, target_repr, changes, ip_address)
SELECT p_now, NULL, p_actor, customer_id, 'job.claim', 'fleet.job', CAST(id AS TEXT),
       'job ' || id || ' (' || role || ', ' || status || ')',
       CAST('{"status": ["queued", "running"], "attempt": [null, ' || attempts || ']}' AS jsonb), NULL
  FROM fleet_job
 WHERE agent_id = p_agent AND status = 'running' AND lease_id = p_lease;
END
$claim$"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":  # elsewhere the claim runs inline
        schema_editor.execute(CLAIM_FUNCTION, params=None)


def restore_previous(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PREVIOUS, params=None)


class Migration(migrations.Migration):
    dependencies = [("fleet", "0020_labels")]

    operations = [migrations.RunPython(install, restore_previous)]

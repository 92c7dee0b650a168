"""A year in service of one big customer, seeded on top of the fleet-scale bench's seed by
set-based SQL (INSERT ... SELECT over generate_series): `bench-big` with 100,000 agents on
25,000 hosts, 1,000,000 jobs, about 10,000,000 audit events, a minute snapshot for every
minute of the year, ten upgrade waves over the whole fleet, a year of findings, alerts,
activation tokens and bulk actions, an owner and a staff user. Nothing is rolled up or
pruned yet: the first `fleet.roll_up_and_prune` meets the year as its backlog.

Used by bench.py (`--only year`); not part of the product."""

# ruff: noqa: S608  (the SQL is put together from this module's own constants only)

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from fleet.choices import MemberRole
from fleet.models import Customer, Membership
from fleet.policy import WAVE
from fleet.versions import SemVer

SLUG = "bench-big"
YEAR_DAYS = 365
MINUTES = YEAR_DAYS * 24 * 60  # 525,600 snapshots
AGENTS_PER_HOST = 4
WAVES = 10  # upgrade waves over the year, each to the next minor version, the whole fleet
OWNER, STAFF = "bench-owner", "bench-staff"

# An agent's place in the fleet, from its host number h and slot a (1-4 active, 5 the
# decommissioned predecessor on every fifth host). k picks its status: about 1%% offline
# (some for 40 days, past the customer's 30-day cleanup), 0.5%% paused, 0.2%% draining,
# 0.3%% cleaned up (a third of them more than 7 days ago), the rest online.
_K = "((h * 4 + a) %% 1000)"
_REGISTERED = (
    "CASE WHEN a = 5 THEN %(now)s - interval '364 days' + (h %% 30) * interval '1 day' "
    "ELSE %(now)s - ((h * 7 + a) %% 330 + 2) * interval '1 day' END"
)

STEPS: list[tuple[str, str]] = [
    (
        "customer, licenses, releases",
        """
INSERT INTO fleet_license (customer_id, plan, max_agents, max_concurrent_tasks_per_agent,
                           valid_from, valid_until, suspended, suspended_reason, channel,
                           is_current, created_at)
SELECT %(c)s, v.plan, v.seats, 4, %(now)s - v.days * interval '1 day',
       CASE WHEN v.cur THEN %(now)s + interval '20 days' ELSE NULL END,
       false, '', 'stable', v.cur, %(now)s - v.days * interval '1 day'
  FROM (VALUES ('scale', 60000, 400, false), ('enterprise', 120000, 200, true))
       AS v(plan, seats, days, cur);

INSERT INTO fleet_release (version, channel, published_at, notes, yanked, yanked_reason)
SELECT v, CASE WHEN v = %(beta)s THEN 'beta' ELSE 'stable' END,
       %(now)s - (370 - 33 * (n - 1)) * interval '1 day', '', false, ''
  FROM unnest(%(versions)s::text[] || %(beta)s::text) WITH ORDINALITY AS r(v, n)
ON CONFLICT (version) DO NOTHING;
""",
    ),
    (
        "hosts",
        """
INSERT INTO fleet_host (customer_id, machine_id, hostname, zone, memory_mb, created_at,
                        last_seen_at)
SELECT %(c)s, 'big-m-' || h, 'big-host-' || lpad(h::text, 5, '0'),
       (ARRAY['eu-west-1a', 'eu-west-1b', 'us-east-1a', 'us-east-1b'])[1 + h %% 4],
       CASE WHEN h %% 10 = 0 THEN 131072 ELSE 65536 END,
       %(now)s - interval '365 days', %(now)s - interval '20 seconds'
  FROM generate_series(1, %(hosts)s) h;
""",
    ),
    (
        "activation tokens",
        f"""
INSERT INTO fleet_activationtoken (customer_id, display_prefix, digest, role, note, status,
                                   expires_at, created_at, created_by_id, redeemed_at,
                                   revoked_at, refused_attempts)
SELECT %(c)s, 'agtn_tok_' || left(md5('big-tok-' || h || '-' || a), 6),
       md5('big-tok-' || h || '-' || a) || md5(a || '-big-tok-' || h), '', 'fleet growth',
       'redeemed', reg + interval '7 days', reg - interval '1 hour', %(owner)s, reg, NULL, 0
  FROM generate_series(1, %(hosts)s) h CROSS JOIN generate_series(1, 5) a
 CROSS JOIN LATERAL (SELECT {_REGISTERED} AS reg) r
 WHERE a <= 4 OR h %% 5 = 0;

-- What a year of minting leaves besides: expired, revoked and a few outstanding (some
-- past their expiry, which beat's daily expiry records).
INSERT INTO fleet_activationtoken (customer_id, display_prefix, digest, role, note, status,
                                   expires_at, created_at, created_by_id, redeemed_at,
                                   revoked_at, refused_attempts)
SELECT %(c)s, 'agtn_tok_' || left(md5('big-spare-' || g), 6),
       md5('big-spare-' || g) || md5(g || '-big-spare'), '', 'spare',
       CASE WHEN g <= 3000 THEN 'expired' WHEN g <= 3200 THEN 'revoked' ELSE 'outstanding' END,
       made + interval '7 days', made, %(owner)s, NULL,
       CASE WHEN g > 3000 AND g <= 3200 THEN made + interval '1 day' END, 0
  FROM generate_series(1, 3700) g
 CROSS JOIN LATERAL (SELECT CASE WHEN g <= 3200 THEN %(now)s - (g %% 360 + 8) * interval '1 day'
                                 WHEN g <= 3300 THEN %(now)s - interval '9 days'
                                 ELSE %(now)s - (g %% 6) * interval '1 day' END AS made) m;
""",
    ),
    (
        "agents",
        f"""
INSERT INTO fleet_agent (customer_id, host_id, activation_token_id, name, role, unit_name,
                         state_dir, version, status, secret_prefix, secret_digest,
                         install_key_digest, last_heartbeat_at, registered_at, offline_since,
                         decommissioned_at, cleaned_up_at, paused_reason, labels, load)
SELECT %(c)s, ho.id, t.id, ho.hostname || '-' || a,
       (ARRAY['coder', 'coder', 'coder', 'coder', 'coder', 'reviewer', 'reviewer', 'tester',
              'tester', 'indexer'])[1 + (h + a) %% 10],
       'agentina@' || (1 + (a - 1) %% 4), '/srv/agentina/' || (1 + (a - 1) %% 4),
       CASE WHEN a = 5 THEN %(v_old)s WHEN k %% 100 = 0 THEN %(v18)s
            WHEN k %% 20 = 0 THEN %(v19)s ELSE %(v110)s END,
       CASE WHEN a = 5 THEN 'decommissioned' WHEN k < 9 THEN 'offline'
            WHEN k < 14 THEN 'paused' WHEN k < 16 THEN 'draining'
            WHEN k < 19 THEN 'cleaned_up' ELSE 'online' END,
       'agtn_agt_big', md5('big-' || h || '-' || a) || md5(a || '-big-' || h), '',
       CASE WHEN a = 5 THEN reg + interval '60 days'
            WHEN k < 5 THEN %(now)s - (k + 1) * interval '1 hour'
            WHEN k < 8 THEN %(now)s - interval '10 days'
            WHEN k = 8 THEN %(now)s - interval '40 days'
            WHEN k >= 16 AND k < 19 THEN %(now)s - interval '40 days'
            ELSE %(now)s - (h %% 40) * interval '1 second' END,
       reg,
       CASE WHEN a = 5 THEN NULL
            WHEN k < 5 THEN %(now)s - (k + 1) * interval '1 hour' + interval '3 minutes'
            WHEN k < 8 THEN %(now)s - interval '10 days' + interval '3 minutes'
            WHEN k = 8 OR (k >= 16 AND k < 19) THEN %(now)s - interval '40 days' END,
       CASE WHEN a = 5 THEN reg + interval '60 days' END,
       CASE WHEN a <> 5 AND k >= 16 AND k < 18 THEN %(now)s - interval '3 days'
            WHEN a <> 5 AND k = 18 THEN %(now)s - interval '8 days' END,
       CASE WHEN a <> 5 AND k >= 9 AND k < 16 THEN 'kernel maintenance' ELSE '' END,
       CASE WHEN (h + a) %% 10 = 0 THEN '{{"gpu": "a100"}}'::jsonb
            WHEN (h + a) %% 5 = 1 THEN '{{"pool": "ci"}}'::jsonb ELSE '{{}}'::jsonb END,
       0.4
  FROM generate_series(1, %(hosts)s) h CROSS JOIN generate_series(1, 5) a
 CROSS JOIN LATERAL (SELECT {_K} AS k, {_REGISTERED} AS reg) x
  JOIN fleet_host ho ON ho.customer_id = %(c)s AND ho.machine_id = 'big-m-' || h
  JOIN fleet_activationtoken t
    ON t.digest = md5('big-tok-' || h || '-' || a) || md5(a || '-big-tok-' || h)
 WHERE a <= 4 OR h %% 5 = 0;
""",
    ),
    (
        "jobs",
        """
-- Queued and running now, the rest finished over the year (4%% failed, 1%% cancelled before
-- any agent took them), each on one of the online agents.
INSERT INTO fleet_job (customer_id, role, payload, priority, status, agent_id, attempts,
                       lease_id, lease_expires_at, queued_at, started_at, finished_at, result,
                       error, stop_reason, idempotency_key)
SELECT %(c)s, b.role,
       jsonb_build_object('repo', 'big/monorepo', 'ref', 'main', 'task', 'task-' || j),
       CASE WHEN j %% 50 = 0 THEN 5 ELSE 0 END, s.status,
       CASE WHEN s.status IN ('queued', 'cancelled') THEN NULL ELSE b.id END,
       CASE WHEN s.status IN ('queued', 'cancelled') THEN 0
            WHEN s.status = 'failed' THEN 3 ELSE 1 END,
       CASE WHEN s.status = 'running' THEN gen_random_uuid() END,
       CASE WHEN s.status = 'running' THEN %(now)s + interval '5 minutes' END,
       t.queued,
       CASE WHEN s.status IN ('queued', 'cancelled') THEN NULL
            ELSE t.queued + (20 + j %% 100) * interval '1 second' END,
       CASE WHEN s.status = 'cancelled' THEN t.queued + interval '5 minutes'
            WHEN s.status IN ('succeeded', 'failed')
            THEN t.queued + (140 + j %% 900) * interval '1 second' END,
       CASE WHEN s.status = 'succeeded' THEN '{"ok": true}'::jsonb END,
       CASE WHEN s.status = 'failed' THEN 'exit status 1' ELSE '' END,
       CASE WHEN s.status = 'cancelled' THEN 'operator' ELSE '' END, ''
  FROM generate_series(1, %(jobs)s) j
 CROSS JOIN LATERAL (
   SELECT CASE WHEN j <= %(queued)s + %(running)s AND j > %(queued)s
               THEN 1 + (j - %(queued)s) %% %(n_online)s
               ELSE 1 + (j::bigint * 7919) %% %(n_online)s END AS i,
          CASE WHEN j <= %(queued)s THEN 'queued'
               WHEN j <= %(queued)s + %(running)s THEN 'running'
               WHEN j %% 100 < 4 THEN 'failed' WHEN j %% 100 = 4 THEN 'cancelled'
               ELSE 'succeeded' END AS status) s
  JOIN bench_online b ON b.i = s.i
 CROSS JOIN LATERAL (
   SELECT CASE WHEN j <= %(queued)s THEN %(now)s - j * interval '10 seconds'
               WHEN j <= %(queued)s + %(running)s
               THEN %(now)s - ((j::bigint * 37) %% 1200 + 60) * interval '1 second'
               ELSE %(now)s - interval '1 hour' - (j - %(queued)s - %(running)s)::float8
                    / (%(jobs)s - %(queued)s - %(running)s) * interval '364 days' END AS queued
 ) t;
""",
    ),
    (
        "upgrade waves",
        """
-- Ten waves, one about every 33 days, each to the next minor version over every agent
-- (the fourth aborted after its third batch); the last one five weeks ago.
INSERT INTO fleet_rollout (customer_id, release_id, state, canary_soak, batch_fraction,
                           batch_watch, throughput_drop_tolerance, online_ratio_floor,
                           agent_deadline, canary_agent_id, scope, current_batch,
                           batches_total, step_started_at, skip_soak, paused_from,
                           paused_reason, last_gate, created_by_id, created_at, started_at,
                           finished_at)
SELECT %(c)s, rel.id, CASE WHEN w = 4 THEN 'aborted' ELSE 'completed' END, %(soak)s,
       %(fraction)s, %(watch)s, %(tolerance)s, %(floor)s, %(deadline)s,
       (SELECT min(id) FROM fleet_agent WHERE customer_id = %(c)s), '{}',
       CASE WHEN w = 4 THEN 3 ELSE 10 END, 10, s.start + interval '2 days', false, '', '',
       '{}', %(owner)s, s.start, s.start, s.start + interval '3 days'
  FROM generate_series(1, %(waves)s) w
 CROSS JOIN LATERAL (SELECT %(now)s - (365 - 33 * w) * interval '1 day' AS start) s
  JOIN fleet_release rel ON rel.version = (%(versions)s::text[])[w + 1];

INSERT INTO fleet_rollouttarget (rollout_id, agent_id, batch, state, from_version, offered_at,
                                 reported_at, detail)
SELECT r.id, a.id, b.batch,
       CASE WHEN r.state = 'aborted' AND b.batch > 3 THEN 'pending'
            WHEN w.n = %(waves)s AND a.version <> rel.version THEN
                 CASE WHEN a.id %% 2 = 0 THEN 'rolled_back' ELSE 'failed' END
            ELSE 'succeeded' END,
       (%(versions)s::text[])[w.n],
       CASE WHEN r.state = 'aborted' AND b.batch > 3 THEN NULL
            ELSE r.started_at + b.batch * interval '6 hours' END,
       CASE WHEN r.state = 'aborted' AND b.batch > 3 THEN NULL
            ELSE r.started_at + b.batch * interval '6 hours' + interval '4 minutes' END,
       ''
  FROM fleet_rollout r
  JOIN fleet_release rel ON rel.id = r.release_id
 CROSS JOIN LATERAL (SELECT array_position(%(versions)s::text[], rel.version) - 1 AS n) w
  JOIN fleet_agent a ON a.customer_id = r.customer_id AND a.status <> 'decommissioned'
 CROSS JOIN LATERAL (SELECT CASE WHEN a.id = r.canary_agent_id THEN 0
                                 ELSE 1 + a.id %% 10 END AS batch) b
 WHERE r.customer_id = %(c)s;
""",
    ),
    (
        "findings",
        """
-- Open: one per agent offline now, repeated job failures on a few agents, two fleet-wide.
INSERT INTO fleet_anomaly (customer_id, agent_id, kind, severity, fingerprint, message,
                           first_seen, last_seen, occurrences, resolution_note)
SELECT %(c)s, id, 'agent_offline', 'warning', 'agent_offline:' || id,
       name || ' has not sent a heartbeat since '
            || to_char(last_heartbeat_at, 'YYYY-MM-DD HH24:MI'),
       offline_since, offline_since, 1, ''
  FROM fleet_agent WHERE customer_id = %(c)s AND status = 'offline';
INSERT INTO fleet_anomaly (customer_id, agent_id, kind, severity, fingerprint, message,
                           first_seen, last_seen, occurrences, resolution_note)
SELECT %(c)s, id, 'job_failures', 'warning', 'job_failures:a' || id,
       name || ': 4 failed jobs in the last hour', %(now)s - interval '50 minutes',
       %(now)s - interval '5 minutes', 4, ''
  FROM fleet_agent WHERE customer_id = %(c)s AND status = 'online' AND id %% 5000 = 7;
INSERT INTO fleet_anomaly (customer_id, kind, severity, fingerprint, message, first_seen,
                           last_seen, occurrences, resolution_note)
VALUES (%(c)s, 'version_skew', 'info', 'version_skew:' || %(c)s,
        '6%% of agents are not on the latest release', %(now)s - interval '30 days', %(now)s,
        1, ''),
       (%(c)s, 'anti_pattern', 'info', 'anti_pattern:' || %(c)s || ':testers-per-host',
        'Hosts run more testers than their memory fits', %(now)s - interval '90 days', %(now)s,
        1, '');

-- Resolved over the year.
INSERT INTO fleet_anomaly (customer_id, agent_id, kind, severity, fingerprint, message,
                           first_seen, last_seen, occurrences, resolved_at, resolved_by_id,
                           resolution_note)
SELECT %(c)s, b.id, x.kind, 'warning',
       x.kind || ':' || CASE WHEN x.kind = 'job_failures' THEN 'a' ELSE '' END || b.id,
       'A finding of the year', seen, seen + interval '10 minutes', 1 + g %% 5,
       seen + interval '15 minutes', CASE WHEN g %% 3 = 0 THEN %(owner)s END,
       CASE WHEN g %% 3 = 0 THEN 'Looked into it.' ELSE 'The agent''s heartbeat arrived again.' END
  FROM generate_series(1, %(resolved)s) g
  JOIN bench_active b ON b.i = 1 + (g::bigint * 7919) %% %(n_active)s
 CROSS JOIN LATERAL (
   SELECT (ARRAY['agent_offline', 'agent_offline', 'job_failures', 'clock_skew'])[1 + g %% 4]
          AS kind,
          %(now)s - interval '1 hour' - g::float8 / %(resolved)s * interval '364 days' AS seen
 ) x;
""",
    ),
    (
        "alerts, API keys, bulk actions",
        """
INSERT INTO fleet_customerapikey (customer_id, name, display_prefix, digest, created_at,
                                  created_by_id, last_used_at, revoked_at)
SELECT %(c)s, (ARRAY['ci-pipeline', 'scheduler', 'backfill', 'dashboards', 'old-ci', 'test'])[g],
       'agtn_key_' || left(md5('big-key-' || g), 6), md5('big-key-' || g) || md5(g || '-key'),
       %(now)s - (360 - g * 30) * interval '1 day', %(owner)s, %(now)s - interval '1 minute',
       CASE WHEN g >= 5 THEN %(now)s - interval '60 days' END
  FROM generate_series(1, 6) g;

INSERT INTO fleet_alertchannel (customer_id, kind, name, url, email, routing_key, events,
                                min_severity, secret_salt, secret_prefix, created_at,
                                created_by_id, disabled_reason)
VALUES (%(c)s, 'webhook', 'ops webhook', 'https://hooks.big.example/agentina', '', '', '[]',
        'info', md5('salt-1'), 'whsec_abc', %(now)s - interval '360 days', %(owner)s, ''),
       (%(c)s, 'slack', 'ops channel', 'https://hooks.slack.com/services/T0/B0/big', '', '',
        '[]', 'warning', '', '', %(now)s - interval '300 days', %(owner)s, ''),
       (%(c)s, 'email', 'on-call', '', 'oncall@big.example', '', '[]', 'critical', '', '',
        %(now)s - interval '200 days', %(owner)s, '');

INSERT INTO fleet_alertevent (uid, customer_id, type, severity, created_at, data, dedup_key)
SELECT gen_random_uuid(), %(c)s,
       (ARRAY['agents.offline', 'agents.back_online', 'anomaly.opened', 'rollout.completed',
              'anomalies.daily_digest'])[1 + g %% 5],
       (ARRAY['warning', 'info', 'warning', 'info', 'info'])[1 + g %% 5],
       %(now)s - g * interval '45 minutes', '{}', 'bench:' || g
  FROM generate_series(1, %(alerts)s) g;
INSERT INTO fleet_alertdelivery (customer_id, event_id, channel_id, attempt, state, created_at,
                                 next_attempt_at, retry_until, attempted_at, delivered_at,
                                 status_code, latency_ms, error)
SELECT %(c)s, e.id, ch.id, 1, 'succeeded', e.created_at, e.created_at,
       e.created_at + interval '1 day', e.created_at + interval '1 second',
       e.created_at + interval '1 second', 200, 120, ''
  FROM fleet_alertevent e JOIN fleet_alertchannel ch ON ch.customer_id = e.customer_id
 WHERE e.customer_id = %(c)s;

-- A week's small actions over the year, and a fleet-wide label three weeks ago.
INSERT INTO fleet_bulkaction (customer_id, kind, filters, params, state, agent_ids, total,
                              processed, changed, created_by_id, actor_label, created_at,
                              progressed_at, finished_at)
SELECT %(c)s, k.kind, '{"zone": "eu-west-1a", "q": "big-host-0"}', k.params, 'done', ids.j,
       ids.n, ids.n, ids.n, %(owner)s, %(owner_name)s, at, at + interval '30 seconds',
       at + interval '30 seconds'
  FROM generate_series(1, 52) g
 CROSS JOIN LATERAL (SELECT %(now)s - g * interval '7 days' AS at) t
 CROSS JOIN LATERAL (
   SELECT (ARRAY['pause', 'resume', 'label'])[1 + g %% 3] AS kind,
          (ARRAY['{"reason": "patching"}', '{}', '{"labels": {"pool": "ci"}}'])[1 + g %% 3]::jsonb
          AS params) k
 CROSS JOIN LATERAL (
   SELECT jsonb_agg(id) AS j, count(*)::int AS n
     FROM (SELECT id FROM fleet_agent WHERE customer_id = %(c)s
            ORDER BY id OFFSET (g * 200) %% %(n_active)s LIMIT 200) s) ids;
INSERT INTO fleet_bulkaction (customer_id, kind, filters, params, state, agent_ids, total,
                              processed, changed, created_by_id, actor_label, created_at,
                              progressed_at, finished_at)
SELECT %(c)s, 'label', '{}', '{"labels": {"team": "platform"}}', 'done', jsonb_agg(id),
       count(*), count(*), count(*), %(owner)s, %(owner_name)s, %(now)s - interval '21 days',
       %(now)s - interval '21 days' + interval '4 minutes',
       %(now)s - interval '21 days' + interval '4 minutes'
  FROM fleet_agent WHERE customer_id = %(c)s AND status <> 'decommissioned';
""",
    ),
    (
        "minute snapshots",
        """
INSERT INTO fleet_fleetsnapshot (customer_id, taken_at, agents_total, agents_online,
                                 agents_busy, agents_by_status, agents_by_role, online_ratio,
                                 jobs_completed_last_hour, jobs_failed_last_hour, queue_depth,
                                 jobs_running, wait_p50_seconds, wait_p95_seconds, idle_ratio,
                                 anomalies_unresolved, agents_not_on_latest,
                                 agents_minor_behind, backfilled)
SELECT %(c)s, date_trunc('minute', %(now)s) - m * interval '1 minute', 99000, o.online,
       2000 + m %% 300,
       jsonb_build_object('online', o.online, 'offline', 99000 - o.online - 700,
                          'upgrading', 0, 'draining', 200, 'paused', 500,
                          'cleaned_up', 0, 'decommissioned', 0),
       '{"coder": 49500, "reviewer": 19800, "tester": 19800, "indexer": 9900}',
       o.online / 99000.0, 105 + m %% 17, 4 + m %% 3, 300 + m %% 50, 2000 + m %% 300,
       12.0 + m %% 7, 45.0 + m %% 13, 0.3, 800 + m %% 40, 6000, 990, false
  FROM generate_series(1, %(minutes)s) m
 CROSS JOIN LATERAL (
   SELECT 96000 + (800 * sin(m / 1440.0 * 2 * pi()))::int AS online) o;
""",
    ),
]

# The agents numbered 1..n (online ones, and all but the decommissioned), so a row of a
# generate_series picks one by a join on its number (an array subscript would copy the
# array every row).
_NUMBERED = """
DROP TABLE IF EXISTS bench_online, bench_active;
CREATE TEMP TABLE bench_online AS
SELECT row_number() OVER (ORDER BY id)::int AS i, id, role, name
  FROM fleet_agent WHERE customer_id = %(c)s AND status = 'online';
CREATE TEMP TABLE bench_active AS
SELECT row_number() OVER (ORDER BY id)::int AS i, id, name
  FROM fleet_agent WHERE customer_id = %(c)s AND status <> 'decommissioned';
ANALYZE bench_online;
ANALYZE bench_active;
"""


def _audit_steps(presence: int, other: int) -> list[tuple[str, str]]:
    """The audit log's year: each job's submit, claim and finish (or cancel), each agent's
    comings and goings, and what people, beat and the agents did besides."""
    columns = """INSERT INTO fleet_auditevent (at, actor_user_id, actor_label, customer_id,
                              action, target_type, target_id, target_repr, changes,
                              ip_address)"""
    return [
        (
            "audit: jobs' submits, claims, finishes",
            f"""
{columns}
SELECT j.queued_at, NULL, 'api-key:ci-pipeline', %(c)s, 'job.submit', 'fleet.job', j.id::text,
       'job ' || j.id || ' (' || j.role || ', queued)', '{{}}', '198.51.100.20'
  FROM fleet_job j WHERE j.customer_id = %(c)s;
{columns}
SELECT j.started_at, NULL, 'agent:' || a.name, %(c)s, 'job.claim', 'fleet.job', j.id::text,
       'job ' || j.id || ' (' || j.role || ', running)', '{{}}', '10.20.0.1'
  FROM fleet_job j JOIN fleet_agent a ON a.id = j.agent_id
 WHERE j.customer_id = %(c)s AND j.started_at IS NOT NULL;
{columns}
SELECT j.finished_at,
       CASE WHEN j.status = 'cancelled' THEN %(owner)s END,
       CASE WHEN j.status = 'cancelled' THEN %(owner_name)s ELSE 'agent:' || a.name END,
       %(c)s,
       CASE j.status WHEN 'succeeded' THEN 'job.succeeded' WHEN 'failed' THEN 'job.failed'
            ELSE 'job.cancel' END,
       'fleet.job', j.id::text, 'job ' || j.id || ' (' || j.role || ', ' || j.status || ')',
       jsonb_build_object('status', jsonb_build_array('running', j.status)), '10.20.0.1'
  FROM fleet_job j LEFT JOIN fleet_agent a ON a.id = j.agent_id
 WHERE j.customer_id = %(c)s AND j.finished_at IS NOT NULL;
""",
        ),
        (
            f"audit: agents offline and back ({presence:,})",
            f"""
-- In time order (each agent going offline, then back three minutes later), as the log
-- grows in service: its indexes on time take each row at their end.
{columns}
SELECT %(now)s - interval '1 minute'
         - (%(presence)s - g)::float8 / %(presence)s * interval '364 days'
         + CASE WHEN g %% 2 = 0 THEN interval '3 minutes' ELSE interval '0' END,
       NULL, CASE WHEN g %% 2 = 1 THEN 'system' ELSE 'agent:' || b.name END, %(c)s,
       CASE WHEN g %% 2 = 1 THEN 'agent.offline' ELSE 'agent.heartbeat_state' END,
       'fleet.agent', b.id::text, b.name,
       CASE WHEN g %% 2 = 1 THEN '{{"status": ["online", "offline"]}}'::jsonb
            ELSE '{{"status": ["offline", "online"]}}'::jsonb END,
       CASE WHEN g %% 2 = 1 THEN NULL ELSE '10.20.0.1'::inet END
  FROM generate_series(1, %(presence)s) g
  JOIN bench_active b ON b.i = 1 + ((g + 1) / 2 * 7919::bigint) %% %(n_active)s;
""",
        ),
        (
            f"audit: people, beat and upgrades ({other:,})",
            f"""
WITH findings AS (
  SELECT min(id) AS first, count(*)::int AS n FROM fleet_anomaly WHERE customer_id = %(c)s
)
{columns}
SELECT %(now)s - interval '1 minute' - g::float8 / %(other)s * interval '364 days',
       CASE WHEN x.who = 'user' THEN %(owner)s END,
       CASE x.who WHEN 'user' THEN %(owner_name)s WHEN 'agent' THEN 'agent:' || b.name
                  WHEN 'machine' THEN 'machine:' || b.name ELSE 'system' END,
       %(c)s, x.action,
       CASE WHEN x.action LIKE 'anomaly.%%' THEN 'fleet.anomaly'
            WHEN x.action LIKE 'rollout.%%' THEN 'fleet.rollout'
            WHEN x.action LIKE 'token.%%' THEN 'fleet.activationtoken' ELSE 'fleet.agent' END,
       CASE WHEN x.action LIKE 'anomaly.%%' THEN (fi.first + g %% fi.n)::text
            ELSE b.id::text END,
       b.name, '{{}}',
       CASE WHEN x.who = 'user' THEN '203.0.113.7'::inet END
  FROM findings fi CROSS JOIN generate_series(1, %(other)s) g
  JOIN bench_active b ON b.i = 1 + (g::bigint * 7919) %% %(n_active)s
 CROSS JOIN LATERAL (
   SELECT (ARRAY['agent.pause', 'agent.resume', 'agent.labels', 'agent.upgrade_succeeded',
                 'agent.upgrade_succeeded', 'anomaly.open', 'anomaly.resolve', 'token.mint',
                 'agent.activate', 'rollout.batch', 'agent.drain', 'agent.decommission'])
            [1 + g %% 12] AS action,
          (ARRAY['user', 'user', 'user', 'agent', 'agent', 'system', 'user', 'user',
                 'machine', 'system', 'user', 'user'])[1 + g %% 12] AS who
 ) x;
""",
        ),
    ]


@dataclass(frozen=True)
class YearSize:
    agents: int = 100_000
    jobs: int = 1_000_000
    audit_events: int = 10_000_000
    minutes: int = MINUTES
    queued: int = 300
    running: int = 2_000
    resolved_findings: int = 30_000
    alerts: int = 11_000


def year_users(customer: Customer) -> tuple[User, User]:
    """The customer's owner (the portal's member) and a staff superuser (the admin's)."""
    owner, _ = User.objects.get_or_create(
        username=OWNER, defaults={"email": "owner@big.example", "first_name": "Big"}
    )
    Membership.objects.get_or_create(
        user=owner, customer=customer, defaults={"role": MemberRole.OWNER}
    )
    staff, _ = User.objects.get_or_create(
        username=STAFF, defaults={"is_staff": True, "is_superuser": True}
    )
    return owner, staff


def year_seed(size: YearSize, say: Callable[[str], None]) -> float:
    """Seed the year (unless `bench-big` is there already); returns the seconds it took."""
    if Customer.objects.filter(slug=SLUG).exists():
        say(f"{SLUG} is seeded already (and perhaps pruned by an earlier run): reusing it")
        return 0.0
    started = time.perf_counter()
    with transaction.atomic():  # all of the year or none of it (then a rerun seeds again)
        _skip_reference_checks()
        _seed_steps(size, timezone.now(), say)
        commit_started = time.perf_counter()
    say(f"  {'COMMIT':<51} {time.perf_counter() - commit_started:>7.1f} s")
    step_started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # as autovacuum would have by now
    say(f"  {'VACUUM ANALYZE':<51} {time.perf_counter() - step_started:>7.1f} s")
    return time.perf_counter() - started


def _skip_reference_checks() -> None:
    """Every row the seed writes references rows it made or read by a join, so the
    foreign keys' per-row checks (deferred to the commit: about a minute for the year) are
    skipped, where the database user may (a superuser, as `make bench`'s is)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
    except DatabaseError:
        pass  # checked at the commit, then


def _seed_steps(size: YearSize, now: datetime, say: Callable[[str], None]) -> None:
    year = timedelta(days=YEAR_DAYS)
    customer = Customer.objects.create(
        name="Bench Big",
        slug=SLUG,
        contact_email="fleet-ops@big.example",
        stale_cleanup_days=30,
        stale_cleanup_since=now - year / 2,
    )
    Customer.objects.filter(pk=customer.pk).update(created_at=now - year)
    owner, _ = year_users(customer)
    versions = [SemVer(f"1.{n}.0").db_value for n in range(WAVES + 1)]
    hosts = size.agents // AGENTS_PER_HOST
    params: dict[str, Any] = {
        "c": customer.pk,
        "now": now,
        "owner": owner.pk,
        "owner_name": OWNER,
        "hosts": hosts,
        "jobs": size.jobs,
        "queued": size.queued,
        "running": size.running,
        "minutes": size.minutes,
        "resolved": size.resolved_findings,
        "alerts": size.alerts,
        "waves": WAVES,
        "versions": versions,
        "beta": SemVer(f"1.{WAVES + 1}.0-beta.1").db_value,
        "v_old": versions[WAVES - 3],
        "v18": SemVer("1.8.0").db_value,
        "v19": SemVer("1.9.0").db_value,
        "v110": SemVer("1.10.0").db_value,
        "soak": WAVE.canary_soak,
        "fraction": WAVE.batch_fraction,
        "watch": WAVE.batch_watch,
        "tolerance": WAVE.throughput_drop_tolerance,
        "floor": WAVE.online_ratio_floor,
        "deadline": WAVE.agent_deadline,
    }
    # The jobs' own events are about three a job; agents' presence takes six in seven of
    # the rest, people, beat and upgrades the last seventh.
    rest = max(size.audit_events - 3 * size.jobs, 0)
    params["presence"] = rest * 6 // 7 // 2 * 2  # pairs: offline, then back
    params["other"] = max(rest - params["presence"], 1)
    steps = STEPS[:7] + _audit_steps(params["presence"], params["other"]) + STEPS[7:]
    for name, sql in steps:
        step_started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if name == "agents":
                cursor.execute(_NUMBERED, params)
                cursor.execute(
                    "SELECT (SELECT count(*) FROM bench_online), count(*) FROM bench_active"
                )
                params["n_online"], params["n_active"] = cursor.fetchone()
        say(f"  seeded {name:<44} {time.perf_counter() - step_started:>7.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_online, bench_active")


_refreshed = [0.0]  # when heartbeats_fresh last wrote (time.monotonic)


def heartbeats_fresh(*, every: float = 60.0) -> None:
    """Every agent that is live (online, upgrading, paused, draining) heard from within
    the last 45 s, as a fleet beating every 30-60 s is, and the leases of the jobs they
    run extended as their heartbeats would: what keeps the sweep's and the pages' "online"
    true however long the seeding and the timing took. Written at most once a minute (each
    write is an UPDATE of every live agent), so the newest heartbeat is never older than
    the online window of 3 minutes."""
    if time.monotonic() - _refreshed[0] < every:
        return
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE fleet_agent SET last_heartbeat_at = %s - (id %% 45) * interval '1 second' "
            "WHERE status IN ('online', 'upgrading', 'paused', 'draining')",
            [now],
        )
        cursor.execute(
            "UPDATE fleet_job SET lease_expires_at = %s WHERE status = 'running' "
            "AND lease_expires_at < %s",
            [now + settings.JOB_LEASE, now + settings.JOB_LEASE / 2],
        )
    _refreshed[0] = time.monotonic()

"""Celery tasks: each runs one service; the schedule is CELERY_BEAT_SCHEDULE in settings.
Every task is idempotent and safe to run twice at once (the services lock what they
change); the periodic ones also claim their run (`beat_run_claim`), so a second beat or
a redelivery does nothing at all, and counters are not inflated."""

import logging
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone

from fleet.services.activity import provider_incidents_sweep
from fleet.services.alerts import (
    alert_deliveries_sweep,
    alert_delivery_send,
    alerts_daily_digest,
    alerts_license_watch,
    alerts_online_ratio_watch,
)
from fleet.services.beat import beat_run_claim
from fleet.services.budgets import budget_findings_settle
from fleet.services.bulk import bulk_action_run, bulk_actions_stalled
from fleet.services.cleanup import agents_clean_up_stale
from fleet.services.detections import fleet_detect
from fleet.services.presence import presence_flush
from fleet.services.retention import retention_prune
from fleet.services.rollouts import rollouts_advance_all
from fleet.services.rollups import rollups_daily, rollups_hourly
from fleet.services.snapshots import fleet_snapshots_take
from fleet.services.sweeps import agents_mark_stale
from fleet.services.tokens import token_expire_overdue

logger = logging.getLogger(__name__)


def _claimed(task: str, seconds: int) -> bool:
    if beat_run_claim(task=task, every=timedelta(seconds=seconds), now=timezone.now()):
        return True
    logger.info("%s: another run had this period (a second beat?); nothing done", task)
    return False


@shared_task(name="fleet.mark_stale_agents", bind=True)
def mark_stale_agents(self: Task) -> dict[str, int | bool]:
    if not _claimed(self.name, settings.STALE_SWEEP_SECONDS):
        return {}
    sweep = agents_mark_stale()
    for action_id in bulk_actions_stalled():  # its worker stopped: another goes on
        run_bulk_action.delay(action_id)
    logger.info(
        "stale sweep: %d agent(s) marked offline%s, %d job(s) requeued, %d failed for good",
        sweep.marked_offline,
        " (grace after a gap)" if sweep.in_grace else "",
        sweep.requeued,
        sweep.abandoned,
    )
    return sweep.__dict__


@shared_task(name="fleet.take_snapshots", bind=True)
def take_snapshots(self: Task) -> int:
    if not _claimed(self.name, settings.SNAPSHOT_SECONDS):
        return 0
    snapshots = fleet_snapshots_take()
    findings = fleet_detect(snapshots)
    provider_incidents_sweep()  # (the snapshot flushed the presence buffer first)
    budget_findings_settle()
    alerts_online_ratio_watch()
    logger.info("snapshot: %d customer(s), %d open finding(s)", len(snapshots), len(findings))
    return len(snapshots)


@shared_task(name="fleet.advance_rollouts", bind=True)
def advance_rollouts(self: Task) -> dict[int, str]:
    if not _claimed(self.name, settings.ROLLOUT_ADVANCE_SECONDS):
        return {}
    steps = rollouts_advance_all()
    for rollout_id, what in steps.items():
        logger.info("rollout %d: %s", rollout_id, what)
    return steps


@shared_task(name="fleet.clean_up_stale_agents", bind=True, time_limit=1800)
def clean_up_stale_agents(self: Task) -> dict[str, int | bool]:
    if not _claimed(self.name, 3600):
        return {}
    run = agents_clean_up_stale()
    if run.cleaned_up or run.finalized or run.skipped:
        logger.info(
            "stale cleanup: %d agent(s) cleaned up, %d decommissioned for good%s",
            run.cleaned_up,
            run.finalized,
            " (skipped: heartbeats may be missing from the presence buffer)" if run.skipped else "",
        )
    return run.__dict__


@shared_task(name="fleet.run_bulk_action", acks_late=True, time_limit=3600, soft_time_limit=3500)
def run_bulk_action(action_id: int) -> dict[str, int]:
    """Work through an operator's action on many agents, chunk by chunk; a redelivered or
    repeated message goes on from the progress the last chunk recorded."""
    action = bulk_action_run(action_id)
    logger.info(
        "bulk action %d (%s): %d of %d agents changed",
        action.pk,
        action.kind,
        action.changed,
        action.total,
    )
    return {"processed": action.processed, "changed": action.changed}


@shared_task(name="fleet.roll_up_and_prune", bind=True, time_limit=1800, soft_time_limit=1700)
def roll_up_and_prune(self: Task) -> dict[str, int | bool]:
    """Fold the finished hours and days, then delete what retention says is past its
    period (never before it is folded)."""
    if not _claimed(self.name, 3600):
        return {}
    hours, days = rollups_hourly(), rollups_daily()
    pruned = retention_prune()
    logger.info(
        "retention: %d hour(s) and %d day(s) rolled up; pruned %s%s",
        hours,
        days,
        ", ".join(f"{n} {name}" for name, n in pruned.deleted.items() if n) or "nothing",
        "" if pruned.complete else " (budget spent: the next run goes on)",
    )
    return {"hours": hours, "days": days, **pruned.deleted, "complete": pruned.complete}


@shared_task(name="fleet.expire_tokens")
def expire_tokens() -> int:
    expired = token_expire_overdue()
    logger.info("token expiry: %d token(s) expired", expired)
    return expired


@shared_task(name="fleet.flush_presence")
def flush_presence() -> int:
    flushed = presence_flush()
    if flushed.written or not flushed.complete:
        logger.info(
            "presence flush: %d agent(s) written%s",
            flushed.written,
            "" if flushed.complete else " (buffer lost or unreachable: the sweep holds off)",
        )
    return flushed.written


# A send is bounded by its HTTP timeout (a few seconds), so these limits are generous.
@shared_task(name="fleet.deliver_alert", acks_late=True, time_limit=60, soft_time_limit=45)
def deliver_alert(delivery_id: int) -> str:
    """One attempt of one alert delivery; a duplicate message finds it taken or done."""
    outcome = alert_delivery_send(delivery_id)
    logger.info("alert delivery %d: %s", delivery_id, outcome)
    return outcome


@shared_task(name="fleet.send_due_alerts", bind=True)
def send_due_alerts(self: Task) -> dict[str, int]:
    if not _claimed(self.name, settings.ALERT_DELIVERY_SWEEP_SECONDS):
        return {}
    sweep = alert_deliveries_sweep()
    if sweep.queued or sweep.reclaimed or sweep.summaries:
        logger.info(
            "alert sweep: %d queued, %d reclaimed from stopped senders, %d summaries",
            sweep.queued,
            sweep.reclaimed,
            sweep.summaries,
        )
    return sweep.__dict__


@shared_task(name="fleet.alert_licenses")
def alert_licenses() -> int:
    return len(alerts_license_watch())


@shared_task(name="fleet.anomalies_daily_digest")
def anomalies_daily_digest() -> int:
    return len(alerts_daily_digest())

"""Celery tasks: each runs one service; the schedule is CELERY_BEAT_SCHEDULE in settings."""

import logging

from celery import shared_task

from fleet.services.agents import agent_mark_stale
from fleet.services.tokens import token_expire_overdue

logger = logging.getLogger(__name__)


@shared_task(name="fleet.mark_stale_agents")
def mark_stale_agents() -> int:
    marked = agent_mark_stale()
    logger.info("stale sweep: %d agent(s) marked offline", marked)
    return marked


@shared_task(name="fleet.expire_tokens")
def expire_tokens() -> int:
    expired = token_expire_overdue()
    logger.info("token expiry: %d token(s) expired", expired)
    return expired

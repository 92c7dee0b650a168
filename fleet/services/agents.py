from datetime import datetime

from django.conf import settings
from django.utils import timezone

from fleet.choices import AgentStatus
from fleet.models import Agent


def agent_mark_stale(*, now: datetime | None = None) -> int:
    """One UPDATE: online agents silent past the online window become offline."""
    cutoff = (now or timezone.now()) - settings.AGENT_ONLINE_WINDOW
    return Agent.objects.filter(status=AgentStatus.ONLINE, last_heartbeat_at__lt=cutoff).update(
        status=AgentStatus.OFFLINE
    )

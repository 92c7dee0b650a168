"""Drive beat's sweeps through time, the way beat would: every 30 s."""

from datetime import datetime, timedelta

import time_machine
from django.utils import timezone

from fleet.services.sweeps import StaleSweep, agents_mark_stale

TICK = timedelta(seconds=30)


def sweep_until(end: datetime, *, start: datetime | None = None) -> list[StaleSweep]:
    """Run the stale sweep every 30 s from `start` (now) to `end`, time frozen at each."""
    at, results = start or timezone.now(), []
    while at <= end:
        with time_machine.travel(at, tick=False):
            results.append(agents_mark_stale())
        at += TICK
    return results

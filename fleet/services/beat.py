"""Beat's runs, exactly once: a second beat (a common deployment mistake), an overlapping
run or a redelivered message does nothing, decided by a row in the database, not by the
broker."""

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction

from fleet.models import SweepState


def beat_run_claim(*, task: str, every: timedelta, now: datetime) -> bool:
    """Claim this run of a periodic task: True when no run of it was claimed in the last
    half period, False otherwise (then the caller does nothing). Half a period, not a
    whole one, so one beat's jitter never costs a run, while a second beat's runs
    (or the same run delivered twice) are refused."""
    name = SweepState.beat_name(task)
    if not SweepState.objects.filter(name=name).exists():
        try:
            with transaction.atomic():
                SweepState.objects.create(name=name, last_run_at=now)
                return True
        except IntegrityError:  # another run created it first: it holds this period
            return False
    claimed = SweepState.objects.filter(name=name, last_run_at__lte=now - every / 2).update(
        last_run_at=now
    )
    return claimed == 1

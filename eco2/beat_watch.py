"""Beat, watched: how long ago each periodic job was last sent, and which ones are late.

Beat (django-celery-beat's DatabaseScheduler) writes a job's ``last_run_at`` when it sends it
(``beat_sync_every = 1`` in eco2/celery.py: at once, not every three minutes). A job with an
interval schedule is *late* when nothing was sent for ``BEAT_LATE_AFTER_INTERVALS`` of its
intervals (and at least ``BEAT_LATE_MIN_SECONDS``): beat is down, stuck or has lost its
database. Crontab jobs have no age limit here (a daily job is not late after a few minutes);
their age is still exported.

Exported by ``/metrics`` (``eco2_periodic_task_seconds_since_last_run{task}``,
``eco2_periodic_task_late{task}``), shown in the admin's periodic tasks, and reported by
``/readyz`` for the jobs of ``BEAT_WATCHED_TASKS`` (the relays and the sweeper) without failing
it: a web process serves uploads whether beat runs or not (docs/deployment.md has the alert).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone


@dataclass(frozen=True)
class JobAge:
    name: str  # the periodic task's name (admin)
    task: str  # the registered task it sends
    seconds: float | None  # since beat last sent it; None: never sent
    every: float | None  # its interval in seconds; None: a crontab or other schedule
    late: bool


def late_after(every: float) -> float:
    """Seconds without a send after which an interval job is late."""
    return max(settings.BEAT_LATE_AFTER_INTERVALS * every, settings.BEAT_LATE_MIN_SECONDS)


def _seconds_since(moment: datetime | None, now: datetime) -> float | None:
    return max(0.0, (now - moment).total_seconds()) if moment else None


def job_ages(now: datetime | None = None) -> list[JobAge]:
    """Every enabled periodic job with its age and whether it is late, by name."""
    # imported here: the Celery app imports /metrics' collector (and so this module) before
    # Django's app registry is ready
    from django_celery_beat.models import PeriodicTask

    now = now or timezone.now()
    ages = []
    jobs = PeriodicTask.objects.filter(enabled=True).select_related("interval").order_by("name")
    for job in jobs:
        every = (
            timedelta(**{job.interval.period: job.interval.every}).total_seconds()
            if job.interval is not None
            else None
        )
        sent_ago = _seconds_since(job.last_run_at, now)
        # never sent: quiet since the job was created or last edited (a new deployment is not
        # late in its first minute), though its age stays unknown
        quiet_for = sent_ago if sent_ago is not None else _seconds_since(job.date_changed, now)
        late = every is not None and quiet_for is not None and quiet_for > late_after(every)
        ages.append(JobAge(name=job.name, task=job.task, seconds=sent_ago, every=every, late=late))
    return ages


def late_watched_jobs(now: datetime | None = None) -> list[JobAge]:
    """The late jobs among BEAT_WATCHED_TASKS (the relays and the sweeper)."""
    watched = set(settings.BEAT_WATCHED_TASKS)
    return [age for age in job_ages(now) if age.late and age.task in watched]

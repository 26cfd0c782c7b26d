"""The periodic jobs of the scan pipeline, as django-celery-beat rows.

Created by a data migration (so every deployment has them) and editable in the admin
afterwards: ``ensure_schedules`` only adds what is missing, it never overwrites an edit.
"""

from __future__ import annotations

SCHEDULES = (
    {
        "name": "scans: sweep stalled scans",
        "task": "scans.tasks.sweep_stalled_scans",
        "every_seconds": 60,
        "description": "Re-enqueues scans with no progress for SCAN_STALLED_AFTER_SECONDS from "
        "their current step (up to SCAN_MAX_REQUEUES times), then fails them with a reason.",
    },
    {
        "name": "scans: relay pending dispatches",
        "task": "scans.tasks.relay_pending_dispatches",
        "every_seconds": 10,
        "description": "The outbox relay: publishes the pipeline of accepted scans whose "
        "request could not reach the broker.",
    },
)


def ensure_schedules(periodic_task_model=None, interval_model=None) -> int:
    """Create the missing periodic tasks; return how many were created.

    Takes the model classes so a data migration can pass its historical models.
    """
    if periodic_task_model is None:
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        periodic_task_model, interval_model = PeriodicTask, IntervalSchedule
    created = 0
    for spec in SCHEDULES:
        interval, _ = interval_model.objects.get_or_create(
            every=spec["every_seconds"], period="seconds"
        )
        _, was_created = periodic_task_model.objects.get_or_create(
            name=spec["name"],
            defaults={
                "task": spec["task"],
                "interval": interval,
                "queue": "default",
                "description": spec["description"],
            },
        )
        created += was_created
    return created

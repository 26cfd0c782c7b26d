"""The periodic jobs of the scan pipeline, as django-celery-beat rows.

Created by a data migration (so every deployment has them) and editable in the admin
afterwards: ``ensure_schedules`` only adds what is missing, it never overwrites an edit.
"""

from __future__ import annotations

import json
from typing import Any

# the history tables with a retention job (their settings: scans/services/retention.py)
RETENTION_TABLES = (
    "task_attempts",
    "scan_events",
    "dead_letters",
    "task_reruns",
    "vision_cache",
    "answer_cache",
    "idempotency_keys",
    "photos",
)

SCHEDULES: tuple[dict[str, Any], ...] = (
    {
        # the name beat itself gives this job, so it is not installed twice
        "name": "celery.backend_cleanup",
        "task": "celery.backend_cleanup",
        "crontab": {"minute": "0", "hour": "4"},
        "description": "Deletes task results older than CELERY_RESULT_EXPIRES_DAYS "
        "(django-celery-results).",
    },
    {
        "name": "ops: daily digest to staff",
        "task": "scans.tasks.send_daily_digest",
        "crontab": {"minute": "0", "hour": "9"},
        "description": "E-mails staff yesterday's scans by status and category, failures with "
        "their reasons, tokens and cost.",
    },
    {
        "name": "ops: dead-letter check",
        "task": "scans.tasks.check_dead_letters",
        "every_seconds": 300,
        "description": "Warns staff (at most once an hour) when dead letters wait for review.",
    },
    {
        "name": "scans: sweep stalled scans",
        "task": "scans.tasks.sweep_stalled_scans",
        "every_seconds": 60,
        "description": "Re-enqueues scans with no progress for SCAN_STALLED_AFTER_SECONDS from "
        "their current step (up to SCAN_MAX_REQUEUES times), then fails them with a reason; "
        "writes the summary of batches whose members have all ended.",
    },
    {
        "name": "events: publish pending events",
        "task": "scans.tasks.publish_events",
        "every_seconds": 5,
        "description": "The event outbox relay: publishes ScanCompleted and ScanFailed events "
        "that were not published right after their scan ended.",
    },
    {
        "name": "scans: relay pending dispatches",
        "task": "scans.tasks.relay_pending_dispatches",
        "every_seconds": 10,
        "description": "The outbox relay: publishes the pipeline of accepted scans whose "
        "request could not reach the broker.",
    },
    *(
        {
            "name": f"retention: {table.replace('_', ' ')}",
            "task": "scans.tasks.prune_history",
            "kwargs": {"table": table},
            "every_seconds": 3600,
            "description": f"Deletes expired rows of the {table.replace('_', ' ')} table in "
            "batches of RETENTION_BATCH_SIZE (scans/services/retention.py).",
        }
        for table in RETENTION_TABLES
    ),
    {
        "name": "retention: notifications",
        "task": "notifications.tasks.prune_notifications",
        "every_seconds": 3600,
        "description": "Deletes notifications sent or given up longer ago than "
        "RETENTION_NOTIFICATIONS_DAYS, in batches (notifications/services/retention.py).",
    },
    {
        "name": "notifications: resend pending notifications",
        "task": "notifications.tasks.resend_pending_notifications",
        "every_seconds": 60,
        "description": "Re-enqueues e-mail notifications whose send task was never published "
        "or got lost, and recovers ones stuck in 'sending' after a worker died.",
    },
)


def ensure_schedules(periodic_task_model=None, interval_model=None, crontab_model=None) -> int:
    """Create the missing periodic tasks; return how many were created.

    Takes the model classes so a data migration can pass its historical models.
    """
    from django.conf import settings

    if periodic_task_model is None:
        from django_celery_beat.models import PeriodicTask as periodic_task_model
    # the schedule models of the same app registry (historical ones inside a migration)
    interval_model = interval_model or periodic_task_model._meta.get_field("interval").related_model
    crontab_model = crontab_model or periodic_task_model._meta.get_field("crontab").related_model
    created = 0
    for spec in SCHEDULES:
        if periodic_task_model.objects.filter(name=spec["name"]).exists():
            continue  # edited or disabled in the admin: leave it as it is
        when = {}
        if "crontab" in spec:
            when["crontab"], _ = crontab_model.objects.get_or_create(
                **spec["crontab"],
                day_of_week="*",
                day_of_month="*",
                month_of_year="*",
                timezone=settings.TIME_ZONE,
            )
        else:
            when["interval"], _ = interval_model.objects.get_or_create(
                every=spec["every_seconds"], period="seconds"
            )
        periodic_task_model.objects.create(
            name=spec["name"],
            task=spec["task"],
            queue="default",
            description=spec["description"],
            kwargs=json.dumps(spec.get("kwargs", {})),
            **when,
        )
        created += 1
    return created

"""Retention of notifications: rows sent or given up longer ago than
``RETENTION_NOTIFICATIONS_DAYS``, deleted in batches by beat (pending ones are still owed)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from eco2.db import delete_in_batches

from ..models import Notification, NotificationStatus


def prune_notifications(now: datetime | None = None) -> dict[str, object]:
    """One run of the notifications' retention job: what it deleted, for the task history."""
    days = settings.RETENTION_NOTIFICATIONS_DAYS
    if not days:
        return {"table": "notifications", "deleted": 0, "batches": 0, "kept_for": "ever"}
    now = now or timezone.now()
    rows = Notification.objects.filter(
        status__in=(NotificationStatus.SENT, NotificationStatus.FAILED),
        created_at__lt=now - timedelta(days=days),
    )
    deleted, batches = delete_in_batches(
        rows, batch_size=settings.RETENTION_BATCH_SIZE, max_seconds=settings.RETENTION_RUN_SECONDS
    )
    return {
        "table": "notifications",
        "deleted": deleted,
        "batches": batches,
        "kept_for": f"{days} d",
    }

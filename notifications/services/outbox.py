"""The notification row as outbox: its send task published after commit, the resend sweep."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone

from eco2.celery import app

from ..models import Notification, NotificationStatus
from .sending import SENDING_LEASE, _update

logger = logging.getLogger(__name__)

# The send task's registered name (notifications/tasks.py, which imports these services).
SEND_EMAIL = "notifications.tasks.send_email"

# Publishing gives up fast: the row is committed, and the resend sweep publishes it later.
# A broker outage must not hold up the request or the scan step that completed the scan.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}


def enqueue(notification_id: int) -> bool:
    """Publish the send task; False (logged, not raised) when the broker is unreachable.

    Runs from ``transaction.on_commit``: raising here would fail the caller after its
    transaction committed (e.g. the scan step that completed the scan).
    """
    try:
        app.signature(SEND_EMAIL, args=(notification_id,)).apply_async(
            retry_policy=PUBLISH_RETRY_POLICY
        )
    except Exception as exc:  # kombu raises many connection error types; all mean "not sent"
        logger.warning(
            "notification %s: send task not published (%s); the resend sweep will retry",
            notification_id,
            exc,
        )
        return False
    return True


def _enqueue_on_commit(notification_id: int) -> None:
    transaction.on_commit(partial(enqueue, notification_id))


def resend_pending(older_than_seconds: int = 60, now: datetime | None = None) -> int:
    """Re-publish notifications whose send task never got out or got lost; return how many.

    Pending rows untouched for ``older_than_seconds`` are owed a task (a retry waits at most
    60 s, see tasks.send_email, and touches the row when it fails). Rows stuck in 'sending'
    past SENDING_LEASE lost their worker and go back to pending. A row re-published while its
    old task still turns up is harmless: only one of the two wins the claim.
    """
    now = now or timezone.now()
    resent = 0
    stuck = Notification.objects.filter(
        status=NotificationStatus.SENDING, updated_at__lt=now - SENDING_LEASE
    ).values_list("pk", flat=True)
    for pk in list(stuck):
        recovered = Notification.objects.filter(
            pk=pk, status=NotificationStatus.SENDING, updated_at__lt=now - SENDING_LEASE
        ).update(
            status=NotificationStatus.PENDING,
            last_error="interrupted while sending (worker lost?); sending again",
            updated_at=now,
        )
        if recovered:
            resent += enqueue(pk)
    threshold = now - timedelta(seconds=older_than_seconds)
    owed = Notification.objects.filter(status=NotificationStatus.PENDING, updated_at__lt=threshold)
    for pk in list(owed.values_list("pk", flat=True)):
        # touching updated_at is the claim: two overlapping sweeps publish a row once
        touched = Notification.objects.filter(
            pk=pk, status=NotificationStatus.PENDING, updated_at__lt=threshold
        ).update(updated_at=now)
        if touched:
            resent += enqueue(pk)
    return resent


def send_again(notification_ids: Iterable[int]) -> int:
    """Give failed notifications a fresh set of attempts (admin action); return how many."""
    count = 0
    with transaction.atomic():
        for pk in notification_ids:
            # conditional: two people clicking at once re-enqueue each notification once
            if _update(
                pk, [NotificationStatus.FAILED], status=NotificationStatus.PENDING, attempts=0
            ):
                _enqueue_on_commit(pk)
                count += 1
    return count

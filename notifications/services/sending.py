"""Sending one notification exactly once: the claim, the SMTP send, giving up."""

from __future__ import annotations

import hashlib
import logging
import smtplib
from collections.abc import Iterable
from datetime import timedelta
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db.models import F
from django.utils import timezone

from ..models import Notification, NotificationStatus

logger = logging.getLogger(__name__)

# Celery retries a failed send 5 times (tasks.send_email); the claim refuses a 7th attempt even
# when the row was re-enqueued by the sweep, so a broken mail server is not hammered forever.
MAX_SEND_RETRIES = 5
MAX_ATTEMPTS = MAX_SEND_RETRIES + 1
# A row still 'sending' after this long belongs to a worker that died mid-send (the task's hard
# time limit is 60 s): it is put back to pending. The mail server may have accepted the mail
# just before the crash, so this is at-least-once in that one narrow window.
SENDING_LEASE = timedelta(minutes=5)
# Errors worth another attempt (smtplib's errors and socket errors are all OSErrors; listed
# to say what is meant). 5xx replies among them are permanent and are not retried.
TRANSIENT_SEND_ERRORS = (smtplib.SMTPException, ConnectionError, OSError)


SENT, SKIPPED, FAILED = "sent", "skipped", "failed"


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _is_permanent(exc: BaseException) -> bool:
    """A 5xx reply (unknown mailbox, rejected sender): the same mail will fail again."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _message in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return False


def _message_id(notification: Notification) -> str:
    # Stable per notification: in the one case we may send twice (a worker died right after
    # the server accepted the mail), mail clients can fold the copies into one.
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "eco2.local"
    digest = hashlib.sha256(notification.dedupe_key.encode()).hexdigest()[:16]
    return f"<notification-{notification.pk}.{digest}@{domain}>"


def _send(notification: Notification) -> None:
    message = EmailMessage(
        subject=notification.subject,
        body=notification.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[notification.to_address],
        connection=get_connection(fail_silently=False),
        headers={
            "Message-ID": _message_id(notification),
            "Auto-Submitted": "auto-generated",  # RFC 3834: no vacation auto-replies to us
        },
    )
    message.send()


def _update(notification_id: int, from_statuses: Iterable[str], **fields) -> bool:
    fields["updated_at"] = timezone.now()
    return bool(
        Notification.objects.filter(pk=notification_id, status__in=from_statuses).update(**fields)
    )


def deliver(notification_id: int) -> str:
    """Send one notification once; returns "sent", "skipped" or "failed".

    The claim (pending → sending, attempts + 1) is a conditional UPDATE and the first durable
    write, before the mail server is contacted: of two tasks for the same row (a duplicate
    publish, a redelivery) exactly one gets it, and a row already sent is never sent again.
    A transient SMTP or connection error puts the row back to pending and is re-raised, so
    Celery retries it with backoff. (The one way to a second copy: the worker dies after the
    server accepted the mail and before "sent" is written; see SENDING_LEASE.)
    """
    claimed = Notification.objects.filter(
        pk=notification_id, status=NotificationStatus.PENDING, attempts__lt=MAX_ATTEMPTS
    ).update(
        status=NotificationStatus.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    if not claimed:
        return _not_claimed(notification_id)
    notification = Notification.objects.get(pk=notification_id)
    try:
        _send(notification)
    except TRANSIENT_SEND_ERRORS as exc:
        error = describe_error(exc)
        if _is_permanent(exc):
            _update(
                notification_id,
                [NotificationStatus.SENDING],
                status=NotificationStatus.FAILED,
                last_error=error,
            )
            logger.warning("notification %s rejected for good: %s", notification_id, error)
            return FAILED
        _update(
            notification_id,
            [NotificationStatus.SENDING],
            status=NotificationStatus.PENDING,
            last_error=error,
        )
        logger.info(
            "notification %s: attempt %s failed (%s); will retry",
            notification_id,
            notification.attempts,
            error,
        )
        raise
    except Exception as exc:
        # not a delivery problem (a bad header, a bug): retrying cannot help
        _update(
            notification_id,
            [NotificationStatus.SENDING],
            status=NotificationStatus.FAILED,
            last_error=describe_error(exc),
        )
        raise
    # last_error is kept: it tells why earlier attempts did not go through
    _update(
        notification_id,
        [NotificationStatus.SENDING],
        status=NotificationStatus.SENT,
        sent_at=timezone.now(),
    )
    return SENT


def _not_claimed(notification_id: int) -> str:
    row = (
        Notification.objects.filter(pk=notification_id)
        .values("status", "attempts", "last_error")
        .first()
    )
    if row is None:
        logger.warning("notification %s does not exist (deleted?); not sent", notification_id)
        return SKIPPED
    if row["status"] == NotificationStatus.PENDING and row["attempts"] >= MAX_ATTEMPTS:
        # re-enqueued by the sweep after its retries were spent: stop here
        give_up(notification_id, row["last_error"] or "no attempts left", min_attempts=MAX_ATTEMPTS)
        return FAILED
    logger.info("notification %s is already %s; not sent again", notification_id, row["status"])
    return SKIPPED


def give_up(notification_id: int, reason: str, *, min_attempts: int = 0) -> bool:
    """Mark a notification that is waiting for its next attempt failed, with the reason.

    Called when Celery's retries are used up. A row another task has claimed ('sending') or
    sent is left alone, and so is one with fewer than ``min_attempts`` attempts.
    """
    row = Notification.objects.filter(pk=notification_id).values("attempts").first()
    if row is None:
        return False
    last_error = f"gave up after {row['attempts']} attempt(s): {reason}"[:2000]
    failed = Notification.objects.filter(
        pk=notification_id, status=NotificationStatus.PENDING, attempts__gte=min_attempts
    ).update(status=NotificationStatus.FAILED, last_error=last_error, updated_at=timezone.now())
    if failed:
        logger.warning("notification %s failed: %s", notification_id, last_error)
    return bool(failed)

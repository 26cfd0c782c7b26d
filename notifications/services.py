"""Business logic of notifications: decide, record, then send exactly once.

The pattern is the scan pipeline's: the ``Notification`` row is written (unique
``dedupe_key``) in the caller's transaction, the send task is published only after commit,
and the task claims the row with a conditional UPDATE before it talks to the mail server.
The row is also the outbox: ``resend_pending`` (beat) re-publishes what was never sent.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
from collections.abc import Iterable
from datetime import datetime, timedelta
from email.utils import parseaddr
from functools import partial
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from .models import (
    Notification,
    NotificationChannel,
    NotificationKind,
    NotificationPreference,
    NotificationStatus,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from scans.models import Scan

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
# Publishing gives up fast: the row is committed, and the resend sweep publishes it later.
# A broker outage must not hold up the request or the scan step that completed the scan.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}

SENT, SKIPPED, FAILED = "sent", "skipped", "failed"
ANSWER_EXCERPT_CHARS = 300


# --- publishing -----------------------------------------------------------------------------
def enqueue(notification_id: int) -> bool:
    """Publish the send task; False (logged, not raised) when the broker is unreachable.

    Runs from ``transaction.on_commit``: raising here would fail the caller after its
    transaction committed (e.g. the scan step that completed the scan).
    """
    from .tasks import send_email

    try:
        send_email.apply_async((notification_id,), retry_policy=PUBLISH_RETRY_POLICY)
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


# --- creating -------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    # a newline in a subject would be a header injection (Django refuses to send it)
    return " ".join(str(text).split())


def _bounded_key(key: str) -> str:
    """The dedupe key as stored: long keys keep a readable prefix and a hash of the whole."""
    if len(key) <= 255:
        return key
    return f"{key[:190]}:{hashlib.sha256(key.encode()).hexdigest()}"


def _absolute(path: str) -> str:
    return f"{settings.SITE_URL.rstrip('/')}{path}" if settings.SITE_URL else path


def _excerpt(text: str, limit: int = ANSWER_EXCERPT_CHARS) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def scan_completed_message(scan: Scan) -> tuple[str, str]:
    """Subject and plain-text body (Korean, then English) for a finished scan."""
    category = scan.category
    category_ko = category.middle_ko if category else "분류하지 못함"
    category_en = category.middle_en if category else "not classified"
    answer = _excerpt((scan.answer or {}).get("user_answer", ""))
    link = _absolute(reverse("scans:detail", args=[scan.id]))
    settings_link = _absolute(reverse("notifications:preferences"))
    name = scan.owner.get_username()
    subject = _one_line(f"[Eco²] 스캔 완료 · Scan finished: {category_ko} ({category_en})")
    lines = [
        f"{name}님, 사진 스캔이 끝났습니다.",
        f"분류: {category_ko}",
    ]
    if answer:
        lines.append(f"안내: {answer}")
    lines += [
        f"자세한 배출 방법: {link}",
        "",
        f"Hello {name}, your scan is finished.",
        f"Category: {category_en} ({category_ko})",
    ]
    if answer:
        lines.append(f"Guidance (Korean): {answer}")
    lines += [
        f"All the steps: {link}",
        "",
        "--",
        f"알림 설정 · Notification settings: {settings_link}",
    ]
    return subject, "\n".join(lines) + "\n"


def scan_needs_input_message(scan: Scan) -> tuple[str, str]:
    """Subject and plain-text body (Korean, then English) for a scan that asks which one it
    is: the owner's choice (on the scan page) resumes it."""
    link = _absolute(reverse("scans:detail", args=[scan.id]))
    settings_link = _absolute(reverse("notifications:preferences"))
    name = scan.owner.get_username()
    choices = scan.choices or []
    subject = _one_line("[Eco²] 어느 쪽인지 골라 주세요 · Your scan needs your choice")
    lines = [
        f"{name}님, 사진 속 물건이 무엇인지 확실하지 않아요. 골라 주시면 이어서 안내해 드릴게요.",
    ]
    lines += [f"  - {c.get('item')} → {c.get('category_ko')}" for c in choices]
    lines += [
        f"고르기: {link}",
        "",
        f"Hello {name}, we are not sure what the item in your photo is. Choose one and the "
        "scan goes on.",
    ]
    lines += [f"  - {c.get('item_en') or c.get('item')} → {c.get('category_en')}" for c in choices]
    lines += [
        f"Choose: {link}",
        "",
        "--",
        f"알림 설정 · Notification settings: {settings_link}",
    ]
    return subject, "\n".join(lines) + "\n"


def notify_scan_completed(scan: Scan) -> Notification | None:
    """Record the "scan finished" e-mail for the scan's owner and send it after commit.

    Call it inside the transaction that marks the scan completed: the mail is promised
    exactly when the completion commits, and not at all when it rolls back. Returns the
    notification (also when it already existed), or None when the owner did not opt in or has
    no e-mail address. Calling it again for the same scan creates and sends nothing.
    """
    return _notify_owner(scan, NotificationKind.SCAN_COMPLETED, scan_completed_message)


def notify_scan_needs_input(scan: Scan) -> Notification | None:
    """The same for a scan whose run ended with a question (status needs_input): owners who
    opted in to "scan finished" mails are told it needs their choice. One per scan, however
    often it asks; its completion after the choice still gets the "scan finished" mail."""
    return _notify_owner(scan, NotificationKind.SCAN_NEEDS_INPUT, scan_needs_input_message)


def _notify_owner(scan: Scan, kind: NotificationKind, message) -> Notification | None:
    owner = scan.owner
    if not owner.is_active or not owner.email:
        return None
    opted_in = NotificationPreference.objects.filter(
        user=owner, email_on_scan_completed=True
    ).exists()
    if not opted_in:
        return None
    subject, body = message(scan)
    # get_or_create inserts inside a savepoint and falls back to a read on a unique-key
    # conflict, so a concurrent or repeated call ends with the same single row
    notification, created = Notification.objects.get_or_create(
        dedupe_key=_bounded_key(f"{kind}:{scan.id}:{owner.pk}"),
        defaults={
            "recipient": owner,
            "channel": NotificationChannel.EMAIL,
            "kind": kind,
            "scan": scan,
            "to_address": owner.email,
            "subject": subject,
            "body": body,
        },
    )
    if created:
        _enqueue_on_commit(notification.pk)
    return notification


def notify_staff(kind: str, subject: str, body: str, dedupe_key: str) -> int:
    """One e-mail per active staff user with an address; returns how many were created.

    ``dedupe_key`` names the event (e.g. ``dead_letter_alert:<task id>``); each recipient's
    row gets ``:<user id>`` appended, so repeating the call creates nothing (returns 0) while a
    staff member added later still gets their copy.
    """
    kind = NotificationKind(kind)  # an unknown kind is a programming error: ValueError
    subject = _one_line(subject)[:255]
    staff = (
        get_user_model()
        .objects.filter(is_active=True, is_staff=True)
        .exclude(email="")
        .order_by("pk")
    )
    created_count = 0
    with transaction.atomic():
        for user in staff:
            notification, created = Notification.objects.get_or_create(
                dedupe_key=_bounded_key(f"{dedupe_key}:{user.pk}"),
                defaults={
                    "recipient": user,
                    "channel": NotificationChannel.EMAIL,
                    "kind": kind,
                    "to_address": user.email,
                    "subject": subject,
                    "body": body,
                },
            )
            if created:
                _enqueue_on_commit(notification.pk)
                created_count += 1
    return created_count


# --- sending --------------------------------------------------------------------------------
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


# --- recovery -------------------------------------------------------------------------------
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


# --- preferences ----------------------------------------------------------------------------
def update_preferences(
    user: AbstractBaseUser, *, email: str, email_on_scan_completed: bool
) -> NotificationPreference:
    """Save the user's address and opt-in together (the page edits both at once)."""
    with transaction.atomic():
        if user.email != email:
            user.email = email
            user.save(update_fields=["email"])
        preference, _created = NotificationPreference.objects.update_or_create(
            user=user, defaults={"email_on_scan_completed": email_on_scan_completed}
        )
    return preference


def preferences_for(user: AbstractBaseUser) -> NotificationPreference:
    """The user's preferences; an unsaved default row when they never chose."""
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(
        user=user
    )

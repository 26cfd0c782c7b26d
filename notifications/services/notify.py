"""Deciding and recording a notification, one row per dedupe key, sent after commit."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db import transaction

from ..models import Notification, NotificationChannel, NotificationKind, NotificationPreference
from .messages import _one_line, scan_completed_message, scan_needs_input_message
from .outbox import _enqueue_on_commit

if TYPE_CHECKING:
    from scans.models import Scan


def _bounded_key(key: str) -> str:
    """The dedupe key as stored: long keys keep a readable prefix and a hash of the whole."""
    if len(key) <= 255:
        return key
    return f"{key[:190]}:{hashlib.sha256(key.encode()).hexdigest()}"


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

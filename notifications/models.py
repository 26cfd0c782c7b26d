"""Notifications and the per-user opt-in.

A ``Notification`` row is written before anything is sent: its unique ``dedupe_key`` makes
"one mail per (what, recipient)" hold however often the caller asks, and its status is the
claim that keeps a redelivered or duplicated send task from mailing twice.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class NotificationChannel(models.TextChoices):
    EMAIL = "email", _("E-mail")


class NotificationKind(models.TextChoices):
    SCAN_COMPLETED = "scan_completed", _("Scan completed")
    SCAN_NEEDS_INPUT = "scan_needs_input", _("Scan needs a choice")
    DAILY_DIGEST = "daily_digest", _("Daily digest")
    DEAD_LETTER_ALERT = "dead_letter_alert", _("Dead-letter alert")


class NotificationStatus(models.TextChoices):
    PENDING = "pending", _("Pending")  # waiting for a send task (first or next attempt)
    SENDING = "sending", _("Sending")  # claimed by one task; nobody else may send it
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")  # given up: see last_error


class Notification(models.Model):
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    channel = models.CharField(
        max_length=20, choices=NotificationChannel.choices, default=NotificationChannel.EMAIL
    )
    kind = models.CharField(max_length=30, choices=NotificationKind.choices)
    scan = models.ForeignKey(
        "scans.Scan",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
    )
    # the address at the time of the event: a later change of the user's address does not
    # redirect a mail that was already promised
    to_address = models.EmailField()
    subject = models.CharField(max_length=255)
    body = models.TextField()
    status = models.CharField(
        max_length=20, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text=_("Send attempts claimed so far (1 for the first try).")
    )
    last_error = models.TextField(blank=True)
    dedupe_key = models.CharField(
        max_length=255,
        unique=True,
        help_text=_("One notification per key, e.g. scan_completed:<scan id>:<user id>."),
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # set by every state change (also the conditional UPDATEs): the resend sweep uses it to
    # tell a lost task from one that is waiting for its retry
    updated_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="notification_status_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} → {self.to_address} ({self.status})"


class NotificationPreference(models.Model):
    """What a user wants to be told about. No row means the defaults (nothing)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    email_on_scan_completed = models.BooleanField(
        default=False, help_text=_("E-mail me when a scan is finished.")
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Notification preferences of {self.user}"

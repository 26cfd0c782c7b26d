"""Retention of notifications: rows sent or given up long ago go in batches; pending ones stay."""

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications.models import Notification, NotificationStatus
from notifications.services import prune_notifications
from tests.factories import UserFactory
from tests.notifications.test_notifications import make_notification

pytestmark = pytest.mark.django_db


def test_old_sent_and_given_up_notifications_go_and_pending_ones_stay(settings):
    settings.RETENTION_NOTIFICATIONS_DAYS = 90
    settings.RETENTION_BATCH_SIZE = 2
    user = UserFactory()
    for index, status in enumerate(
        [NotificationStatus.SENT] * 3 + [NotificationStatus.FAILED, NotificationStatus.PENDING]
    ):
        make_notification(user, status=status, dedupe_key=f"old-{index}")
    Notification.objects.update(created_at=timezone.now() - timedelta(days=100))
    recent = make_notification(user, status=NotificationStatus.SENT, dedupe_key="recent")

    run = prune_notifications()

    assert run == {"table": "notifications", "deleted": 4, "batches": 2, "kept_for": "90 d"}
    remaining = Notification.objects.order_by("pk")
    assert [n.status for n in remaining] == [NotificationStatus.PENDING, NotificationStatus.SENT]
    assert remaining.last().pk == recent.pk

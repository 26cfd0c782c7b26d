"""Notifications without a worker: who gets one, exactly one row and one publish per event,
and the send that claims its row before it talks to the mail server."""

from __future__ import annotations

import smtplib
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from notifications import services
from notifications.models import (
    Notification,
    NotificationKind,
    NotificationPreference,
    NotificationStatus,
)
from notifications.tasks import send_email_task
from scans.models import Category, Scan, ScanStatus, ScanStep
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def locmem(settings):
    settings.EMAIL_BACKEND = LOCMEM
    mail.outbox = []
    return mail.outbox


@pytest.fixture
def published(monkeypatch):
    """Ids the send task was published for (nothing reaches a broker)."""
    calls: list[int] = []

    def record(args=None, kwargs=None, **options):
        calls.append(args[0])

    monkeypatch.setattr(send_email_task, "apply_async", record)
    return calls


@pytest.fixture
def opted_in(user):
    NotificationPreference.objects.create(user=user, email_on_scan_completed=True)
    return user


@pytest.fixture
def completed_scan(user):
    category = Category.objects.create(
        code="pet_clear",
        kind="recyclable",
        major_ko="재활용폐기물",
        major_en="Recyclables",
        middle_ko="무색페트병",
        middle_en="Clear PET bottles",
    )
    return Scan.objects.create(
        owner=user,
        image="scans/test.jpg",
        status=ScanStatus.COMPLETED,
        step=ScanStep.DONE,
        progress=100,
        category=category,
        answer={
            "user_answer": "라벨을 떼고 내용물을 비운 뒤 투명 페트병 전용 수거함에 넣어 주세요."
        },
    )


def make_notification(user, **fields) -> Notification:
    defaults = {
        "recipient": user,
        "kind": NotificationKind.DAILY_DIGEST,
        "to_address": user.email,
        "subject": "[Eco²] test",
        "body": "body",
        "dedupe_key": f"test:{Notification.objects.count()}",
    }
    return Notification.objects.create(**{**defaults, **fields})


class ClaimObservingBackend(BaseEmailBackend):
    """Records the row's state at the moment the mail goes out."""

    seen: list[tuple[str, int]] = []

    def send_messages(self, messages):
        for message in messages:
            row = Notification.objects.get(to_address=message.to[0])
            type(self).seen.append((row.status, row.attempts))
        return len(messages)


class TempFailBackend(BaseEmailBackend):
    def send_messages(self, messages):
        raise smtplib.SMTPDataError(451, b"4.3.0 Try again later")


class RejectingBackend(BaseEmailBackend):
    def send_messages(self, messages):
        address = messages[0].to[0]
        raise smtplib.SMTPRecipientsRefused({address: (550, b"5.1.1 No such user")})


# --- notify_scan_completed ------------------------------------------------------------------
def test_nothing_without_opt_in(
    user, completed_scan, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notify_scan_completed(completed_scan) is None
    NotificationPreference.objects.create(user=user, email_on_scan_completed=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notify_scan_completed(completed_scan) is None
    assert not Notification.objects.exists()
    assert published == []


def test_nothing_without_an_email_address(
    opted_in, completed_scan, published, django_capture_on_commit_callbacks
):
    opted_in.email = ""
    opted_in.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notify_scan_completed(completed_scan) is None
    assert not Notification.objects.exists()
    assert published == []


def test_opted_in_owner_gets_one_pending_mail_published_after_commit(
    opted_in, completed_scan, published, django_capture_on_commit_callbacks, settings
):
    settings.SITE_URL = "https://eco2.example"
    with django_capture_on_commit_callbacks(execute=True):
        notification = services.notify_scan_completed(completed_scan)
        assert published == []  # not before the completion is committed
    assert published == [notification.pk]
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING
    assert notification.kind == NotificationKind.SCAN_COMPLETED
    assert notification.channel == "email"
    assert notification.scan_id == completed_scan.id
    assert notification.to_address == opted_in.email
    assert notification.dedupe_key == f"scan_completed:{completed_scan.id}:{opted_in.id}"
    assert "무색페트병" in notification.subject and "Clear PET bottles" in notification.subject
    assert "라벨을 떼고" in notification.body
    assert f"https://eco2.example/scans/{completed_scan.id}/" in notification.body
    assert "Category: Clear PET bottles" in notification.body


def test_notify_twice_makes_one_row_and_one_publish(
    opted_in, completed_scan, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = services.notify_scan_completed(completed_scan)
        second = services.notify_scan_completed(completed_scan)
    with django_capture_on_commit_callbacks(execute=True):
        third = services.notify_scan_completed(completed_scan)
    assert first.pk == second.pk == third.pk
    assert Notification.objects.count() == 1
    assert published == [first.pk]


def test_rolled_back_completion_promises_no_mail(
    opted_in, completed_scan, published, django_capture_on_commit_callbacks
):
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.notify_scan_completed(completed_scan)
        raise RuntimeError("the completing step failed after all")
    assert not Notification.objects.exists()
    assert published == []


def test_a_broker_that_is_down_does_not_fail_the_caller(opted_in, completed_scan, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(send_email_task, "apply_async", down)
    assert services.enqueue(1) is False  # logged; the resend sweep publishes it later


# --- deliver --------------------------------------------------------------------------------
def test_deliver_sends_once_and_marks_sent(user, locmem):
    notification = make_notification(user)
    assert services.deliver(notification.pk) == services.SENT
    assert services.deliver(notification.pk) == services.SKIPPED
    assert len(locmem) == 1
    message = locmem[0]
    assert message.to == [user.email]
    assert message.subject == "[Eco²] test"
    assert message.from_email == "Eco² <noreply@eco2.local>"
    assert message.extra_headers["Message-ID"].startswith(f"<notification-{notification.pk}.")
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT
    assert notification.sent_at is not None
    assert notification.attempts == 1


def test_deliver_on_a_sent_notification_sends_nothing(user, locmem):
    notification = make_notification(
        user, status=NotificationStatus.SENT, attempts=1, sent_at=timezone.now()
    )
    assert services.deliver(notification.pk) == services.SKIPPED
    assert locmem == []
    notification.refresh_from_db()
    assert notification.attempts == 1


def test_deliver_claims_the_row_before_sending(user, settings):
    settings.EMAIL_BACKEND = f"{__name__}.ClaimObservingBackend"
    ClaimObservingBackend.seen = []
    notification = make_notification(user)
    services.deliver(notification.pk)
    assert ClaimObservingBackend.seen == [(NotificationStatus.SENDING, 1)]


def test_deliver_skips_a_row_another_task_is_sending(user, locmem):
    notification = make_notification(user, status=NotificationStatus.SENDING, attempts=1)
    assert services.deliver(notification.pk) == services.SKIPPED
    assert locmem == []


def test_a_temporary_smtp_error_goes_back_to_pending_and_is_raised(user, settings):
    settings.EMAIL_BACKEND = f"{__name__}.TempFailBackend"
    notification = make_notification(user)
    with pytest.raises(smtplib.SMTPDataError):
        services.deliver(notification.pk)
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING
    assert notification.attempts == 1
    assert "451" in notification.last_error

    settings.EMAIL_BACKEND = LOCMEM
    mail.outbox = []
    assert services.deliver(notification.pk) == services.SENT
    notification.refresh_from_db()
    assert notification.attempts == 2
    assert "451" in notification.last_error  # kept: why the first attempt did not go through
    assert len(mail.outbox) == 1


def test_a_permanent_rejection_fails_without_retrying(user, settings):
    settings.EMAIL_BACKEND = f"{__name__}.RejectingBackend"
    notification = make_notification(user)
    assert services.deliver(notification.pk) == services.FAILED
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED
    assert "550" in notification.last_error


def test_no_attempt_beyond_the_limit(user, locmem):
    notification = make_notification(user, attempts=services.MAX_ATTEMPTS, last_error="451 later")
    assert services.deliver(notification.pk) == services.FAILED
    assert locmem == []
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED
    assert notification.last_error == "gave up after 6 attempt(s): 451 later"


def test_deliver_of_a_deleted_notification_is_skipped(db, locmem):
    assert services.deliver(987654) == services.SKIPPED


# --- the task -------------------------------------------------------------------------------
def test_send_email_retries_with_backoff_on_the_notification_queue():
    from eco2.celery import app

    assert send_email_task.name == "notifications.tasks.send_email"
    assert set(send_email_task.autoretry_for) == {smtplib.SMTPException, ConnectionError, OSError}
    assert send_email_task.retry_backoff is True
    assert send_email_task.retry_backoff_max == 60
    assert send_email_task.retry_jitter is False  # 1, 2, 4 … s: never an immediate retry
    assert send_email_task.retry_kwargs == {"max_retries": 5}
    assert app.amqp.router.route({}, send_email_task.name)["queue"].name == "notification"


def test_used_up_retries_mark_the_notification_failed_with_the_reason(user):
    notification = make_notification(user, attempts=6, last_error="SMTPDataError: (451, …)")
    exc = smtplib.SMTPDataError(451, b"4.3.0 Try again later")
    send_email_task.on_failure(exc, "task-id", (notification.pk,), {}, None)
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED
    assert notification.last_error.startswith("gave up after 6 attempt(s): SMTPDataError")
    assert "451" in notification.last_error


def test_on_failure_leaves_a_sent_notification_alone(user):
    notification = make_notification(user, status=NotificationStatus.SENT, attempts=1)
    send_email_task.on_failure(OSError("late"), "task-id", (notification.pk,), {}, None)
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT


# --- notify_staff ---------------------------------------------------------------------------
def test_notify_staff_once_per_active_staff_member_with_an_address(
    staff_user, user, published, django_capture_on_commit_callbacks
):
    second = UserFactory(is_staff=True)
    UserFactory(is_staff=True, email="")  # no address
    UserFactory(is_staff=True, is_active=False)  # left
    with django_capture_on_commit_callbacks(execute=True):
        created = services.notify_staff(
            NotificationKind.DEAD_LETTER_ALERT, "[Eco²] 2 dead letters\n", "review", "dl:2025"
        )
    assert created == 2
    rows = Notification.objects.order_by("recipient_id")
    assert [n.recipient_id for n in rows] == [staff_user.id, second.id]
    assert [n.dedupe_key for n in rows] == [f"dl:2025:{staff_user.id}", f"dl:2025:{second.id}"]
    assert {n.subject for n in rows} == {"[Eco²] 2 dead letters"}  # one line
    assert sorted(published) == sorted(n.pk for n in rows)

    with django_capture_on_commit_callbacks(execute=True):
        again = services.notify_staff(
            NotificationKind.DEAD_LETTER_ALERT, "[Eco²] 2 dead letters", "review", "dl:2025"
        )
    assert again == 0
    assert Notification.objects.count() == 2
    assert len(published) == 2


def test_notify_staff_rejects_an_unknown_kind(staff_user):
    with pytest.raises(ValueError):
        services.notify_staff("carrier_pigeon", "s", "b", "k")


# --- recovery -------------------------------------------------------------------------------
def test_resend_pending_republishes_lost_and_stuck_notifications(user, published):
    now = timezone.now()
    lost = make_notification(user)
    fresh = make_notification(user)
    stuck = make_notification(user, status=NotificationStatus.SENDING, attempts=1)
    busy = make_notification(user, status=NotificationStatus.SENDING, attempts=1)
    done = make_notification(user, status=NotificationStatus.SENT, attempts=1)
    Notification.objects.filter(pk__in=[lost.pk, done.pk]).update(
        updated_at=now - timedelta(minutes=2)
    )
    Notification.objects.filter(pk=stuck.pk).update(updated_at=now - timedelta(minutes=10))

    assert services.resend_pending(now=now) == 2
    assert sorted(published) == sorted([lost.pk, stuck.pk])
    stuck.refresh_from_db()
    assert stuck.status == NotificationStatus.PENDING
    assert "interrupted" in stuck.last_error
    for untouched in (fresh, busy, done):
        before = untouched.status
        untouched.refresh_from_db()
        assert untouched.status == before
    # a second sweep right away does not publish them again
    assert services.resend_pending(now=now) == 0


def test_send_again_gives_failed_notifications_new_attempts(
    user, published, django_capture_on_commit_callbacks
):
    failed = make_notification(user, status=NotificationStatus.FAILED, attempts=6)
    sent = make_notification(user, status=NotificationStatus.SENT, attempts=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.send_again([failed.pk, sent.pk]) == 1
        assert services.send_again([failed.pk]) == 0  # a second click
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (NotificationStatus.PENDING, 0)
    assert published == [failed.pk]


def test_the_resend_schedule_is_installed():
    task = PeriodicTask.objects.get(name="notifications: resend pending notifications")
    assert task.task == "notifications.tasks.resend_pending_notifications"
    assert (task.interval.every, task.interval.period) == (60, "seconds")


# --- the settings page ----------------------------------------------------------------------
URL = "/settings/notifications/"


def test_the_settings_page_requires_login(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_settings_page_saves_the_preference_and_address(client, user):
    client.force_login(user)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    page = client.get(URL)
    assert page.status_code == 200
    assert "E-mail me when a scan is finished" in page.content.decode()

    response = client.post(URL, {"email_on_scan_completed": "on", "email": "me@example.org"})
    assert response.status_code == 302
    assert response["Location"] == URL
    user.refresh_from_db()
    assert user.email == "me@example.org"
    assert NotificationPreference.objects.get(user=user).email_on_scan_completed is True
    assert "Your notification settings were saved." in client.get(URL).content.decode()

    client.post(URL, {"email": "me@example.org"})  # unchecked box: opted out again
    assert NotificationPreference.objects.get(user=user).email_on_scan_completed is False


def test_opting_in_without_an_address_is_refused(client, user):
    client.force_login(user)
    response = client.post(URL, {"email_on_scan_completed": "on", "email": ""})
    assert response.status_code == 400
    assert not NotificationPreference.objects.filter(user=user).exists()


def test_the_nav_links_to_the_settings_page(client, user):
    client.force_login(user)
    assert f'href="{URL}"' in client.get("/scans/").content.decode()


def test_admin_lists_notifications(admin_client, user):
    make_notification(user)
    assert admin_client.get("/admin/notifications/notification/?status=pending").status_code == 200
    assert admin_client.get("/admin/notifications/notificationpreference/").status_code == 200


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_completed_scan_mails_an_opted_in_owner_exactly_once(
    celery_worker, rulebase, user, photo
):
    from rest_framework.test import APIClient

    from notifications.models import Notification, NotificationPreference
    from scans import services
    from tests.conftest import wait_for_scan

    NotificationPreference.objects.update_or_create(
        user=user, defaults={"email_on_scan_completed": True}
    )
    client = APIClient()
    client.force_authenticate(user)
    task_id = client.post(
        "/api/v1/scans", {"image": photo(), "hint": "우유팩"}, format="multipart"
    ).json()["task_id"]
    scan = wait_for_scan(task_id)
    services.run_answer_step(scan.id)  # a redelivered last step changes nothing

    (notification,) = Notification.objects.filter(scan=scan)
    assert (notification.kind, notification.to_address) == ("scan_completed", user.email)
    for _ in range(100):
        notification.refresh_from_db()
        if notification.status == "sent":
            break
        time.sleep(0.1)
    assert notification.status == "sent" and notification.attempts == 1

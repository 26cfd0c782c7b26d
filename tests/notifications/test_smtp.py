"""E-mail through a real Celery worker to a real SMTP server on loopback (aiosmtpd).

The server answers ``451 4.3.0 Try again later`` to the first two messages it is given, then
accepts: the worker has to retry with backoff, and still deliver exactly one mail.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from django.db import transaction

from notifications import services
from notifications.models import (
    Notification,
    NotificationKind,
    NotificationPreference,
    NotificationStatus,
)
from notifications.tasks import send_email_task
from scans.models import Scan, ScanStatus, ScanStep

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

TEMPORARY_FAILURES = 2


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self):
        return message_from_bytes(self.content, policy=policy.default)


class FlakySMTPHandler:
    """451 for the first ``fail_first`` messages, then 250; records what it accepted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self, fail_first: int = TEMPORARY_FAILURES) -> None:
        with self.lock:
            self.fail_first = fail_first
            self.offered = 0
            self.accepted: list[Received] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            self.offered += 1
            if self.offered <= self.fail_first:
                return "451 4.3.0 Try again later"
            self.accepted.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
            )
        return "250 2.0.0 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def smtp_server():
    handler = FlakySMTPHandler()
    # aiosmtpd checks the server is up by connecting to the port it was given: a fixed free
    # port rather than 0
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture
def smtp(smtp_server):
    _controller, handler = smtp_server
    handler.reset()
    return handler


@pytest.fixture
def mail_worker(worker_manager, smtp_server):
    controller, _handler = smtp_server
    # same settings for every test of the module: one worker start
    return worker_manager.ensure(
        EMAIL_URL=f"smtp://127.0.0.1:{controller.port}", SCAN_RETRY_BACKOFF_CAP="2"
    )


def wait_for_notification(pk: int, worker, timeout: float = 30.0) -> Notification:
    deadline = time.monotonic() + timeout
    while True:
        notification = Notification.objects.get(pk=pk)
        if notification.status in (NotificationStatus.SENT, NotificationStatus.FAILED):
            return notification
        if time.monotonic() > deadline:
            pytest.fail(
                f"notification {pk} still {notification.status} after {timeout}s "
                f"(attempts {notification.attempts}, {notification.last_error!r})\n"
                f"{worker.log()[-4000:]}"
            )
        time.sleep(0.1)


def test_a_finished_scan_mail_survives_two_451s_and_arrives_once(mail_worker, smtp, user):
    user.email = "owner@example.com"
    user.save()
    NotificationPreference.objects.create(user=user, email_on_scan_completed=True)
    scan = Scan.objects.create(
        owner=user,
        image="scans/test.jpg",
        status=ScanStatus.COMPLETED,
        step=ScanStep.DONE,
        progress=100,
        answer={"user_answer": "종량제 봉투에 넣어 버려 주세요."},
    )
    with transaction.atomic():  # as the completing step does: published on commit
        notification = services.notify_scan_completed(scan)

    notification = wait_for_notification(notification.pk, mail_worker)
    assert notification.status == NotificationStatus.SENT, notification.last_error
    assert notification.attempts == TEMPORARY_FAILURES + 1
    assert "451" in notification.last_error
    assert notification.sent_at is not None
    time.sleep(1)  # nothing else may turn up late
    assert smtp.offered == TEMPORARY_FAILURES + 1
    assert len(smtp.accepted) == 1
    received = smtp.accepted[0]
    assert received.rcpt_tos == ["owner@example.com"]
    # the stdlib parser keeps the space of a folded encoded-word subject ("Subject:\n =?utf-8…")
    assert received.message["Subject"].strip() == notification.subject
    assert "종량제 봉투에 넣어" in received.message.get_content()
    assert received.message["Message-ID"].startswith(f"<notification-{notification.pk}.")


def test_two_send_tasks_for_one_notification_send_one_mail(mail_worker, smtp, user):
    notification = Notification.objects.create(
        recipient=user,
        kind=NotificationKind.DAILY_DIGEST,
        to_address=user.email,
        subject="[Eco²] sent twice, received once",
        body="digest",
        dedupe_key=f"test:twice:{user.pk}",
    )
    first = send_email_task.delay(notification.pk)
    second = send_email_task.delay(notification.pk)
    try:
        outcomes = sorted([first.get(timeout=30), second.get(timeout=30)])
    except Exception:
        pytest.fail(f"the send tasks did not finish:\n{mail_worker.log()[-4000:]}")
    assert outcomes == [services.SENT, services.SKIPPED]
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT
    assert notification.attempts == TEMPORARY_FAILURES + 1
    assert len(smtp.accepted) == 1
    assert smtp.accepted[0].rcpt_tos == [user.email]
    assert smtp.accepted[0].message["Subject"].strip() == "[Eco²] sent twice, received once"

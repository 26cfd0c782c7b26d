"""Dead letters after the fact: redriving them (``manage.py redrive_dlq``, the admin), and
settling them when their scan completes.

The redrive takes scan.ai.dlq into the DeadLetter table (one row per task id), parks what it
cannot read, and re-enqueues each failed scan of a pending letter once, except those whose
failure is permanent. Tests that need scan.ai.dlq run in the real-services pass (RabbitMQ).
"""

import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.test import Client
from kombu import Producer

from eco2.celery import app
from eco2.queues import SCAN_DEAD_LETTER_EXCHANGE, SCAN_DEAD_LETTER_QUEUE
from scans import services
from scans.broker import (
    DEAD_LETTER_QUEUE,
    PARKED_DEAD_LETTER_QUEUE,
    dead_letter_depth,
)
from scans.models import DeadLetter, Scan, ScanStatus
from scans.services import dead_letters, record_dead_letter
from tests.conftest import SERVICES_MODE, wait_for_scan
from tests.factories import UserFactory
from tests.integration.pipeline.test_malformed_messages import EMBED, task_headers
from tests.support.waiting import wait_for

rabbitmq_only = pytest.mark.skipif(not SERVICES_MODE, reason="scan.ai.dlq exists on RabbitMQ only")


def failed_scan(owner, photo, code: str = "provider_unavailable", task_id: str = "") -> Scan:
    """A failed scan; with ``task_id``, also its dead letter (as the failure handler records)."""
    scan = services.create_scan(owner=owner, image=photo(), hint="캔")
    services.fail_scan(scan.id, code=code, message="why")
    if task_id:
        record_dead_letter(str(scan.id), task_id, "scans.tasks.vision_scan", "vision", code, "why")
    return Scan.objects.get(pk=scan.id)


def redrive(*args: str) -> str:
    out = io.StringIO()
    call_command("redrive_dlq", *args, stdout=out)
    return out.getvalue()


def read_queue(queue) -> list[bytes]:
    """Take every message off ``queue``; their raw bodies."""
    bodies = []
    with app.connection_for_write() as conn:
        bound = queue(conn.default_channel)
        bound.declare()
        while (message := bound.get(no_ack=True)) is not None:
            body = message.body  # amqp hands a UTF-8 body over as str
            bodies.append(body.encode() if isinstance(body, str) else body)
    return bodies


def publish_dead_letter(task_id: str, body: bytes) -> None:
    """A message on scan.ai.dlq, as RabbitMQ leaves it after a rejection."""
    with app.connection_for_write() as conn:
        DEAD_LETTER_QUEUE(conn.default_channel).declare()
        Producer(conn.default_channel).publish(
            body,
            exchange=SCAN_DEAD_LETTER_EXCHANGE,
            routing_key=SCAN_DEAD_LETTER_QUEUE,
            headers={
                **task_headers("scans.tasks.vision_scan", task_id),
                "x-death": [{"reason": "rejected", "queue": "scan.ai.pipeline", "count": 1}],
            },
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )


def arguments(*args) -> bytes:
    return json.dumps([list(args), {}, EMBED]).encode()


@pytest.fixture
def empty_queues():
    if SERVICES_MODE:
        read_queue(DEAD_LETTER_QUEUE)
        read_queue(PARKED_DEAD_LETTER_QUEUE)


# --- redrive ----------------------------------------------------------------------------------
@rabbitmq_only
@pytest.mark.django_db
def test_junk_on_the_dlq_is_set_aside_and_reported_and_every_failed_scan_is_redriven(
    user, photo, empty_queues
):
    on_the_queue = failed_scan(user, photo)  # its message is on scan.ai.dlq, not in the DB
    publish_dead_letter("t-queue", arguments(str(on_the_queue.id)))
    in_the_db = failed_scan(user, photo, task_id="t-db")  # recorded, not on the queue
    junk = {
        "t-json": b'[["not quite JSON"',
        "t-uuid": arguments("not-a-uuid"),
        "t-gone": arguments(str(uuid.uuid4())),
    }
    for task_id, body in junk.items():
        publish_dead_letter(task_id, body)

    out = redrive()

    assert "Drained 4 message(s); re-enqueued 2 scan(s)." in out, out
    assert "Set aside 3 unreadable message(s)" in out and "scan.ai.dlq.parked" in out, out
    for scan in (on_the_queue, in_the_db):
        scan.refresh_from_db()
        assert (scan.status, scan.retry_count) == (ScanStatus.QUEUED, 1)
        assert scan.dead_letters.get().redriven_by == "manage.py redrive_dlq"
    # set aside, not lost: verbatim on the parking queue, and pending in the DB for a person
    assert sorted(read_queue(PARKED_DEAD_LETTER_QUEUE)) == sorted(junk.values())
    parked = DeadLetter.objects.filter(task_id__in=junk)
    assert {(d.task_id, d.reason_code) for d in parked} == {
        ("t-json", "malformed_message"),
        ("t-uuid", "malformed_message"),
        ("t-gone", "unknown_scan"),
    }
    assert all(d.scan_id is None for d in parked) and parked.pending().count() == 3
    assert dead_letter_depth() == 0
    assert "3 dead letter(s) name no scan" in redrive(), "reported again until dismissed"


@pytest.mark.django_db
def test_dead_letters_recorded_in_the_db_are_redriven_when_the_queue_cannot_be_read(
    user, photo, monkeypatch
):
    from kombu.exceptions import OperationalError

    from scans.management.commands import redrive_dlq

    def unreachable(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(dead_letters, "sort_dead_letters", unreachable)
    monkeypatch.setattr(redrive_dlq, "dead_letter_depth", unreachable)
    scan = failed_scan(user, photo, task_id="t-db")

    out = redrive()

    assert "Could not read scan.ai.dlq (OperationalError" in out and "re-enqueued 1 scan(s)" in out
    scan.refresh_from_db()
    assert scan.status == ScanStatus.QUEUED


@pytest.mark.django_db
def test_a_dead_letter_recorded_while_a_redrive_runs_is_left_for_the_next(
    user, photo, monkeypatch, empty_queues
):
    """A worker dead-letters another scan while the redrive re-enqueues the first: that new
    letter was marked redriven with the others, and its scan never ran again."""
    failed_scan(user, photo, task_id="t-first")
    second = failed_scan(user, photo)
    retry_scans = services.retry_scans

    def retry_while_a_worker_dead_letters_the_second(scan_ids, *, actor=""):
        record_dead_letter(str(second.id), "t-late", "scans.tasks.answer_gen", "answer", "x", "y")
        return retry_scans(scan_ids, actor=actor)

    monkeypatch.setattr(dead_letters, "retry_scans", retry_while_a_worker_dead_letters_the_second)

    out = redrive()

    assert "re-enqueued 1 scan(s)" in out
    assert DeadLetter.objects.get(task_id="t-first").redriven_at is not None
    late = DeadLetter.objects.get(task_id="t-late")
    assert late.redriven_at is None, "marked redriven, but its scan was not re-enqueued"
    second.refresh_from_db()
    assert second.status == ScanStatus.FAILED
    assert "re-enqueued 1 scan(s)" in redrive(), "the next run redrives it"
    second.refresh_from_db()
    assert second.status == ScanStatus.QUEUED


@pytest.mark.django_db
def test_permanent_failures_are_skipped_and_reported_unless_forced(user, photo, empty_queues):
    refused = failed_scan(user, photo, code="image_url_refused", task_id="t-refused")
    unusable = failed_scan(user, photo, code="corrupt", task_id="t-corrupt")
    busy = failed_scan(user, photo, code="provider_unavailable", task_id="t-busy")

    out = redrive()

    assert "re-enqueued 1 scan(s)" in out
    assert "Skipped 2 scan(s) whose failure is permanent (corrupt: 1, image_url_refused: 1)" in out
    assert "--force" in out
    statuses = dict(Scan.objects.values_list("id", "status"))
    assert statuses[busy.id] == ScanStatus.QUEUED
    assert statuses[refused.id] == statuses[unusable.id] == ScanStatus.FAILED
    assert set(DeadLetter.objects.pending().values_list("task_id", flat=True)) == {
        "t-refused",
        "t-corrupt",
    }

    assert "re-enqueued 2 scan(s)" in redrive("--force")
    assert not DeadLetter.objects.pending().exists()
    assert Scan.objects.filter(status=ScanStatus.QUEUED).count() == 3


@pytest.mark.django_db
def test_the_admin_redrive_says_what_it_skipped_and_letters_can_be_dismissed(user, photo):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    failed_scan(user, photo, code="corrupt", task_id="t-corrupt")
    failed_scan(user, photo, code="worker_lost", task_id="t-lost")
    record_dead_letter(None, "t-junk", "scans.tasks.vision_scan", "", "malformed_message", "{")

    response = client.post(
        "/admin/scans/deadletter/",
        {"action": "redrive_selected", "_selected_action": list(DeadLetter.objects.values_list("pk", flat=True))},
        follow=True,
        HTTP_ACCEPT_LANGUAGE="en",
    )  # fmt: skip

    page = response.content.decode()
    assert "1 scan(s) re-enqueued." in page
    assert "Skipped 1 scan(s) whose failure is permanent: corrupt (1)." in page
    assert "Skipped 1 dead letter(s) that name no scan" in page
    assert set(DeadLetter.objects.pending().values_list("task_id", flat=True)) == {
        "t-corrupt",
        "t-junk",
    }

    response = client.post(
        "/admin/scans/deadletter/",
        {"action": "dismiss_selected", "_selected_action": list(DeadLetter.objects.pending().values_list("pk", flat=True))},
        follow=True,
        HTTP_ACCEPT_LANGUAGE="en",
    )  # fmt: skip

    assert "2 dead letter(s) dismissed." in response.content.decode()
    assert not DeadLetter.objects.pending().exists()


@rabbitmq_only
@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_redrive_retries_a_crashed_scan_and_leaves_a_refused_url_on_record(
    celery_worker, rulebase, user, photo, empty_queues
):
    """End to end on RabbitMQ: both failures reach scan.ai.dlq; the redrive re-runs the scan
    whose step crashed and does not send the refused URL round again."""
    from tests.fakes.providers import CRASH_HINT

    refused = services.create_scan(owner=user, image_url="http://127.0.0.1/photo.jpg")
    crashed = services.create_scan(owner=user, image=photo(), hint=CRASH_HINT)
    assert wait_for_scan(refused.id).error_code == "image_url_refused"
    assert wait_for_scan(crashed.id).error_code == "internal_error"
    # the failure is stored before its message is rejected to the dead-letter queue
    wait_for(lambda: dead_letter_depth() == 2, 10, "both failures on scan.ai.dlq")

    out = redrive()

    assert "re-enqueued 1 scan(s)" in out
    assert "Skipped 1 scan(s) whose failure is permanent (image_url_refused: 1)" in out
    crashed = wait_for_scan(crashed.id)  # the same hint fails it again: a second dead letter
    assert (crashed.status, crashed.retry_count, crashed.dead_letters.count()) == (
        ScanStatus.FAILED,
        1,
        2,
    )
    refused.refresh_from_db()
    assert (refused.status, refused.retry_count) == (ScanStatus.FAILED, 0)
    assert refused.dead_letters.pending().count() == 1, "kept for a person (or --force)"


# --- a scan that completes settles its dead letters -------------------------------------------
@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_retried_scan_that_completes_resolves_its_dead_letter_and_the_alert_stops(
    openai_worker, fake_openai, rulebase, user, photo, settings, empty_queues
):
    from notifications.models import Notification
    from scans.tasks import check_dead_letters_task
    from tests.eco2.test_monitoring import TOKEN, scrape, value
    from tests.fakes.openai_server import ok, refusal
    from tests.integration.pipeline.test_pipeline_openai import ANSWER, GUIDANCE, PET_BOTTLE, VISION

    settings.METRICS_TOKEN = TOKEN
    fake_openai.enqueue_for_schema(VISION, refusal("no"))
    fake_openai.set_default_for_schema(VISION, lambda body: ok(PET_BOTTLE))
    fake_openai.set_default_for_schema(ANSWER, lambda body: ok(GUIDANCE))
    staff = UserFactory(is_staff=True, is_superuser=True, email="ops@example.com")
    scan = services.create_scan(owner=user, image=photo(), hint="생수병")
    assert wait_for_scan(scan.id).error_code == "provider_refused"
    assert value(scrape(), "eco2_dead_letters", state="pending") == 1

    client = Client()
    client.force_login(staff)
    client.post("/admin/scans/scan/", {"action": "retry_selected", "_selected_action": [scan.id]})
    scan = wait_for_scan(scan.id)

    assert scan.status == ScanStatus.COMPLETED
    letter = scan.dead_letters.get()
    assert letter.resolved_at is not None and letter.resolved_by == "scan completed"
    metrics = scrape()
    assert value(metrics, "eco2_dead_letters", state="pending") == 0
    assert value(metrics, "eco2_dead_letters", state="resolved") == 1
    assert check_dead_letters_task() == 0, "no warning about a scan that completed"
    assert not Notification.objects.filter(kind="dead_letter_alert").exists()
    assert dead_letter_depth() in (None, 0), "its copy on scan.ai.dlq is taken off"


@pytest.mark.django_db
def test_a_dead_letter_reported_after_its_scan_completed_is_resolved_at_once(user, photo):
    """Two copies of a step (a redelivery beside a cancelled run): one completes the scan, the
    other fails afterwards and is dead-lettered; nobody needs to look at that letter."""
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    Scan.objects.filter(pk=scan.pk).update(status=ScanStatus.COMPLETED)

    record_dead_letter(str(scan.id), "t-copy", "scans.tasks.answer_gen", "answer", "x", "y")

    assert not DeadLetter.objects.pending().exists()
    assert DeadLetter.objects.get(task_id="t-copy").resolved_by == "scan completed"

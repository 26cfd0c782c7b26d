"""The pipeline on quorum queues: a scan end to end, a countdown retry through Celery's native
delayed delivery, and poison messages dead-lettered, recorded, never dropped, never looping.

Real worker subprocesses against the real RabbitMQ, in a vhost of quorum queues
(`make test-quorum`: CELERY_QUEUE_TYPE=quorum, CELERY_DELIVERY_LIMIT=2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from django.conf import settings
from kombu import Producer

from eco2.celery import app
from eco2.queues import CONSUMED_QUEUES, DEFAULT_QUEUE, NOTIFICATION_QUEUE, SCAN_PIPELINE_QUEUE
from scans import services
from scans.broker import DEAD_LETTER_QUEUE, PARKED_DEAD_LETTER_QUEUE, dead_letter_depth
from scans.models import DeadLetter, Scan, ScanStatus, TaskAttempt
from tests.fakes.providers import POISON_HINT
from tests.integration.chaos.conftest import (
    assert_all_completed,
    assert_invariants,
    run_poison_beside_healthy,
    upload_many,
    wait_all_terminal,
)
from tests.integration.pipeline.test_malformed_messages import task_headers

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


def vhost() -> str:
    return unquote(urlsplit(settings.CELERY_BROKER_URL).path.lstrip("/")) or "/"


def queue_depth(name: str) -> int:
    queue = app.amqp.queues.get(name, PARKED_DEAD_LETTER_QUEUE)
    assert queue.name == name
    with app.connection_for_write() as conn:
        bound = queue(conn.default_channel)
        bound.declare()
        declared: Any = bound.queue_declare(passive=True)  # amqp's queue_declare_ok_t
        return int(declared.message_count)


@pytest.mark.skipif(not shutil.which("rabbitmqctl"), reason="needs rabbitmqctl on this host")
def test_every_queue_is_a_quorum_queue_with_a_delivery_limit_and_dead_lettering(worker_manager):
    worker_manager.ensure()  # the worker has declared its queues and the delayed-delivery ones
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost(), "name", "type", "arguments",
         "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    queues = {q["name"]: q for q in json.loads(listed)}
    for name in CONSUMED_QUEUES:
        assert queues[name]["type"] == "quorum", name
        arguments = {key: value for key, _type, value in queues[name]["arguments"]}
        assert arguments["x-delivery-limit"] == settings.CELERY_DELIVERY_LIMIT, name
        assert arguments["x-dead-letter-exchange"] == "scan.ai.dlx", name
        assert arguments["x-dead-letter-strategy"] == "at-least-once", name
    # the DLQ stays classic: reading it (basic.get, put back) must not count as deliveries
    assert queues[DEAD_LETTER_QUEUE.name]["type"] == "classic"
    assert "celery_delayed_0" in queues, "native delayed delivery was not set up"


def test_a_scan_runs_end_to_end_on_quorum_queues(worker_manager, rulebase, api):
    worker_manager.ensure()
    ids = upload_many(api, 2, hint="콜라 캔")
    scans = wait_all_terminal(ids, timeout=60)
    assert_all_completed(scans)
    assert_invariants(ids)


def test_a_step_whose_process_dies_is_retried_by_delayed_delivery_then_dead_lettered(
    worker_manager, rulebase, api
):
    """The pool process running the step dies every time: Celery sends the step again with a
    2 s countdown (native delayed delivery on quorum queues: more than two retries in a row,
    Celery #10111), then rejects it into scan.ai.dlq; the scans beside it complete."""
    worker_manager.ensure(concurrency=2)
    _, ids = run_poison_beside_healthy(api, healthy=3)
    assert_invariants(ids)


def test_a_message_that_kills_its_whole_worker_is_dead_lettered_at_the_delivery_limit(
    worker_manager, rulebase, api
):
    """On the threads pool (the AI workers) a step that kills its process kills the worker:
    no process is left to report or retry, and RabbitMQ gets the message back with every
    restart. The queue's delivery limit ends that: after CELERY_DELIVERY_LIMIT returns the
    broker dead-letters it into scan.ai.dlq, where the dead-letter check records it and fails
    the scan with a reason. Never dropped, never looping."""
    limit = settings.CELERY_DELIVERY_LIMIT
    before = dead_letter_depth()
    worker_manager.ensure(pool="threads", concurrency=4)
    poison = upload_many(api, 1, hint=POISON_HINT)
    scan_id = poison[0]

    # a supervisor's restart policy (compose: restart unless-stopped), until the broker gives up
    deadline = time.monotonic() + 120
    while dead_letter_depth() == before:
        assert time.monotonic() < deadline, "the poison message was never dead-lettered"
        worker_manager.ensure(pool="threads", concurrency=4)  # restarts a dead worker
        time.sleep(0.2)

    deliveries = TaskAttempt.objects.filter(scan_id=scan_id, step="vision")
    assert deliveries.count() == limit + 1, "the first delivery and one per allowed return"
    assert queue_depth(SCAN_PIPELINE_QUEUE) == 0
    # the broker's dead letter is seen by no failure handler: the scan still waits on it
    assert Scan.objects.get(pk=scan_id).status == ScanStatus.PROCESSING

    services.tidy_dead_letter_queue()  # the dead-letter check (beat, every 5 minutes)

    scan = Scan.objects.get(pk=scan_id)
    assert (scan.status, scan.error_code) == (ScanStatus.FAILED, "worker_lost")
    letter = DeadLetter.objects.get(scan_id=scan_id)
    assert (letter.reason_code, letter.step) == ("broker_delivery_limit", "vision")
    assert "delivery limit" in letter.reason and SCAN_PIPELINE_QUEUE in letter.reason
    assert dead_letter_depth() == before + 1, "kept on scan.ai.dlq for its redrive"
    services.tidy_dead_letter_queue()  # a second check records nothing twice
    assert DeadLetter.objects.filter(scan_id=scan_id).count() == 1

    # never looping: a live worker gets nothing more of it
    worker_manager.ensure(pool="threads", concurrency=4)
    time.sleep(3)
    assert worker_manager.current.process.poll() is None, "the worker died again"
    assert deliveries.count() == limit + 1
    assert_invariants(poison)


@pytest.mark.parametrize(
    ("queue", "task"),
    [
        (NOTIFICATION_QUEUE, "notifications.tasks.send_email"),
        (DEFAULT_QUEUE, "scans.tasks.sweep_stalled_scans"),
    ],
)
def test_a_dead_letter_of_another_queue_is_recorded_and_parked(worker_manager, queue, task):
    """An e-mail or a periodic job whose worker dies at every delivery is dead-lettered too
    (every quorum queue has the limit), and the check records it with the task and its body,
    then parks the message verbatim: no scan to redrive, nothing dropped. Each delivery that
    ends without an ack is a return to RabbitMQ, here from a consumer that never acks."""
    worker_manager.stop()  # nobody else takes the message
    task_id = str(uuid.uuid4())
    body = json.dumps([[42], {}, {"callbacks": None, "errbacks": None, "chain": None}])
    parked_before = queue_depth(PARKED_DEAD_LETTER_QUEUE.name)
    dead_before = dead_letter_depth()
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        Producer(channel).publish(
            body,
            exchange=queue,
            routing_key=queue,
            headers=task_headers(task, task_id),
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )
        bound = app.amqp.queues[queue](channel)
        returns = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = bound.get(no_ack=False)
            if message is None:
                if dead_letter_depth() > dead_before:
                    break
                time.sleep(0.05)
                continue
            returns += 1
            message.requeue()
    assert returns == settings.CELERY_DELIVERY_LIMIT + 1

    services.tidy_dead_letter_queue()

    letter = DeadLetter.objects.get(task_id=task_id)
    assert (letter.task_name, letter.reason_code, letter.scan_id) == (
        task,
        "broker_delivery_limit",
        None,
    )
    assert queue in letter.reason and task in letter.reason and "[[42]" in letter.reason
    assert queue_depth(PARKED_DEAD_LETTER_QUEUE.name) == parked_before + 1
    assert queue_depth(queue) == 0

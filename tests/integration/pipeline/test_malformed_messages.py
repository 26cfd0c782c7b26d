"""A message the worker cannot decode or bind is rejected and recorded; the worker lives on.

A task name the worker knows with a body the task cannot be bound to used to raise out of
Celery's consumer (``Request.__init__`` unpacks the body as ``args, kwargs, embed``): the
worker exited, the broker handed the message to the next worker, and that one exited too.
These tests publish such messages by hand, as a buggy producer or anyone with access to the
broker could, on the configured broker (embedded or RabbitMQ); tests/integration/chaos/ adds the
dead-letter queue and both worker pools.
"""

import json
import time
import uuid

import pytest
from django.db.models import Q
from kombu import Producer

from eco2.celery import app
from eco2.queues import SCAN_PIPELINE_QUEUE
from scans import services
from scans.models import DeadLetter, ScanStatus
from tests.conftest import wait_for_scan

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

CASE_HEADER = "x-eco2-test-case"  # kept by RabbitMQ when it dead-letters the message
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_headers(task: str, task_id: str) -> dict:
    """Celery's protocol-2 headers for ``task``, as a producer would send them."""
    return {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "timelimit": [None, None],
        "eta": None,
        "expires": None,
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "test",
    }


def malformed_messages(task: str) -> dict[str, tuple[dict, bytes]]:
    """Each case: (headers, raw JSON body). None of them can run."""
    missing = str(uuid.uuid4())  # a well-formed id of a scan that does not exist

    def body(value) -> bytes:
        return json.dumps(value).encode()

    cases = {
        "invalid JSON": b'[["' + missing.encode() + b'"], {}, {',
        "an object where the arguments go": body({"scan_id": missing}),
        "a string where the argument list goes": body([missing, {}, EMBED]),
        "two arguments for one": body([[missing, missing], {}, EMBED]),
        "an unknown keyword": body([[], {"scan": missing}, EMBED]),
        "a list where the options go": body([[missing], {}, ["x"]]),
        "time limits that are no pair": body([[missing], {}, EMBED]),
        "a scan id that is no UUID": body([["not-a-uuid"], {}, EMBED]),
        "a scan that does not exist": body([[missing], {}, EMBED]),
    }
    messages = {case: (task_headers(task, str(uuid.uuid4())), raw) for case, raw in cases.items()}
    messages["time limits that are no pair"][0]["timelimit"] = "soon"
    no_id = task_headers(task, "")
    del no_id["id"]
    messages["no task id in the headers"] = (no_id, body([[missing], {}, EMBED]))
    unknown = task_headers("scans.tasks.no_such_step", str(uuid.uuid4()))
    messages["a task no worker has"] = (unknown, body([[missing], {}, EMBED]))
    return messages


def publish_raw(queue_name: str, messages: dict[str, tuple[dict, bytes]]) -> None:
    queue = next(q for q in app.conf.task_queues if q.name == queue_name)
    with app.connection_for_write() as conn:
        producer = Producer(conn.default_channel)
        for case, (headers, raw) in messages.items():
            producer.publish(
                raw,
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                declare=[queue],
                headers={**headers, CASE_HEADER: case},
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
            )


def letters_of(*messages: dict[str, tuple[dict, bytes]]):
    """The DeadLetter rows of these messages (by task id; one without an id gets its own)."""
    ids = [headers["id"] for group in messages for headers, _ in group.values() if "id" in headers]
    return DeadLetter.objects.filter(Q(task_id__in=ids) | Q(task_id__startswith="unidentified-"))


def wait_for_dead_letters(messages: dict, timeout: float = 30.0) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout
    while (found := letters_of(messages).count()) < len(messages):
        if time.monotonic() > deadline:
            pytest.fail(f"{found} of {len(messages)} dead letters recorded after {timeout}s")
        time.sleep(0.1)
    return list(letters_of(messages))


def test_malformed_messages_are_recorded_and_the_worker_keeps_running(
    celery_worker, rulebase, user, photo
):
    bad = malformed_messages("scans.tasks.vision_scan")
    publish_raw(SCAN_PIPELINE_QUEUE, bad)
    scan = services.create_scan(owner=user, image=photo(), hint="콜라 캔")

    assert wait_for_scan(scan.id).status == ScanStatus.COMPLETED
    letters = wait_for_dead_letters(bad)

    assert celery_worker.process.poll() is None, "the worker exited"
    assert len(letters) == len(bad), [letter.reason for letter in letters]
    assert all(letter.scan_id is None and letter.redriven_at is None for letter in letters)
    codes = {letter.reason_code for letter in letters}
    assert codes == {"malformed_message", "unknown_scan", "unknown_task"}, codes
    assert not scan.dead_letters.exists()

"""The dead-letter topology on the broker: declared by the app, inspected, sorted.

On RabbitMQ the scan queues dead-letter rejected messages through the exchange
``scan.ai.dlx`` into ``scan.ai.dlq``; with quorum queues every queue does, also for its
delivery limit (eco2/broker_queues.py). Brokers without dead-letter exchanges (the embedded
filesystem broker) simply have no DLQ; the DeadLetter table in the DB records every dead
letter either way.

``scan.ai.dlq`` and ``scan.ai.dlq.parked`` are classic queues in both modes: they are read with
``basic.get`` and what waits is put back, which a quorum queue counts as a delivery (RabbitMQ
4.x's default limit of 20 would drop a waiting letter; "no limit", -1, drops it at once on
3.10). A quorum queue dead-letters into them at least once, and the check records every
letter in the database.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from kombu import Exchange, Producer, Queue

from eco2.celery import app
from eco2.queues import SCAN_DEAD_LETTER_EXCHANGE, SCAN_DEAD_LETTER_QUEUE

logger = logging.getLogger(__name__)

DEAD_LETTER_QUEUE = Queue(
    SCAN_DEAD_LETTER_QUEUE,
    Exchange(SCAN_DEAD_LETTER_EXCHANGE, type="direct", durable=True),
    routing_key=SCAN_DEAD_LETTER_QUEUE,
    durable=True,
)
# Messages a redrive cannot read (no JSON, no scan id): moved here verbatim, for a person.
PARKED_DEAD_LETTER_QUEUE = Queue(f"{SCAN_DEAD_LETTER_QUEUE}.parked", durable=True)


def broker_has_dead_lettering() -> bool:
    return app.conf.broker_url.startswith(("amqp", "pyamqp"))


def declare_dead_letter_queue() -> None:
    """Declare scan.ai.dlx and scan.ai.dlq (idempotent). Nobody consumes the DLQ: it is kept
    for inspection and redrive (``manage.py redrive_dlq``, the admin)."""
    if not broker_has_dead_lettering():
        return
    with app.connection_for_write() as conn:
        DEAD_LETTER_QUEUE(conn.default_channel).declare()


def dead_letter_depth() -> int | None:
    """Messages waiting in scan.ai.dlq, or None when the broker has no dead-lettering."""
    if not broker_has_dead_lettering():
        return None
    with app.connection_for_write() as conn:
        queue = DEAD_LETTER_QUEUE(conn.default_channel)
        # declared here too (idempotent): a broker no worker has started on yet, or one reset
        # meanwhile, has an empty DLQ, not a 404 that would crash redrive_dlq
        queue.declare()
        _, count, _ = queue.queue_declare(passive=True)
        return count


@dataclass(frozen=True)
class DeadLetterMessage:
    """What can be read of a message on scan.ai.dlq; reading it never raises."""

    task_id: str | None
    task_name: str
    scan_id: str | None  # a well-formed UUID from the first argument, or None
    reason: str  # RabbitMQ's x-death reason: rejected, expired, maxlen, delivery_limit
    queue: str  # the queue it died on
    body: str  # the start of the raw body, for the record
    problem: str | None  # why the body names no scan (invalid JSON, not a UUID …), or None


ACK, PARK, KEEP = "ack", "park", "keep"


def sort_dead_letters(
    decide: Callable[[DeadLetterMessage], str], limit: int = 1000
) -> dict[str, int]:
    """Take up to ``limit`` messages off scan.ai.dlq and do with each what ``decide`` says:
    ACK (taken off: the caller has it in the database), PARK (moved verbatim to
    scan.ai.dlq.parked, where nobody consumes it: set aside, not lost) or KEEP (left on the
    DLQ, in its place). Returns how many of each.

    A message is acked only after ``decide`` returned and, when parked, after the broker
    confirmed its copy; an error leaves it and every kept one on the queue.
    """
    done = {ACK: 0, PARK: 0, KEEP: 0}
    if not broker_has_dead_lettering():
        return done
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        queue = DEAD_LETTER_QUEUE(channel)
        queue.declare()
        PARKED_DEAD_LETTER_QUEUE(channel).declare()
        producer = Producer(channel)
        kept = []  # unacked; requeued after the loop (before, get would return them again)
        try:
            for _ in range(limit):
                message = queue.get(no_ack=False)  # raw: decoded by describe(), which can't fail
                if message is None:
                    break
                described = describe(message)
                action = decide(described)
                if action == PARK:
                    why = described.problem or "its scan does not exist"
                    producer.publish(
                        message.body,
                        exchange="",
                        routing_key=PARKED_DEAD_LETTER_QUEUE.name,
                        headers={**(message.headers or {}), "x-eco2-parked-because": why},
                        content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        delivery_mode=2,
                    )
                if action == KEEP:
                    kept.append(message)
                else:
                    message.ack()
                done[action] += 1
        finally:
            for message in kept:
                with suppress(Exception):  # a closed channel requeues them anyway
                    message.requeue()
    return done


def describe(message) -> DeadLetterMessage:
    headers = message.headers if isinstance(message.headers, dict) else {}
    raw = message.body
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    task_id = headers.get("id")
    scan_id, problem = None, None
    try:
        payload = json.loads(body)
    except ValueError as exc:
        problem = f"the body is not JSON ({exc})"
    else:
        args = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(args, list) or not args:
            problem = "the body has no argument list"
        else:
            try:
                scan_id = str(uuid.UUID(str(args[0])))
            except ValueError:
                problem = f"{str(args[0])[:100]!r} is not a scan id"
    return DeadLetterMessage(
        task_id=task_id if isinstance(task_id, str) and 0 < len(task_id) <= 255 else None,
        task_name=str(headers.get("task") or "")[:255],
        scan_id=scan_id,
        reason=str(death.get("reason", "")),
        queue=str(death.get("queue", "")),
        body=body[:1000],
        problem=problem,
    )

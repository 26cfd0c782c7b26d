"""The dead-letter topology on the broker: declared by the app, inspected, drained.

On RabbitMQ the pipeline queue ``scan.ai.pipeline`` dead-letters rejected messages through the
exchange ``scan.ai.dlx`` into ``scan.ai.dlq`` (see eco2/celery.py). Brokers without dead-letter
exchanges (the embedded filesystem broker) simply have no DLQ; the DeadLetter table in the DB
records every dead letter either way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from kombu import Exchange, Queue

from eco2.celery import SCAN_DEAD_LETTER_EXCHANGE, SCAN_DEAD_LETTER_QUEUE, app

logger = logging.getLogger(__name__)

DEAD_LETTER_QUEUE = Queue(
    SCAN_DEAD_LETTER_QUEUE,
    Exchange(SCAN_DEAD_LETTER_EXCHANGE, type="direct", durable=True),
    routing_key=SCAN_DEAD_LETTER_QUEUE,
    durable=True,
)


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
class DrainedMessage:
    task_id: str
    task_name: str
    scan_id: str | None
    reason: str  # RabbitMQ's x-death reason: rejected, expired, maxlen, delivery_limit


def drain_dead_letters(limit: int = 1000) -> list[DrainedMessage]:
    """Take up to ``limit`` messages off scan.ai.dlq and describe them.

    Messages are acked only after all of them were read, so a crash while draining leaves
    them on the queue.
    """
    if not broker_has_dead_lettering():
        return []
    drained: list[DrainedMessage] = []
    with app.connection_for_write() as conn:
        queue = DEAD_LETTER_QUEUE(conn.default_channel)
        queue.declare()
        messages = []
        for _ in range(limit):
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                break
            messages.append(message)
            drained.append(_describe(message))
        for message in messages:
            message.ack()
    return drained


def _describe(message) -> DrainedMessage:
    headers = message.headers or {}
    body = message.body
    if isinstance(body, bytes | str):
        body = json.loads(body)
    args = body[0] if isinstance(body, list) and body else []
    deaths = headers.get("x-death") or [{}]
    return DrainedMessage(
        task_id=str(headers.get("id", "")),
        task_name=str(headers.get("task", "")),
        scan_id=str(args[0]) if args else None,
        reason=str(deaths[0].get("reason", "")),
    )

"""The queues every process declares on the broker, in the deployment's queue type.

``CELERY_QUEUE_TYPE`` (eco2/settings/pipeline.py) picks one of two topologies; the settings
build it once (``CELERY_TASK_QUEUES``), and tests/deploy compares docker/rabbitmq/'s two
definition files with it.

- ``classic`` (the default, one RabbitMQ node): classic queues on direct exchanges; the scan
  queues dead-letter what a step rejects into ``scan.ai.dlq``. A message whose worker dies is
  redelivered without a count: Celery's ``retry_on_worker_lost`` + ``max_retries`` cap the
  pipeline steps, nothing caps a fault that kills the worker's main process.
- ``quorum`` (a RabbitMQ cluster): replicated quorum queues on *topic* exchanges (Celery's
  native delayed delivery, which countdown retries use with quorum queues, routes through
  topic exchanges and refuses direct ones), and on *every* queue a delivery limit and
  dead-lettering into ``scan.ai.dlq``: a message returned unacked more than
  ``CELERY_DELIVERY_LIMIT`` times (its worker died each time) is dead-lettered by the broker,
  at least once (kept on its queue until the DLQ has it), and the dead-letter check records
  it (scans.services.dead_letters). Celery itself switches to per-consumer QoS when it sees
  quorum queues (``worker_detect_quorum_queues``).

RabbitMQ refuses to declare an existing queue with other arguments (PRECONDITION_FAILED), and
an exchange with another type: the two topologies cannot share a vhost, and the limit cannot
change on a declared queue (docs/deployment.md, "Broker cluster: quorum queues").
"""

from __future__ import annotations

from kombu import Exchange, Queue

from eco2.queues import (
    CONSUMED_QUEUES,
    DEAD_LETTER_ARGUMENTS,
    SCAN_IMAGE_QUEUE,
    SCAN_PIPELINE_QUEUE,
)

CLASSIC, QUORUM = "classic", "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
DEFAULT_DELIVERY_LIMIT = 5  # CELERY_DELIVERY_LIMIT's default (RabbitMQ 4.x's own is 20)

# the classic queues that dead-letter (the others drop what they reject, as they always did)
_CLASSIC_DEAD_LETTERING = (SCAN_PIPELINE_QUEUE, SCAN_IMAGE_QUEUE)


def queue_arguments(name: str, queue_type: str, delivery_limit: int) -> dict[str, object]:
    """The x-arguments of consumed queue ``name``, exactly as the app declares them."""
    if queue_type == CLASSIC:
        return dict(DEAD_LETTER_ARGUMENTS) if name in _CLASSIC_DEAD_LETTERING else {}
    if queue_type != QUORUM:
        raise ValueError(f"queue type {queue_type!r} is not one of {QUEUE_TYPES}")
    if delivery_limit < 1:
        raise ValueError("a quorum queue's delivery limit must be at least 1")
    return {
        "x-queue-type": QUORUM,
        # RabbitMQ 4.x sets 20 when none is given, 3.x none at all: always stated here
        "x-delivery-limit": delivery_limit,
        **DEAD_LETTER_ARGUMENTS,
        # at-least-once dead-lettering needs reject-publish (no length limit is set, so
        # nothing is ever refused for it); at-most-once would drop a letter the DLQ missed
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def task_queues(
    queue_type: str = CLASSIC, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> tuple[Queue, ...]:
    """The queues workers consume, each on an exchange of its own name."""
    exchange_type = "topic" if queue_type == QUORUM else "direct"
    return tuple(
        Queue(
            name,
            Exchange(name, type=exchange_type),
            routing_key=name,
            queue_arguments=queue_arguments(name, queue_type, delivery_limit) or None,
        )
        for name in CONSUMED_QUEUES
    )

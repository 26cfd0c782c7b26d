"""Messages ready per broker queue, for /metrics and the worker watch: a passive declare per
queue on RabbitMQ, a count of message files on the embedded filesystem broker."""

from __future__ import annotations

import os
import time
from contextlib import suppress

from django.conf import settings

from eco2.health import broker_connection
from eco2.queues import MONITORED_QUEUES, SCAN_DEAD_LETTER_QUEUE


def _filesystem_depths(names: list[str], deadline: float) -> dict[str, int]:
    """Count the ``<time>_<uuid>.<queue>.msg`` files of kombu's filesystem transport."""
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
    counts = dict.fromkeys(names, 0)
    with os.scandir(folder) as entries:
        for index, entry in enumerate(entries):
            if index % 1000 == 999 and time.monotonic() > deadline:
                raise TimeoutError(f"counting {folder} took too long")
            queue = entry.name.partition(".")[2].removesuffix(".msg")
            if queue in counts:
                counts[queue] += 1
    return counts


def queue_depths(timeout: float) -> dict[str, int]:
    """Messages ready per queue. The filesystem broker has no dead-letter queue, so scan.ai.dlq
    is missing there; on RabbitMQ a queue that was never declared is missing too."""
    names = list(MONITORED_QUEUES)
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem"):
        counts = _filesystem_depths(names, time.monotonic() + timeout)
        counts.pop(SCAN_DEAD_LETTER_QUEUE, None)
        return counts
    counts = {}
    with broker_connection(url, timeout) as conn:
        conn.ensure_connection(max_retries=0)
        for name in names:
            channel = conn.channel()
            try:
                _, count, _ = channel.queue_declare(queue=name, passive=True)
                counts[name] = count
            except conn.channel_errors:  # not declared (yet): the broker closed the channel
                pass
            finally:
                with suppress(Exception):
                    channel.close()
    return counts

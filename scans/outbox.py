"""Scan events: stored with the state they announce, relayed to the broker.

ScanCompleted, ScanFailed and ScanNeedsInput (the run ended with a question) are written in
the same transaction as the scan's terminal state, ScanResumed (the owner answered the
question) in the one that resumes it, so an event exists exactly when the state does. The
relay publishes unpublished events to the durable topic exchange ``eco2.events`` (routing keys
``scan.completed``, ``scan.failed``, ``scan.needs_input``, ``scan.resumed``), with
publisher confirms on RabbitMQ, and marks them published in the transaction that locked them.
If the relay dies mid-batch, the batch is published again: delivery is at least once, and the
event id (the AMQP ``message_id``, and ``event_id`` in the body) lets consumers deduplicate.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from kombu import Exchange

from eco2.celery import app

from .models import Scan, ScanEvent, ScanEventType, ScanStatus

logger = logging.getLogger(__name__)

EVENTS_EXCHANGE = Exchange("eco2.events", type="topic", durable=True)
EVENT_SCHEMA_VERSION = 1
# the prompt publish right after a scan ends must not hold a worker when the broker is away;
# the relay (beat) publishes later with the worker-side policy
# the relay (beat) leaves fresh events to their prompt publish (publish_event_now)
RELAY_GRACE = timedelta(seconds=10)
PROMPT_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}


def event_payload(scan: Scan) -> dict[str, Any]:
    """What a consumer needs without calling back: who, what was found, what it cost."""
    classification = scan.classification or {}
    return {
        "scan_id": str(scan.id),
        "owner_id": scan.owner_id,
        "status": scan.status,
        "outcome": scan.outcome,
        "category_code": classification.get("category_code"),
        "major_category": classification.get("major_category"),
        "middle_category": classification.get("middle_category"),
        "provider": scan.provider,
        "error_code": scan.error_code,
        "error_message": scan.error_message,
        "step": scan.step,
        "cost_usd": str(scan.cost_usd),
        "finished_at": scan.finished_at.isoformat() if scan.finished_at else None,
        # a scan that asks which one it is: what it offers (scans.rules.offered_choices)
        **({"choices": scan.choices or []} if scan.status == ScanStatus.NEEDS_INPUT else {}),
    }


def append_event(
    scan: Scan, event_type: ScanEventType, *, extra: dict[str, Any] | None = None
) -> ScanEvent:
    """Store the event; call inside the transaction that gives the scan the state it announces.
    ``extra``: more data for the payload (what a ScanResumed answered)."""
    payload = {**event_payload(scan), **(extra or {})}
    event = ScanEvent.objects.create(type=event_type, scan=scan, payload=payload)
    transaction.on_commit(partial(publish_event_now, event))
    return event


def message_for(event: ScanEvent) -> dict[str, Any]:
    return {
        "event_id": str(event.id),
        "type": event.type,
        "schema_version": EVENT_SCHEMA_VERSION,
        "occurred_at": event.occurred_at.isoformat(),
        "data": event.payload,
    }


def _publish(producer, event: ScanEvent, retry_policy: dict) -> None:
    producer.publish(
        message_for(event),
        exchange=EVENTS_EXCHANGE,
        routing_key=event.routing_key,
        declare=[EVENTS_EXCHANGE],
        serializer="json",
        delivery_mode=2,
        message_id=str(event.id),
        type=event.type,
        retry=True,
        retry_policy=retry_policy,
    )


def publish_event_now(event: ScanEvent) -> bool:
    """Publish an event right after the transaction that stored it; False if not sent.

    One publish and one UPDATE, without the relay's lock: the relay leaves events younger
    than RELAY_GRACE to this. Should the relay still take one (this publish took longer than
    the grace), it goes out twice with the same id, as the at-least-once contract allows.
    """
    try:
        with app.producer_or_acquire() as producer:
            _publish(producer, event, PROMPT_PUBLISH_RETRY_POLICY)
    except Exception as exc:  # broker errors come in many types; the event stays owed
        logger.warning("event %s not published yet (%s); the relay will retry", event.id, exc)
        return False
    ScanEvent.objects.filter(pk=event.pk, published_at=None).update(published_at=timezone.now())
    return True


def publish_pending_events(
    *, limit: int = 200, retry_policy: dict | None = None, min_age: timedelta | None = None
) -> int:
    """Publish unpublished events (all, or those older than ``min_age``); return how many
    were published.

    Rows are locked (SKIP LOCKED on PostgreSQL) so two relays do not publish the same batch;
    a failure leaves the rest for the next run.
    """
    published = 0
    # Where rows can be locked without blocking (PostgreSQL), the batch is held locked while it
    # is published. SQLite has no row locks: a transaction there holds the database's only
    # write lock, so publish outside it (two relays may then both publish: at least once).
    locking = connection.features.has_select_for_update_skip_locked
    try:
        with transaction.atomic() if locking else contextlib.nullcontext():
            pending = ScanEvent.objects.filter(published_at=None).order_by("occurred_at")
            if min_age is not None:
                pending = pending.filter(occurred_at__lt=timezone.now() - min_age)
            events = list(pending.select_for_update(skip_locked=True)[:limit])
            if not events:
                return 0
            with app.producer_or_acquire() as producer:
                for event in events:
                    _publish(producer, event, retry_policy or app.conf.task_publish_retry_policy)
                    published += 1
            ScanEvent.objects.filter(pk__in=[e.pk for e in events]).update(
                published_at=timezone.now()
            )
    except Exception as exc:  # broker errors come in many types; the events stay owed
        # the marks roll back with the locks: this batch is published again next time
        logger.warning("events not published yet (%s); the relay will retry", exc)
        return 0
    return published

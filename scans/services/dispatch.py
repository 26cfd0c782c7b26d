"""Publishing pipelines: a scan's chain, a batch's chord, the relay of what is owed, requeue."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from functools import partial

from celery import chain, chord, group
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from eco2.celery import app

from ..models import Scan, ScanBatch, ScanStatus, ScanStep
from ..publishing import publish_promptly
from .base import STEP_PROGRESS, STEP_TASK_NAMES
from .state import _mirror

logger = logging.getLogger(__name__)

# The request publishes once, promptly (scans/publishing.py): a broker that is down or does not
# answer costs the upload a bounded moment after its response, and the relay (beat) publishes
# the chain once the broker is back.
DISPATCH_GRACE = timedelta(seconds=10)  # the relay leaves fresh scans to their own request


# A batch's chord callback and its errback (scans/tasks.py), by registered name.
AGGREGATE_RESULTS = "scans.tasks.aggregate_results"
AGGREGATE_AFTER_ERROR = "scans.tasks.aggregate_results_after_error"


def remaining_steps(scan: Scan) -> list[ScanStep]:
    """The steps a scan still needs: a resumed scan does not pay again for finished ones."""
    if scan.classification is None:
        prepare = [] if scan.image_prepared_at else [ScanStep.PREPARE]
        return [*prepare, ScanStep.VISION, ScanStep.RULE, ScanStep.ANSWER]
    if scan.progress < STEP_PROGRESS[ScanStep.RULE][1]:
        return [ScanStep.RULE, ScanStep.ANSWER]
    return [ScanStep.ANSWER]


def pipeline_chain(scan: Scan):
    """The chain of the steps the scan still needs, rooted at its celery_root_id."""
    steps = [
        app.signature(STEP_TASK_NAMES[step], args=(str(scan.id),), immutable=True)
        for step in remaining_steps(scan)
    ]
    steps[0] = steps[0].set(task_id=scan.celery_root_id)
    return chain(*steps)


def dispatch_pipeline(
    scan_id, *, retry_policy: dict | None = None, created: Scan | None = None
) -> bool:
    """Publish the rest of a scan's chain (vision_scan → rule_match → answer_gen).

    The Scan row is the outbox: ``dispatched_at`` stays empty until the broker confirmed the
    publish, and the relay retries what is still owed. A failed publish is logged, not raised
    (the scan is committed; the relay will deliver it). ``created``: the scan this process has
    just committed, queued and not dispatched by construction, so it is not read again.
    """
    scan = created or (
        Scan.objects.filter(pk=scan_id, status=ScanStatus.QUEUED, dispatched_at=None).first()
    )
    if scan is None:
        return False  # already dispatched, or no longer waiting
    attempted = F("dispatch_attempts") + 1
    try:
        _publish(pipeline_chain(scan), retry_policy)
    except Exception as exc:  # kombu raises many connection error types; all mean "not sent"
        logger.warning(
            "scan %s: pipeline not published yet (%s); the relay will retry", scan.id, exc
        )
        Scan.objects.filter(pk=scan.pk).update(dispatch_attempts=attempted)
        return False
    Scan.objects.filter(pk=scan.pk).update(
        dispatch_attempts=attempted,
        dispatched_at=Coalesce(F("dispatched_at"), Value(timezone.now())),
    )
    return True


def _publish(signature, retry_policy: dict | None):
    """With a retry policy (the relay, in a worker) as it says; without, once and promptly."""
    if retry_policy is None:
        return publish_promptly(signature)
    return signature.apply_async(retry_policy=retry_policy)


def relay_pending_dispatches(now=None) -> int:
    """Publish the chains still owed (the outbox relay, run by beat); return how many."""
    now = now or timezone.now()
    stale = now - DISPATCH_GRACE
    # a batch member is owed by its batch's chord (first dispatch), not on its own
    owed = Scan.objects.filter(
        status=ScanStatus.QUEUED, dispatched_at=None, updated_at__lt=stale
    ).exclude(batch__dispatched_at=None, batch__isnull=False)
    batches = ScanBatch.objects.filter(dispatched_at=None, created_at__lt=stale)
    # the worker-side policy: the relay runs in a worker and may wait for the broker
    policy = {"max_retries": 3}
    return sum(
        dispatch_batch(batch_id, retry_policy=policy)
        for batch_id in batches.values_list("id", flat=True)
    ) + sum(
        dispatch_pipeline(scan_id, retry_policy=policy)
        for scan_id in owed.values_list("id", flat=True)
    )


def dispatch_batch(batch_id, *, retry_policy: dict | None = None) -> bool:
    """chord(group(per-scan chains), aggregate_results): the callback runs once all members
    have ended. A member that fails makes the chord fail, and the body's errback
    (aggregate_results_after_error) writes the same summary. Neither is what guarantees the
    summary: the errback runs before the last member's failure is written (Celery reports a
    chord part when the task returns, its failure handler runs after), so the member that ends
    last writes it (finish_batch_of), and the sweeper finishes any batch left behind."""
    batch = ScanBatch.objects.filter(pk=batch_id, dispatched_at=None).first()
    if batch is None:
        return False
    scans = list(batch.scans.filter(status=ScanStatus.QUEUED, dispatched_at=None))
    body = app.signature(AGGREGATE_RESULTS, args=(str(batch.id),), immutable=True)
    body.link_error(app.signature(AGGREGATE_AFTER_ERROR, args=(str(batch.id),), immutable=True))
    try:
        result = _publish(chord(group(pipeline_chain(scan) for scan in scans), body), retry_policy)
    except Exception as exc:  # not published: the relay will dispatch the batch
        logger.warning(
            "batch %s: chord not published yet (%s); the relay will retry", batch.id, exc
        )
        return False
    now = timezone.now()
    ScanBatch.objects.filter(pk=batch.pk).update(dispatched_at=now, chord_id=result.id or "")
    Scan.objects.filter(pk__in=[scan.pk for scan in scans]).update(dispatched_at=now)
    return True


def _requeue(scan_id, *, extra_filter: dict, **changes) -> bool:
    """Put a scan back to queued with a fresh chain root, if it matches ``extra_filter``.

    The conditional UPDATE is the lock: of two people (or sweeps) acting on the same scan at
    once, exactly one gets rowcount 1 and dispatches.
    """
    updated = Scan.objects.filter(pk=scan_id, **extra_filter).update(
        status=ScanStatus.QUEUED,
        dispatched_at=None,
        celery_root_id=str(uuid.uuid4()),
        updated_at=timezone.now(),
        **changes,
    )
    if updated:
        transaction.on_commit(partial(dispatch_pipeline, scan_id))
        _mirror(Scan.objects.get(pk=scan_id))
    return bool(updated)

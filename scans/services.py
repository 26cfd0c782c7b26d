"""Business logic of a scan: create it, run each pipeline step, finish it exactly once."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import partial

from amqp.exceptions import AMQPError, MessageNacked
from billiard.exceptions import WorkerLostError
from celery import chain, chord, group
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import get_supported_language_variant
from kombu.exceptions import OperationalError as KombuOperationalError

from eco2.after_response import run_after_response
from eco2.db import insert_unless_exists, release_db_connection
from eco2.metrics import count_refused_scans

from .creation_rate import ensure_within_rate
from .errors import CodedError, error_message
from .images import UnusablePhoto, check_photo, prepare_image
from .models import (
    TERMINAL_STATUSES,
    AnswerCacheEntry,
    AttemptOutcome,
    BatchStatus,
    DeadLetter,
    Scan,
    ScanBatch,
    ScanEventType,
    ScanOutcome,
    ScanStatus,
    ScanStep,
    VisionCacheEntry,
    VisionCallLease,
)
from .outbox import append_event
from .progress import mirror_progress
from .providers import get_answer_provider, get_vision_provider
from .providers.base import AnswerRequest, VisionRequest
from .publishing import publish_promptly
from .rules import current_rulebase, item_named, offered_choices, rule_step_result

logger = logging.getLogger(__name__)

# Progress per step (start, end), as in the original system's contract.
STEP_PROGRESS = {
    ScanStep.PREPARE: (5, 5),
    ScanStep.VISION: (10, 33),
    ScanStep.RULE: (50, 66),
    ScanStep.ANSWER: (75, 100),
}
ACTIVE_STATUSES = (ScanStatus.QUEUED, ScanStatus.PROCESSING)


class ScanStepError(CodedError):
    """A step cannot go on."""

    code = "scan_step_failed"


# --- creating and dispatching ---------------------------------------------------------------
# The request publishes once, promptly (scans/publishing.py): a broker that is down or does not
# answer costs the upload a bounded moment after its response, and the relay (beat) publishes
# the chain once the broker is back.
DISPATCH_GRACE = timedelta(seconds=10)  # the relay leaves fresh scans to their own request


class PipelineBusy(CodedError):
    """More scans wait for a worker than SCAN_BACKLOG_LIMIT allows: a new one is refused.

    Load shedding at the door: a person told "busy, try again in 30 s" at once is better off
    than one whose accepted scan waits minutes behind thousands of others.
    """

    code = "pipeline_busy"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


BACKLOG_READ_EVERY = 1.0  # seconds: one COUNT per process a second, not one per upload
_backlog_read: tuple[float, int] = (float("-inf"), 0)  # (monotonic time, waiting scans)
_backlog_reading = threading.Lock()


def waiting_scans(at_most: int) -> int:
    """Scans accepted and not yet started by a worker (up to ``at_most``), as read at most a
    second ago.

    One request of the process reads; the others go on with the last figure meanwhile (every
    request of a busy second would otherwise find it stale at once and count too). Counting
    stops at ``at_most`` rows, so a long backlog costs no more than a full one.
    """
    global _backlog_read
    read_at, waiting = _backlog_read
    if time.monotonic() - read_at >= BACKLOG_READ_EVERY and _backlog_reading.acquire(
        blocking=False
    ):
        try:
            waiting = Scan.objects.filter(status=ScanStatus.QUEUED)[:at_most].count()
            _backlog_read = (time.monotonic(), waiting)
        finally:
            _backlog_reading.release()
    return waiting


def ensure_capacity(new_scans: int = 1) -> None:
    """Refuse ``new_scans`` (PipelineBusy) if they would put the backlog over its limit."""
    limit = settings.SCAN_BACKLOG_LIMIT
    if limit and waiting_scans(at_most=limit + 1) + new_scans > limit:
        count_refused_scans("backlog", new_scans)
        retry_after = settings.SCAN_BACKLOG_RETRY_AFTER
        raise PipelineBusy(
            error_message(PipelineBusy.code, seconds=retry_after), retry_after=retry_after
        )


def scan_language(language: str | None) -> str:
    """The supported language closest to ``language`` (a request's, a command's option);
    settings.LANGUAGE_CODE when none is given or none fits."""
    if language:
        try:
            return get_supported_language_variant(language)
        except LookupError:
            pass
    return settings.LANGUAGE_CODE


def create_scan(
    *,
    owner,
    image: UploadedFile | None = None,
    hint: str = "",
    image_url: str = "",
    language: str | None = None,
) -> Scan:
    """Store the scan and dispatch its pipeline once the row is committed.

    Exactly one of ``image`` (an upload) and ``image_url`` (fetched by the worker at the start
    of the vision step, see ensure_prepared_image) is given. ``language``: the uploader's (the
    request's), what the guidance is written in. Raises, before anything is stored,
    PipelineBusy when the backlog is full (SCAN_BACKLOG_LIMIT) and ScanRateLimited when the
    owner is over SCAN_CREATE_RATE.
    """
    if (image is None) == (not image_url):
        raise ValueError("create_scan needs exactly one of image and image_url")
    ensure_capacity()
    ensure_within_rate(owner)
    scan = Scan(
        owner=owner, hint=hint.strip(), image_url=image_url or "", language=scan_language(language)
    )
    # the first run's chain root is the scan id itself, so Celery's root_id is the task_id
    scan.celery_root_id = str(scan.id)
    if image is not None:
        scan.image.save(image.name or "upload", image, save=False)
    # One INSERT is atomic by itself: no BEGIN/COMMIT round trips around it. Inside a caller's
    # transaction (an Idempotency-Key claim) on_commit waits for that one's commit; in
    # autocommit the row is committed here and on_commit runs at once.
    scan.save(force_insert=True)
    # the 202 does not wait for the broker: the row is committed, the relay is the net
    dispatch = partial(dispatch_pipeline, scan.id, created=scan)
    transaction.on_commit(partial(run_after_response, dispatch))
    _mirror(scan)
    return scan


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
    from .tasks import STEP_TASKS

    steps = [STEP_TASKS[step].si(str(scan.id)) for step in remaining_steps(scan)]
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


# --- batches (Canvas) --------------------------------------------------------------------------
def create_batch(
    *, owner, images: list[UploadedFile], hint: str = "", language: str | None = None
) -> ScanBatch:
    """One scan per photo and one chord over their pipelines, dispatched after commit.

    Raises PipelineBusy or ScanRateLimited (each photo counts), before anything is stored."""
    ensure_capacity(len(images))
    ensure_within_rate(owner, len(images))
    batch = ScanBatch(owner=owner)
    scans = []
    language = scan_language(language)
    for image in images:
        scan = Scan(owner=owner, hint=hint.strip(), batch=batch, language=language)
        scan.celery_root_id = str(scan.id)
        scan.image.save(image.name or "upload", image, save=False)
        scans.append(scan)
    with transaction.atomic():
        batch.save(force_insert=True)
        for scan in scans:
            scan.save(force_insert=True)
        transaction.on_commit(partial(run_after_response, partial(dispatch_batch, batch.id)))
    return batch


def dispatch_batch(batch_id, *, retry_policy: dict | None = None) -> bool:
    """chord(group(per-scan chains), aggregate_results): the callback runs once all members
    have ended. A member that fails makes the chord fail, and the body's errback
    (aggregate_results_after_error) writes the same summary. Neither is what guarantees the
    summary: the errback runs before the last member's failure is written (Celery reports a
    chord part when the task returns, its failure handler runs after), so the member that ends
    last writes it (finish_batch_of), and the sweeper finishes any batch left behind."""
    from .tasks import aggregate_results, aggregate_results_after_error

    batch = ScanBatch.objects.filter(pk=batch_id, dispatched_at=None).first()
    if batch is None:
        return False
    scans = list(batch.scans.filter(status=ScanStatus.QUEUED, dispatched_at=None))
    body = aggregate_results.si(str(batch.id))
    body.link_error(aggregate_results_after_error.si(str(batch.id)))
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


def summarize_batch(batch_id) -> dict | None:
    """Write the batch summary (per category, failures, total cost) once every member ended;
    None while a member is still active.

    Idempotent, and safe when called at once from several places (the chord callback, its
    errback, each member that ends, the sweeper): the batch row is locked while its members
    are read, so the last caller reads every member's committed state, and a summary already
    written is left as it is.
    """
    with transaction.atomic():
        batch = ScanBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None:
            return None
        scans = list(batch.scans.select_related("category"))
        if any(scan.status not in TERMINAL_STATUSES for scan in scans):
            return None  # the member that ends last (or the sweeper) writes it
        summary = _batch_summary(scans)
        if batch.status == BatchStatus.COMPLETED and batch.summary == summary:
            return summary
        ScanBatch.objects.filter(pk=batch.pk).update(
            status=BatchStatus.COMPLETED,
            summary=summary,
            completed_at=batch.completed_at or timezone.now(),
        )
    return summary


def _batch_summary(scans: list[Scan]) -> dict:
    by_category: dict[str, int] = {}
    for scan in scans:
        if scan.status == ScanStatus.COMPLETED:
            key = scan.category.code if scan.category else "unclassified"
            by_category[key] = by_category.get(key, 0) + 1
    return {
        "count": len(scans),
        "completed": sum(scan.status == ScanStatus.COMPLETED for scan in scans),
        "failed": sum(scan.status == ScanStatus.FAILED for scan in scans),
        # ended with a question (needs_input): the owner's answer resumes the member, and the
        # summary is written again when it ends
        "asked": sum(scan.status == ScanStatus.NEEDS_INPUT for scan in scans),
        "by_category": by_category,
        "failures": [
            {"task_id": str(scan.id), "code": scan.error_code, "message": scan.error_message}
            for scan in scans
            if scan.status == ScanStatus.FAILED
        ],
        "total_cost_usd": str(sum((scan.cost_usd for scan in scans), Decimal(0))),
    }


def finish_batch_of(scan: Scan) -> None:
    """After a batch member's final state is committed: write the batch's summary if every
    member has ended. Run after the commit, never inside it: two members ending at once in
    two transactions would each see the other still active, and neither would write."""
    if scan.batch_id is not None:
        summarize_batch(scan.batch_id)


def finish_ended_batches() -> int:
    """Summarize batches whose members have all ended but that were left unfinished (a
    worker died between a member's end and the summary); return how many (the sweeper)."""
    ended = ScanBatch.objects.filter(status=BatchStatus.PROCESSING).exclude(
        scans__status__in=ACTIVE_STATUSES
    )
    return sum(
        summarize_batch(batch_id) is not None for batch_id in ended.values_list("id", flat=True)
    )


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


def retry_scans(scan_ids, *, actor: str = "") -> int:
    """Resume failed scans from the step that failed; return how many were re-enqueued.

    Steps that succeeded keep their results and are not paid for again.
    """
    count = 0
    for scan_id in scan_ids:
        with transaction.atomic():
            retried = _requeue(
                scan_id,
                extra_filter={"status": ScanStatus.FAILED},
                error_code="",
                error_message="",
                finished_at=None,
                retry_count=F("retry_count") + 1,
            )
            if retried:  # with the requeue: a letter is marked only when its scan runs again
                DeadLetter.objects.pending().filter(scan_id=scan_id).update(
                    redriven_at=timezone.now(), redriven_by=actor or "system"
                )
        if retried:
            logger.info("scan %s retried by %s", scan_id, actor or "system")
        count += retried
    return count


# --- answering a scan that asked (status needs_input) ----------------------------------------
class ScanNotWaiting(CodedError):
    """The scan is not waiting for its owner's answer (any more): 409 on the API."""

    code = "scan_not_waiting"


class InvalidAnswer(CodedError):
    """A choice or hint that cannot resume the scan: 400 on the API, with ``field``."""

    code = "invalid_choice"

    def __init__(self, message: str, *, code: str | None = None, field: str = "") -> None:
        super().__init__(message, code=code)
        self.field = field


def _not_waiting(scan: Scan) -> ScanNotWaiting:
    status = ScanStatus(scan.status).label if scan.status in ScanStatus.values else scan.status
    return ScanNotWaiting(error_message(ScanNotWaiting.code, status=str(status).lower()))


def _resume(scan: Scan, *, event: dict, **changes) -> bool:
    """needs_input → queued, with ``changes``, a ScanResumed event and the scan's pipeline
    dispatched from its first unfinished step; False if the scan was not waiting (any more).

    The conditional UPDATE is the lock: of two answers at the same moment (two taps, two
    tabs) exactly one resumes the scan. A batch the scan belongs to is processing again until
    the scan ends, and the member that ends last rewrites its summary (finish_batch_of).
    """
    with transaction.atomic():
        resumed = _requeue(
            scan.pk,
            extra_filter={"status": ScanStatus.NEEDS_INPUT},
            finished_at=None,
            **changes,
        )
        if not resumed:
            return False
        append_event(Scan.objects.get(pk=scan.pk), ScanEventType.RESUMED, extra=event)
        if scan.batch_id is not None:
            ScanBatch.objects.filter(pk=scan.batch_id).update(
                status=BatchStatus.PROCESSING, completed_at=None
            )
    return True


def choose_category(scan: Scan, *, category_code: str, item: str = "", actor: str = "") -> Scan:
    """The owner says which one it is: resume the scan at the rule step, without recognising
    the photo again.

    ``category_code`` is one of the offered choices or any category of the rule base; ``item``
    (optional) an item of that category (Korean or English name, or an offered item). The
    classification becomes the owner's: ``chosen_by: "user"``, confidence 1.0, the chosen
    category and item, with what the provider had said (``before_choice``) and its candidates
    kept. Raises InvalidAnswer (400) or ScanNotWaiting (409, also for the second of two taps).
    """
    rulebase = current_rulebase()
    category = rulebase.by_code.get((category_code or "").strip())
    if category is None:
        raise InvalidAnswer(
            error_message("invalid_choice", value=category_code), field="category_code"
        )
    if scan.status != ScanStatus.NEEDS_INPUT:
        raise _not_waiting(scan)
    offered = [c for c in scan.choices or [] if c.get("category_code") == category.code]
    minor = _chosen_item(category, item.strip(), offered, rulebase)
    before = scan.classification or {}
    now = timezone.now()
    chosen = {
        **before,
        "outcome": ScanOutcome.CLASSIFIED.value,
        "category_code": category.code,
        "major_category": category.major_ko,
        "middle_category": category.middle_ko,
        "minor_category": minor,
        "confidence": 1.0,  # the owner said so
        "chosen_by": "user",
        "chosen_at": now.isoformat(),
        "before_choice": {
            key: before.get(key)
            for key in ("outcome", "category_code", "minor_category", "confidence")
        }
        | {"reason": (before.get("details") or {}).get("reason")},
    }
    resumed = _resume(
        scan,
        event={
            "resumed_by": "choice",
            "choice": {"category_code": category.code, "item": minor},
            "actor": actor,
        },
        classification=chosen,
        outcome="",
        category=None,
        matched_rules=None,
        answer=None,
        step=ScanStep.RULE,
        progress=STEP_PROGRESS[ScanStep.VISION][1],
    )
    if not resumed:
        raise _not_waiting(Scan.objects.get(pk=scan.pk))
    logger.info("scan %s: %s chose %s (%s)", scan.pk, actor or "owner", category.code, minor)
    return Scan.objects.select_related("owner", "category").get(pk=scan.pk)


def _chosen_item(category, item: str, offered: list[dict], rulebase) -> str | None:
    """The item of a choice as the classification names it (minor_category): the rule base's
    Korean name, or the provider's words for an offered item the rule base does not list; None
    for the category as a whole."""
    if item:
        known = item_named(category.code, item, rulebase)
        if known is not None:
            return known.name_ko
        for choice in offered:
            if item in (choice.get("item"), choice.get("item_en")):
                return None if choice["item"] == category.middle_ko else choice["item"]
        raise InvalidAnswer(
            error_message("invalid_choice_item", item=item, category=category.middle_ko),
            code="invalid_choice_item",
            field="item",
        )
    if offered:  # the first offered item of this category: what the button showed
        known = item_named(category.code, offered[0]["item"], rulebase)
        if known is not None:
            return known.name_ko
        return None if offered[0]["item"] == category.middle_ko else offered[0]["item"]
    return None


def rerun_with_hint(scan: Scan, *, hint: str, actor: str = "") -> Scan:
    """The owner describes the item: the scan runs again from the vision step with the new
    hint (which replaces the old one), its classification and question reset.

    With OpenAI that is a new, paid recognition of the photo (the cache is keyed by the hint);
    what the first one cost stays in the scan's usage and cost. Raises InvalidAnswer (the same
    hint again) or ScanNotWaiting.
    """
    hint = " ".join(hint.split())
    if scan.status != ScanStatus.NEEDS_INPUT:
        raise _not_waiting(scan)
    if hint == " ".join(scan.hint.split()):
        raise InvalidAnswer(error_message("same_hint"), code="same_hint", field="hint")
    usage = dict(scan.usage or {})
    if "vision" in usage:  # kept (and still summed) under a name of its own
        earlier = sum(key.startswith("vision_before_hint") for key in usage)
        usage[f"vision_before_hint_{earlier + 1}"] = usage.pop("vision")
    resumed = _resume(
        scan,
        event={"resumed_by": "hint", "hint": hint, "actor": actor},
        hint=hint,
        classification=None,
        outcome="",
        category=None,
        matched_rules=None,
        answer=None,
        choices=None,
        vision_cache_hit=False,
        usage=usage,
        step=ScanStep.VISION,
        progress=STEP_PROGRESS[ScanStep.PREPARE][1] if scan.image_prepared_at else 0,
    )
    if not resumed:
        raise _not_waiting(Scan.objects.get(pk=scan.pk))
    logger.info("scan %s: %s added a hint; recognising again", scan.pk, actor or "owner")
    return Scan.objects.select_related("owner", "category").get(pk=scan.pk)


# --- step bookkeeping -----------------------------------------------------------------------
def _mirror(scan: Scan) -> None:
    mirror_progress(
        str(scan.id),
        status=scan.status,
        step=scan.step,
        progress=scan.progress,
        updated_at=(scan.updated_at or timezone.now()).isoformat(),
    )


def _save_if_active(scan: Scan, *, unless_stored: dict | None = None, **fields) -> bool:
    """Write ``fields`` only while the scan is still active; False if it already ended.

    The conditional UPDATE is what makes "exactly one terminal state" hold when a step, a
    failure handler and the sweeper race each other. ``unless_stored`` adds the condition that
    a step's result is still absent, so of two copies of one step running at once (a
    redelivery beside a cancelled run after a broker connection loss) only one stores it.
    """
    fields["updated_at"] = timezone.now()
    rows = Scan.objects.filter(pk=scan.pk, status__in=ACTIVE_STATUSES, **(unless_stored or {}))
    updated = rows.update(**fields)
    if not updated:
        return False
    for name, value in fields.items():
        setattr(scan, name, value)
    _mirror(scan)
    return True


def _finish(scan: Scan, event_type: ScanEventType, **fields) -> bool:
    """Give the scan its final state (the end of a run: completed, failed or needs_input), its
    event and (completed, needs_input) the owner's opted-in notification, in one transaction:
    each exists exactly when the state does. False if the scan had already ended."""
    # notifications imports scans
    from notifications.services import notify_scan_completed, notify_scan_needs_input

    with transaction.atomic():
        if not _save_if_active(scan, **fields):
            return False
        append_event(scan, event_type)
        if event_type == ScanEventType.NEEDS_INPUT:
            notify_scan_needs_input(scan)  # "which one is it?": one mail per scan
        if event_type == ScanEventType.COMPLETED:
            notify_scan_completed(scan)  # one mail per (scan, kind), sent after commit
            # only a scan that ran again can have dead letters: no query for all the others
            if scan.retry_count or scan.requeue_count:
                resolve_dead_letters(scan.pk)
        # robust: an error there is logged; the scan's end stands and the sweeper finishes
        # the batch
        transaction.on_commit(partial(finish_batch_of, scan), robust=True)
    return True


def resolve_dead_letters(scan_id) -> int:
    """The scan completed: its dead letters need nobody any more (the alert, the metric and
    the admin stop counting them). Their copies on scan.ai.dlq go with the next dead-letter
    check (tasks.check_dead_letters) or redrive."""
    return DeadLetter.objects.filter(scan_id=scan_id, resolved_at=None).update(
        resolved_at=timezone.now(), resolved_by="scan completed"
    )


def _load_active(scan_id: str, *related: str) -> Scan | None:
    """The scan a step works on; None when it has ended (a redelivery: nothing to do).

    A message naming no scan is not skipped in silence: it fails, so its message is
    dead-lettered and recorded (a producer's bug, or a scan deleted while queued).
    """
    try:
        uuid.UUID(str(scan_id))
    except ValueError:
        raise ScanStepError(f"{scan_id!r} is not a scan id.", code="malformed_message") from None
    rows = Scan.objects.filter(pk=scan_id)
    scan = (rows.select_related(*related) if related else rows).first()
    if scan is None:
        raise ScanStepError(
            f"No scan {scan_id}: it was deleted, or the message did not come from Eco².",
            code="unknown_scan",
        )
    if scan.status in TERMINAL_STATUSES:
        logger.info("scan %s is already %s; step skipped", scan_id, scan.status)
        return None
    return scan


def _begin(scan: Scan, step: ScanStep) -> bool:
    fields = {"status": ScanStatus.PROCESSING, "step": step, "progress": STEP_PROGRESS[step][0]}
    if scan.started_at is None:
        fields["started_at"] = timezone.now()
    return _save_if_active(scan, **fields)


# --- the three steps ------------------------------------------------------------------------
def _prepared_names(scan: Scan) -> tuple[str, str]:
    return f"scans/prepared/{scan.id}.jpg", f"scans/prepared/{scan.id}-thumb.jpg"


def _replace_file(name: str, content: bytes) -> str:
    if default_storage.exists(name):
        default_storage.delete(name)  # a redelivered step rewrites the same names
    return default_storage.save(name, ContentFile(content))


def ensure_prepared_image(scan: Scan, **fields) -> bytes:
    """The scan's prepared JPEG; prepared (and the original upload deleted) on first use,
    stored together with ``fields`` (more of the scan's state).

    The original may carry GPS coordinates and camera serials; only the prepared copy, with no
    metadata, is kept, shown or sent to a provider.
    """
    if scan.image_prepared_at:
        with scan.image.open("rb") as handle:
            return handle.read()
    try:
        if scan.image_url and not scan.image:
            # image_url scans: fetched here, on the worker, with SSRF protection (scans.fetch)
            prepared = prepare_image(_fetch_photo(scan.image_url))
        else:
            with scan.image.open("rb") as source:
                prepared = prepare_image(source)
    except FileNotFoundError as exc:
        raise ScanStepError(
            "The uploaded photo is no longer available.", code="image_missing"
        ) from exc
    except UnusablePhoto as exc:
        raise ScanStepError(exc.message, code=exc.code) from exc
    original = scan.image.name
    image_name, thumb_name = _prepared_names(scan)
    image_name = _replace_file(image_name, prepared.jpeg)
    thumb_name = _replace_file(thumb_name, prepared.thumbnail)
    saved = _save_if_active(
        scan,
        image=image_name,
        thumbnail=thumb_name,
        image_sha256=prepared.sha256,
        image_prepared_at=timezone.now(),
        **fields,
    )
    if saved and original and original != image_name:
        default_storage.delete(original)
    return prepared.jpeg


def _fetch_photo(url: str) -> io.BytesIO:
    """The photo at ``url``, fetched safely and checked like an upload; ScanStepError if not."""
    from .fetch import FetchError, fetch_image

    try:
        fetched = fetch_image(url)
    except FetchError as exc:
        raise ScanStepError(exc.message, code=exc.code) from exc
    source = io.BytesIO(fetched.content)
    check_photo(source)  # the upload's check: allow-listed format, not a bomb, readable
    return source


def vision_cache_key(namespace: str, image_sha256: str, hint: str) -> str:
    """Same prepared photo + same hint + same provider, model and prompt version → same key."""
    parts = "\x1f".join([namespace, image_sha256, " ".join(hint.split())])
    return hashlib.sha256(parts.encode()).hexdigest()


def _usage_fields(scan: Scan, step: str, usage: dict | None) -> dict:
    """The scan's usage with ``step`` recorded, and the per-scan totals recomputed."""
    per_step = {**(scan.usage or {})}
    if usage:
        per_step[step] = usage
    else:
        per_step.pop(step, None)
    versions = [
        per_step[name]["prompt_version"]
        for name in ("vision", "answer")
        if per_step.get(name, {}).get("prompt_version")
    ]
    return {
        "usage": per_step,
        "input_tokens": sum(u.get("input_tokens", 0) for u in per_step.values()),
        "cached_input_tokens": sum(u.get("cached_input_tokens", 0) for u in per_step.values()),
        "output_tokens": sum(u.get("output_tokens", 0) for u in per_step.values()),
        "cost_usd": sum(
            (Decimal(str(u.get("cost_usd", 0))) for u in per_step.values()), Decimal(0)
        ),
        "prompt_version": "+".join(versions),
    }


# Concurrent misses of one cache key: the first scan pays, the others wait for its entry.
# Twice OPENAI_TIMEOUT's default: a call that outlasts it (a server trickling its answer; the
# threads pool enforces no time limit) lets a waiter pay for its own call instead.
VISION_LEASE = timedelta(seconds=60)
VISION_WAIT_MAX = 20.0  # then a waiter pays itself: better a second call than a failed scan
VISION_WAIT_POLL = 0.25
CACHE_LABEL_CHARS = 255  # a cache entry's provider label (the key holds the whole namespace)


def _cache_hit(
    model: type[VisionCacheEntry | AnswerCacheEntry], key: str, field: str
) -> dict | None:
    """The ``field`` of the entry under ``key`` (None on a miss), its hit counted."""
    entry = model.objects.filter(key=key).first()
    if entry is None:
        return None
    model.objects.filter(pk=entry.pk).update(hits=F("hits") + 1, last_hit_at=timezone.now())
    return getattr(entry, field)


def _cached_classification(key: str) -> dict | None:
    return _cache_hit(VisionCacheEntry, key, "classification")


def _claim_vision_call(key: str, scan_id) -> bool:
    """Take the lease on ``key`` (or a lapsed one); False while another scan holds it."""
    now = timezone.now()
    if insert_unless_exists(
        VisionCallLease(key=key, scan_id=scan_id, expires_at=now + VISION_LEASE)
    ):
        return True
    # the holder's lease lapsed (it crashed), or the holder is this scan (a redelivery after
    # its worker died mid-call): the conditional UPDATE lets exactly one waiter in
    return bool(
        VisionCallLease.objects.filter(key=key)
        .filter(Q(expires_at__lt=now) | Q(scan_id=scan_id))
        .update(scan_id=scan_id, expires_at=now + VISION_LEASE)
    )


def _await_or_claim(
    key: str, scan_id, lookup: Callable[[str], dict | None] = _cached_classification
) -> tuple[dict | None, bool]:
    """The cached result (``lookup``: a classification, or an answer) once another scan stored
    it, or the lease to pay for it.

    Returns (result, False) on a hit, (None, True) with the lease, (None, False) when the wait
    ran out (the caller pays without a lease).
    """
    deadline = time.monotonic() + VISION_WAIT_MAX
    while True:
        if _claim_vision_call(key, scan_id):
            # an entry stored between our lookup and the claim: no call needed
            cached = lookup(key)
            if cached is not None:
                VisionCallLease.objects.filter(key=key, scan_id=scan_id).delete()
            return cached, cached is None
        if time.monotonic() >= deadline:
            logger.warning("vision cache key %s: waited %ss for another scan", key, VISION_WAIT_MAX)
            return None, False
        release_db_connection()  # a pool connection is not held through the wait
        time.sleep(VISION_WAIT_POLL)
        cached = lookup(key)
        if cached is not None:
            return cached, False


def _classify(scan: Scan, image: bytes) -> tuple[dict, str, dict | None, bool]:
    """Classification, provider name, usage of a paid call (None if free or cached), cache hit.

    With a cache (providers that have a ``cache_namespace``), one call per key: concurrent
    scans of the same photo wait for the first one's entry instead of paying again.
    """
    provider = get_vision_provider()
    namespace = getattr(provider, "cache_namespace", None)
    key = vision_cache_key(namespace, scan.image_sha256, scan.hint) if namespace else None
    leased = False
    if key:
        cached = _cached_classification(key)
        if cached is None:
            cached, leased = _await_or_claim(key, scan.pk)
        if cached is not None:
            return cached, provider.name, None, True
    try:
        release_db_connection()  # the call may take seconds; reconnect for the writes after it
        result = provider.classify(
            VisionRequest(image=image, hint=scan.hint, language=scan.language)
        )
        classification = result.to_dict()
        usage = classification.pop("usage", None)
        # Only a classification is cached: an unclassified result (the model not sure, below
        # OPENAI_MIN_CONFIDENCE, or unable to tell) asks the user, and asks again next time
        # rather than freezing one unsure draw for every scan of this photo.
        if key and result.outcome == ScanOutcome.CLASSIFIED:
            # two scans of the same photo racing: the first entry wins, the second is no error
            VisionCacheEntry.objects.get_or_create(
                key=key,
                defaults={
                    "provider": namespace[:CACHE_LABEL_CHARS],
                    "image_sha256": scan.image_sha256,
                    "classification": classification,
                },
            )
    finally:
        if leased:  # also when the call failed: a waiter takes over at once, not at expiry
            VisionCallLease.objects.filter(key=key, scan_id=scan.pk).delete()
    return classification, provider.name, usage, False


def _cached_answer(key: str) -> dict | None:
    return _cache_hit(AnswerCacheEntry, key, "answer")


def compose_answer(request: AnswerRequest, *, scan_id=None) -> tuple[dict, dict | None, bool]:
    """The answer (its stored form), the usage of a paid call (None if free or cached), and
    whether it came from the answer cache.

    Providers that pay for an answer give it a cache key (``answer_cache_key``: the rules as
    matched, the sorted tags, the language, the model and prompt): a repeated classification
    costs nothing. Within a scan's step (``scan_id``) concurrent misses of one key take the
    vision cache's lease, so one scan pays and the others wait for its entry; without it (the
    benchmark) they may both pay.
    """
    provider = get_answer_provider()
    cache_key_of = getattr(provider, "answer_cache_key", None)
    key = cache_key_of(request) if cache_key_of else None
    leased = False
    if key:
        cached = _cached_answer(key)
        if cached is None and scan_id is not None:
            cached, leased = _await_or_claim(key, scan_id, _cached_answer)
        if cached is not None:
            return cached, None, True
    try:
        release_db_connection()  # the call may take seconds; reconnect for the writes after it
        answer = provider.compose(request).to_dict()
        usage = answer.pop("usage", None)
        if key:
            # two scans racing (the lease ran out): the first entry wins, the second is no error
            AnswerCacheEntry.objects.get_or_create(
                key=key,
                defaults={
                    "provider": getattr(provider, "cache_namespace", provider.name)[
                        :CACHE_LABEL_CHARS
                    ],
                    "category_code": (request.rules or {}).get("category_code") or "",
                    "situation_tags": sorted(
                        set(request.classification.get("situation_tags") or [])
                    ),
                    "language": request.language,
                    "answer": answer,
                },
            )
    finally:
        if leased:  # also when the call failed: a waiter takes over at once, not at expiry
            VisionCallLease.objects.filter(key=key, scan_id=scan_id).delete()
    return answer, usage, False


SUCCEEDED, SKIPPED = AttemptOutcome.SUCCEEDED.value, AttemptOutcome.SKIPPED.value


def run_prepare_step(scan_id: str) -> str:
    """Prepare the photo (CPU-bound, its own queue); the scan shows it as the vision stage."""
    scan = _load_active(scan_id)
    if scan is None or scan.image_prepared_at:
        return SKIPPED
    # one write, with the prepared photo: "processing" and the photo appear together
    started = {
        "status": ScanStatus.PROCESSING,
        "step": ScanStep.VISION,
        "progress": STEP_PROGRESS[ScanStep.PREPARE][0],
        "started_at": scan.started_at or timezone.now(),
    }
    ensure_prepared_image(scan, **started)
    return SUCCEEDED


def run_vision_step(scan_id: str) -> str:
    scan = _load_active(scan_id)
    if scan is None:
        return SKIPPED
    if scan.classification is not None:
        return SKIPPED  # a redelivered message: the classification is stored, do not pay again
    if not _begin(scan, ScanStep.VISION):
        return SKIPPED
    image = ensure_prepared_image(scan)
    classification, provider_name, usage, cache_hit = _classify(scan, image)
    saved = _save_if_active(
        scan,
        unless_stored={"classification__isnull": True},
        classification=classification,
        outcome=classification["outcome"],
        provider=provider_name,
        vision_cache_hit=cache_hit,
        vision_model=(usage or {}).get("model", ""),
        progress=STEP_PROGRESS[ScanStep.VISION][1],
        **_usage_fields(scan, "vision", usage),
    )
    return SUCCEEDED if saved else SKIPPED


def run_rule_step(scan_id: str) -> str:
    scan = _load_active(scan_id, "owner")  # a question notifies the owner
    if scan is None:
        return SKIPPED
    if scan.progress >= STEP_PROGRESS[ScanStep.RULE][1]:
        return SKIPPED  # already matched
    if scan.classification is None:
        raise ScanStepError(
            "The item was not recognised before rule matching.", code="vision_missing"
        )
    # no separate "matching rules" write: the step is a few milliseconds of reads, so its
    # one write below records step and result together
    rulebase = current_rulebase()  # in memory: one revision check, no table reads
    rules, outcome = rule_step_result(scan.classification, rulebase)
    if rules is None:
        # not sure: ask which one it is instead of answering "we don't know"
        asked = _finish(
            scan,
            ScanEventType.NEEDS_INPUT,
            unless_stored={"progress__lt": STEP_PROGRESS[ScanStep.RULE][1]},
            status=ScanStatus.NEEDS_INPUT,
            step=ScanStep.INPUT,
            matched_rules=None,
            category=None,
            outcome=outcome,
            choices=offered_choices(scan.classification, rulebase),
            progress=STEP_PROGRESS[ScanStep.RULE][0],
            finished_at=timezone.now(),
        )
        return SUCCEEDED if asked else SKIPPED
    saved = _save_if_active(
        scan,
        unless_stored={"progress__lt": STEP_PROGRESS[ScanStep.RULE][1]},
        status=ScanStatus.PROCESSING,
        step=ScanStep.RULE,
        matched_rules=rules,
        category=rulebase.by_code.get(rules["category_code"]),
        outcome=outcome,
        progress=STEP_PROGRESS[ScanStep.RULE][1],
    )
    return SUCCEEDED if saved else SKIPPED


def run_answer_step(scan_id: str) -> str:
    scan = _load_active(scan_id, "owner")  # the completion notifies the owner
    if scan is None:
        return SKIPPED
    if scan.progress < STEP_PROGRESS[ScanStep.RULE][1]:
        # The current run publishes its answer step only after its rule step: this message is
        # from a run the scan has left. Above all the answer step of a run that asked (the
        # rule step cannot stop its chain), still queued when the owner's choice resumed the
        # scan at the rule step; failing here would fail the resumed scan. The current run
        # carries its own answer step (and the sweeper resumes a scan that has none).
        logger.info("scan %s: answer step of an earlier run skipped (rules not looked up)", scan_id)
        return SKIPPED
    answer_fields: dict = {}
    if scan.answer is None:
        if not _begin(scan, ScanStep.ANSWER):
            return SKIPPED
        request = AnswerRequest(
            classification=scan.classification,
            rules=scan.matched_rules,
            hint=scan.hint,
            language=scan.language,
        )
        answer, usage, cache_hit = compose_answer(request, scan_id=scan.pk)
        # stored with the completion in one write: of two copies of this step, one stores it
        answer_fields = {
            "unless_stored": {"answer__isnull": True},
            "answer": answer,
            "answer_cache_hit": cache_hit,
            "answer_model": (usage or {}).get("model", ""),
            **_usage_fields(scan, "answer", usage),
        }
    completed = _finish(
        scan,
        ScanEventType.COMPLETED,
        status=ScanStatus.COMPLETED,
        step=ScanStep.DONE,
        progress=100,
        finished_at=timezone.now(),
        **answer_fields,
    )
    return SUCCEEDED if completed else SKIPPED


# --- failures -------------------------------------------------------------------------------
STEP_LABELS = {
    ScanStep.PREPARE: "photo preparation",
    ScanStep.VISION: "recognition",
    ScanStep.RULE: "rule matching",
    ScanStep.ANSWER: "answer",
}


def failure_code(exc: BaseException) -> str:
    """The stable code of an exception (scans.errors.ERROR_CODES says what users read)."""
    if isinstance(exc, CodedError):
        return exc.code
    if isinstance(exc, WorkerLostError):
        return "worker_lost"
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        return "step_timeout"
    return "internal_error"


def describe_failure(exc: BaseException, step: str) -> tuple[str, str]:
    """The code of an exception in ``step`` and its technical detail (English, for staff).

    Users never read the detail: they get ``error_message(code)`` in their language.
    """
    code = failure_code(exc)
    label = STEP_LABELS.get(step, step)
    if isinstance(exc, CodedError):
        return code, exc.message
    if code == "worker_lost":
        return code, f"The worker running the {label} step stopped repeatedly."
    if code == "step_timeout":
        return code, f"The {label} step took too long and was stopped."
    return code, f"An unexpected error stopped the {label} step ({type(exc).__name__})."


def is_broker_error(exc: BaseException) -> bool:
    """An error of the broker connection, raised by Celery passing a scan on (publishing the
    next step of its chain, or a step's retry), never by a step's own work."""
    return isinstance(exc, KombuOperationalError | AMQPError | MessageNacked | ConnectionError)


def step_result_stored(scan_id: str | None, step: str) -> bool:
    """Whether ``step`` of the scan has stored its result (the answer: the scan completed)."""
    scan = Scan.objects.filter(pk=scan_id).first() if scan_id else None
    if scan is None:
        return False
    if step == ScanStep.ANSWER:
        return scan.answer is not None or scan.status == ScanStatus.COMPLETED
    return step not in remaining_steps(scan)


def failure_spares_scan(scan_id: str | None, step: str, exc: BaseException) -> bool:
    """A task failure that is not the scan's: its step's result is stored (what failed came
    after the step, e.g. publishing the next step while the broker restarted), or the broker
    refused a publish. The step's message was not acked: RabbitMQ delivers it again when the
    connection dropped, and the idempotent step skips its work and passes the scan on;
    otherwise the sweeper resumes the scan from its stored state. Failing the scan here would
    end a scan that is about to complete."""
    return is_broker_error(exc) or step_result_stored(scan_id, step)


def fail_scan(scan_id: str, *, code: str, message: str) -> bool:
    """Mark an active scan failed with a reason. False if it had already ended."""
    scan = Scan.objects.filter(pk=scan_id).first()
    if scan is None:
        return False
    failed = _finish(
        scan,
        ScanEventType.FAILED,
        status=ScanStatus.FAILED,
        error_code=code,
        error_message=message,
        finished_at=timezone.now(),
    )
    if failed:
        logger.warning("scan %s failed at %s: %s (%s)", scan_id, scan.step, code, message)
    return failed


CANCEL_MESSAGES = {
    "revoked": "The scan was cancelled: an operator revoked its {label} step before it ran.",
    "terminated": "The scan was cancelled: an operator stopped its {label} step while it ran.",
    "expired": "The scan was cancelled: its {label} step expired before a worker took it.",
}


def cancel_scan(scan_id, step: str, how: str = "revoked") -> bool:
    """End an active scan whose pipeline an operator stopped (a revoked or terminated task).

    A revoked step never runs, and neither do the steps after it, so the scan would otherwise
    stay queued or processing until the sweeper quietly runs it again. It fails like any
    failure (code ``cancelled``, a ScanFailed event), and *Retry* resumes it. False if the
    scan had already ended.
    """
    label = STEP_LABELS.get(step, step)
    message = CANCEL_MESSAGES.get(how, CANCEL_MESSAGES["revoked"]).format(label=label)
    return fail_scan(scan_id, code="cancelled", message=message)


def sweep_stalled_scans(now=None) -> tuple[int, int]:
    """Scans with no progress for SCAN_STALLED_AFTER_SECONDS: re-enqueued from their current
    step up to SCAN_MAX_REQUEUES times, then failed with a reason. Returns (requeued, failed).
    """
    now = now or timezone.now()
    threshold = timedelta(seconds=settings.SCAN_STALLED_AFTER_SECONDS)
    stalled = Scan.objects.filter(status__in=ACTIVE_STATUSES, updated_at__lt=now - threshold)
    minutes = max(1, int(threshold.total_seconds() // 60))
    requeued = failed = 0
    for scan_id, requeues in stalled.values_list("id", "requeue_count"):
        if requeues < settings.SCAN_MAX_REQUEUES:
            with transaction.atomic():
                requeued += _requeue(
                    scan_id,
                    extra_filter={"status__in": ACTIVE_STATUSES, "updated_at__lt": now - threshold},
                    requeue_count=F("requeue_count") + 1,
                )
        else:
            failed += fail_scan(
                scan_id,
                code="stalled",
                message=f"No progress for {minutes} minutes, even after {requeues} restarts; "
                "the pipeline was interrupted.",
            )
    return requeued, failed


# Failures a redrive would only repeat: the same photo, URL or message fails the same way.
# Transient ones (provider_*, worker_lost, step_timeout, stalled) and bugs (internal_error,
# fixed by a deploy) are redriven.
PERMANENT_FAILURES = frozenset(
    {
        "corrupt",
        "too_many_pixels",
        "unsupported_format",
        "image_missing",
        "image_url_refused",
        "image_url_too_large",
        "image_url_too_many_redirects",
        "image_url_empty",
        "provider_refused",
        "malformed_message",
        "unknown_scan",
        "unknown_task",
    }
)


@dataclass
class RedriveReport:
    taken: int = 0  # messages taken off scan.ai.dlq into the DeadLetter table
    parked: int = 0  # unreadable ones, moved verbatim to scan.ai.dlq.parked
    retried: int = 0  # scans re-enqueued
    permanent: dict[str, int] = field(default_factory=dict)  # skipped scans per error code
    without_scan: int = 0  # letters that name no scan: kept pending, for a person
    running: int = 0  # letters of scans that are queued or running: their end decides
    resolved: int = 0  # letters of scans that had completed meanwhile
    queue_error: str = ""  # why scan.ai.dlq could not be read (the DB's letters still went)


def redrive_dead_letters(*, actor: str = "", force: bool = False, letters=None) -> RedriveReport:
    """Resume the scans of pending dead letters from the step that failed.

    Without ``letters`` (a DeadLetter queryset, the admin's selection) it first takes every
    message off scan.ai.dlq into the DeadLetter table (one row per task id), parking those that
    name no scan. Each scan is re-enqueued at most once, and only a failed one; its pending
    letters are marked redriven in the transaction that re-enqueues it (``retry_scans``), so
    a letter recorded meanwhile is never marked without its scan running again. Scans whose
    failure is permanent (PERMANENT_FAILURES) are skipped unless ``force``.
    """
    from .broker import sort_dead_letters

    report = RedriveReport()
    if letters is None:
        try:
            sorted_ = sort_dead_letters(partial(_record_dead_letter_message, report))
        except Exception as exc:  # kombu raises many connection error types
            logger.warning("scan.ai.dlq not read (%r); redriving the recorded letters", exc)
            report.queue_error = f"{type(exc).__name__}: {exc}"
        else:
            report.taken, report.parked = sorted_["ack"], sorted_["park"]
        letters = DeadLetter.objects.all()
    pending = list(letters.pending().values_list("pk", "scan_id"))
    by_scan: dict = {}
    for pk, scan_id in pending:
        by_scan.setdefault(scan_id, []).append(pk)
    report.without_scan = len(by_scan.pop(None, []))
    scans = Scan.objects.filter(pk__in=by_scan).values_list("pk", "status", "error_code")
    for scan_id, status, error_code in scans:
        count = len(by_scan[scan_id])
        if status == ScanStatus.COMPLETED:
            report.resolved += resolve_dead_letters(scan_id)
        elif status != ScanStatus.FAILED:
            report.running += count
        elif error_code in PERMANENT_FAILURES and not force:
            report.permanent[error_code] = report.permanent.get(error_code, 0) + 1
        else:
            report.retried += retry_scans([scan_id], actor=actor)
    return report


def _record_dead_letter_message(report: RedriveReport, message) -> str:
    """scan.ai.dlq → the DeadLetter table: a message naming a scan is recorded (if its failure
    handler did not already) and taken off; one naming none is recorded and parked."""
    from .broker import ACK, PARK
    from .ledger import record_dead_letter

    scan_exists = bool(message.scan_id) and Scan.objects.filter(pk=message.scan_id).exists()
    died = f"RabbitMQ dead-lettered it from {message.queue or 'a queue'} ({message.reason})"
    if scan_exists:
        code, reason = f"broker_{message.reason or 'dead_letter'}", died
    elif message.problem:
        code, reason = "malformed_message", f"{message.problem}. {died}. Body: {message.body}"
    else:
        code, reason = "unknown_scan", f"No scan {message.scan_id}. {died}. Body: {message.body}"
    record_dead_letter(
        message.scan_id if scan_exists else None,
        message.task_id or f"unidentified-{uuid.uuid4()}",
        message.task_name,
        _step_of(message.task_name),
        code,
        reason,
    )
    return ACK if scan_exists else PARK


def _step_of(task_name: str) -> str:
    from .tasks import STEP_TASKS

    return next((str(step) for step, task in STEP_TASKS.items() if task.name == task_name), "")


def tidy_dead_letter_queue() -> int:
    """Take the messages whose dead letters are settled off scan.ai.dlq (their scan completed,
    or was re-enqueued by a retry or redrive), so that its depth counts only what still waits.
    The DeadLetter rows keep the record. Returns how many were taken off."""
    from .broker import ACK, KEEP, sort_dead_letters

    def settled(message) -> str:
        letter = (
            DeadLetter.objects.filter(task_id=message.task_id).first() if message.task_id else None
        )
        if letter is not None and (letter.redriven_at or letter.resolved_at):
            return ACK
        if (
            message.scan_id
            and Scan.objects.filter(pk=message.scan_id, status=ScanStatus.COMPLETED).exists()
        ):
            return ACK
        return KEEP

    return sort_dead_letters(settled)["ack"]


def regenerate_thumbnail(scan_id) -> bool:
    """Rebuild a prepared scan's thumbnail (after a change of SCAN_THUMBNAIL_EDGE)."""
    scan = Scan.objects.filter(pk=scan_id).exclude(image_prepared_at=None).first()
    if scan is None:
        return False
    with scan.image.open("rb") as source:
        prepared = prepare_image(source)
    name = _replace_file(_prepared_names(scan)[1], prepared.thumbnail)
    Scan.objects.filter(pk=scan.pk).update(thumbnail=name)
    return True


def regenerate_thumbnails(scan_ids) -> str:
    """Fan the work out in chunks: a group of starmap tasks, 20 scans each."""
    from .tasks import regenerate_thumbnail

    result = (
        regenerate_thumbnail.chunks(((str(scan_id),) for scan_id in scan_ids), 20)
        .group()
        .apply_async()
    )
    return result.id

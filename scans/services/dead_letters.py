"""Dead letters: recording a step's last failure and what the broker dead-lettered on its own,
redriving their scans, tidying scan.ai.dlq."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from functools import partial

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..broker import ACK, KEEP, PARK, DeadLetterMessage, sort_dead_letters
from ..models import DeadLetter, Scan, ScanStatus
from .base import ACTIVE_STATUSES, STEP_TASK_NAMES
from .failures import fail_scan
from .recovery import retry_scans
from .state import resolve_dead_letters

logger = logging.getLogger(__name__)

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


def record_dead_letter(
    scan_id, task_id: str, task_name: str, step: str, code: str, reason: str
) -> None:
    """One DeadLetter row per task id, also when the failure is reported twice. A letter of a
    scan that has completed meanwhile (another copy of the step finished it) is resolved."""
    status = (
        Scan.objects.filter(pk=scan_id).values_list("status", flat=True).first()
        if scan_id
        else None
    )
    completed = status == ScanStatus.COMPLETED
    try:
        with transaction.atomic():
            DeadLetter.objects.create(
                scan_id=scan_id if status else None,
                task_id=task_id,
                task_name=task_name,
                step=step,
                reason_code=code,
                reason=reason,
                resolved_at=timezone.now() if completed else None,
                resolved_by="scan completed" if completed else "",
            )
    except IntegrityError:
        logger.info("dead letter for task %s already recorded", task_id)


def redrive_dead_letters(*, actor: str = "", force: bool = False, letters=None) -> RedriveReport:
    """Resume the scans of pending dead letters from the step that failed.

    Without ``letters`` (a DeadLetter queryset, the admin's selection) it first takes every
    message off scan.ai.dlq into the DeadLetter table (one row per task id), parking those that
    name no scan. Each scan is re-enqueued at most once, and only a failed one; its pending
    letters are marked redriven in the transaction that re-enqueues it (``retry_scans``), so
    a letter recorded meanwhile is never marked without its scan running again. Scans whose
    failure is permanent (PERMANENT_FAILURES) are skipped unless ``force``.
    """
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
    handler did not already) and taken off; any other is recorded and parked."""
    return ACK if record_dead_letter_message(message) else PARK


# The x-death reason of a message the app itself rejected (a step's final failure, a malformed
# message): its failure handler or consumer recorded it already, with the better reason.
APP_REJECTED = "rejected"


def record_dead_letter_message(message: DeadLetterMessage) -> bool:
    """Record a message read off scan.ai.dlq as a DeadLetter (once per task id); True when it
    names an existing scan (it can stay on the DLQ, or be taken off, for that scan's redrive).

    A pipeline step that RabbitMQ dead-lettered for its delivery limit (quorum queues: it came
    back unacked too often, its worker died every time) was seen by no failure handler, and its
    scan waits on a step that will never run: the scan fails as ``worker_lost`` here, if it is
    still at that step, so that it ends with a reason and a *Retry* instead of the sweeper
    sending the same poison again. A message of another queue (an e-mail, a periodic job) is
    recorded with the task's name and the start of its body.
    """
    step = _step_of(message.task_name)
    scan_id = message.scan_id if step else None  # only a step's argument is a scan id
    scan_exists = scan_id is not None and Scan.objects.filter(pk=scan_id).exists()
    died = _how_it_died(message)
    if scan_exists:
        code, reason = f"broker_{message.reason or 'dead_letter'}", died
    elif message.task_name and not step:
        code = f"broker_{message.reason or 'dead_letter'}"
        reason = f"{died}. Task {message.task_name}. Body: {message.body}"
    elif message.problem:
        code, reason = "malformed_message", f"{message.problem}. {died}. Body: {message.body}"
    else:
        code, reason = "unknown_scan", f"No scan {message.scan_id}. {died}. Body: {message.body}"
    if message.task_id and DeadLetter.objects.filter(task_id=message.task_id).exists():
        return scan_exists
    record_dead_letter(
        scan_id if scan_exists else None,
        message.task_id or f"unidentified-{uuid.uuid4()}",
        message.task_name,
        step,
        code,
        reason,
    )
    if scan_exists and scan_id is not None and message.reason == DELIVERY_LIMIT:
        active = Scan.objects.filter(pk=scan_id, step=step, status__in=ACTIVE_STATUSES)
        if active.exists():
            fail_scan(scan_id, code="worker_lost", message=died)
    return scan_exists


DELIVERY_LIMIT = "delivery_limit"


def _how_it_died(message: DeadLetterMessage) -> str:
    queue = message.queue or "a queue"
    if message.reason == DELIVERY_LIMIT:
        return (
            f"RabbitMQ dead-lettered it from {queue}: it was delivered more often than the "
            "queue's delivery limit (CELERY_DELIVERY_LIMIT) allows, and no delivery was "
            "acknowledged (the worker running it died every time)"
        )
    return f"RabbitMQ dead-lettered it from {queue} ({message.reason or 'no reason given'})"


def _step_of(task_name: str) -> str:
    return next((str(step) for step, name in STEP_TASK_NAMES.items() if name == task_name), "")


def tidy_dead_letter_queue() -> int:
    """The dead-letter check's pass over scan.ai.dlq (beat, every 5 minutes).

    What the broker dead-lettered on its own (reason ``delivery_limit``, ``expired`` …: no
    failure handler saw it) is recorded first (``record_dead_letter_message``), and a message
    that names no scan is then parked, verbatim, on scan.ai.dlq.parked. The messages whose
    dead letters are settled (their scan completed, or was re-enqueued by a retry or redrive)
    are taken off, so that the depth counts only what still waits; the DeadLetter rows keep
    the record. Returns how many were taken off (parked ones included)."""

    def settled(message: DeadLetterMessage) -> str:
        if message.reason != APP_REJECTED and not record_dead_letter_message(message):
            return PARK
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

    done = sort_dead_letters(settled)
    return done[ACK] + done[PARK]

"""Business logic of a scan: create it, run each pipeline step, finish it exactly once."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from celery import chain
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from .models import TERMINAL_STATUSES, Category, Scan, ScanOutcome, ScanStatus, ScanStep
from .progress import mirror_progress
from .providers import get_answer_provider, get_vision_provider
from .providers.base import AnswerRequest, ProviderError, VisionRequest
from .selectors import match_rules

logger = logging.getLogger(__name__)

# Progress per step (start, end), as in the original system's contract.
STEP_PROGRESS = {
    ScanStep.VISION: (10, 33),
    ScanStep.RULE: (50, 66),
    ScanStep.ANSWER: (75, 100),
}
ACTIVE_STATUSES = (ScanStatus.QUEUED, ScanStatus.PROCESSING)


class ScanStepError(Exception):
    """A step cannot go on; ``code`` is stable, ``message`` is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- creating and enqueuing -----------------------------------------------------------------
def create_scan(*, owner, image: UploadedFile, hint: str = "") -> Scan:
    """Store the scan and enqueue its pipeline once the row is committed."""
    scan = Scan(owner=owner, hint=hint.strip())
    # the first run's chain root is the scan id itself, so Celery's root_id is the task_id
    scan.celery_root_id = str(scan.id)
    scan.image.save(image.name or "upload", image, save=False)
    with transaction.atomic():
        scan.save(force_insert=True)
        transaction.on_commit(partial(enqueue_pipeline, scan.id, scan.celery_root_id))
    _mirror(scan)
    return scan


def enqueue_pipeline(scan_id, root_id: str) -> bool:
    """Publish the chain vision_scan → rule_match → answer_gen for a committed scan.

    A publish that fails (broker down) is logged, not raised: the scan is committed and the
    stalled-scan sweeper gives it a terminal state with a reason.
    """
    from .tasks import answer_gen, rule_match, vision_scan

    scan_id = str(scan_id)
    pipeline = chain(
        vision_scan.si(scan_id).set(task_id=root_id),
        rule_match.si(scan_id),
        answer_gen.si(scan_id),
    )
    try:
        pipeline.apply_async()
    except Exception:  # kombu raises many connection error types; all mean "not published"
        logger.exception("could not publish the pipeline of scan %s", scan_id)
        return False
    return True


# --- step bookkeeping -----------------------------------------------------------------------
def _mirror(scan: Scan) -> None:
    mirror_progress(
        str(scan.id),
        status=scan.status,
        step=scan.step,
        progress=scan.progress,
        updated_at=(scan.updated_at or timezone.now()).isoformat(),
    )


def _save_if_active(scan: Scan, **fields) -> bool:
    """Write ``fields`` only while the scan is still active; False if it already ended.

    The conditional UPDATE is what makes "exactly one terminal state" hold when a step, a
    failure handler and the sweeper race each other.
    """
    fields["updated_at"] = timezone.now()
    updated = Scan.objects.filter(pk=scan.pk, status__in=ACTIVE_STATUSES).update(**fields)
    if not updated:
        return False
    for name, value in fields.items():
        setattr(scan, name, value)
    _mirror(scan)
    return True


def _load_active(scan_id: str) -> Scan | None:
    scan = Scan.objects.filter(pk=scan_id).first()
    if scan is None:
        logger.warning("scan %s does not exist (deleted?); step skipped", scan_id)
        return None
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
def run_vision_step(scan_id: str) -> None:
    scan = _load_active(scan_id)
    if scan is None:
        return
    if scan.classification is not None:
        return  # a redelivered message: the classification is stored, do not pay again
    if not _begin(scan, ScanStep.VISION):
        return
    provider = get_vision_provider()
    try:
        image_path = scan.image.path
    except (ValueError, NotImplementedError) as exc:
        raise ScanStepError("image_missing", "The uploaded photo is no longer available.") from exc
    result = provider.classify(VisionRequest(image_path=image_path, hint=scan.hint))
    _save_if_active(
        scan,
        classification=result.to_dict(),
        outcome=result.outcome,
        provider=provider.name,
        progress=STEP_PROGRESS[ScanStep.VISION][1],
    )


def run_rule_step(scan_id: str) -> None:
    scan = _load_active(scan_id)
    if scan is None:
        return
    if scan.progress >= STEP_PROGRESS[ScanStep.RULE][1]:
        return  # already matched
    if scan.classification is None:
        raise ScanStepError("vision_missing", "The item was not recognised before rule matching.")
    if not _begin(scan, ScanStep.RULE):
        return
    rules = None
    if scan.classification.get("outcome") == ScanOutcome.CLASSIFIED:
        rules = match_rules(scan.classification)
    category = Category.objects.filter(code=rules["category_code"]).first() if rules else None
    _save_if_active(
        scan,
        matched_rules=rules,
        category=category,
        # a classification the rule base cannot place is honestly unclassified, not a guess
        outcome=ScanOutcome.CLASSIFIED if rules else ScanOutcome.UNCLASSIFIED,
        progress=STEP_PROGRESS[ScanStep.RULE][1],
    )


def run_answer_step(scan_id: str) -> None:
    scan = _load_active(scan_id)
    if scan is None:
        return
    if scan.progress < STEP_PROGRESS[ScanStep.RULE][1]:
        raise ScanStepError("rules_missing", "Disposal rules were not looked up before the answer.")
    if scan.answer is None:
        if not _begin(scan, ScanStep.ANSWER):
            return
        provider = get_answer_provider()
        answer = provider.compose(
            AnswerRequest(
                classification=scan.classification, rules=scan.matched_rules, hint=scan.hint
            )
        )
        if not _save_if_active(scan, answer=answer.to_dict()):
            return
    _save_if_active(
        scan,
        status=ScanStatus.COMPLETED,
        step=ScanStep.DONE,
        progress=100,
        finished_at=timezone.now(),
    )


# --- failures -------------------------------------------------------------------------------
STEP_LABELS = {
    ScanStep.VISION: "recognition",
    ScanStep.RULE: "rule matching",
    ScanStep.ANSWER: "answer",
}


def describe_failure(exc: BaseException, step: str) -> tuple[str, str]:
    """A stable error code and a message a user can read, for an exception in ``step``."""
    label = STEP_LABELS.get(step, step)
    if isinstance(exc, ScanStepError | ProviderError):
        return exc.code, exc.message
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        return "step_timeout", f"The {label} step took too long and was stopped. Please try again."
    return (
        "internal_error",
        f"An unexpected error stopped the {label} step ({type(exc).__name__}). Please try again.",
    )


def fail_scan(scan_id: str, *, code: str, message: str) -> bool:
    """Mark an active scan failed with a reason. False if it had already ended."""
    scan = Scan.objects.filter(pk=scan_id).first()
    if scan is None:
        return False
    failed = _save_if_active(
        scan,
        status=ScanStatus.FAILED,
        error_code=code,
        error_message=message,
        finished_at=timezone.now(),
    )
    if failed:
        logger.warning("scan %s failed at %s: %s (%s)", scan_id, scan.step, code, message)
    return failed


def sweep_stalled_scans(now=None) -> int:
    """Fail scans that made no progress for SCAN_STALLED_AFTER_SECONDS; return how many."""
    now = now or timezone.now()
    threshold = timedelta(seconds=settings.SCAN_STALLED_AFTER_SECONDS)
    stalled = Scan.objects.filter(status__in=ACTIVE_STATUSES, updated_at__lt=now - threshold)
    minutes = max(1, int(threshold.total_seconds() // 60))
    count = 0
    for scan_id in stalled.values_list("id", flat=True):
        count += fail_scan(
            scan_id,
            code="stalled",
            message=f"No progress for {minutes} minutes; the pipeline was interrupted. Please retry.",
        )
    return count

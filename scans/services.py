"""Business logic of a scan: create it, run each pipeline step, finish it exactly once."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from decimal import Decimal
from functools import partial

from celery import chain
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .images import UnusablePhoto, prepare_image
from .models import (
    TERMINAL_STATUSES,
    Category,
    Scan,
    ScanOutcome,
    ScanStatus,
    ScanStep,
    VisionCacheEntry,
)
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
def _prepared_names(scan: Scan) -> tuple[str, str]:
    return f"scans/prepared/{scan.id}.jpg", f"scans/prepared/{scan.id}-thumb.jpg"


def _replace_file(name: str, content: bytes) -> str:
    if default_storage.exists(name):
        default_storage.delete(name)  # a redelivered step rewrites the same names
    return default_storage.save(name, ContentFile(content))


def ensure_prepared_image(scan: Scan) -> bytes:
    """The scan's prepared JPEG; prepared (and the original upload deleted) on first use.

    The original may carry GPS coordinates and camera serials; only the prepared copy, with no
    metadata, is kept, shown or sent to a provider.
    """
    if scan.image_prepared_at:
        with scan.image.open("rb") as handle:
            return handle.read()
    try:
        with scan.image.open("rb") as source:
            prepared = prepare_image(source)
    except FileNotFoundError as exc:
        raise ScanStepError("image_missing", "The uploaded photo is no longer available.") from exc
    except UnusablePhoto as exc:
        raise ScanStepError(exc.code, exc.message) from exc
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
    )
    if saved and original != image_name:
        default_storage.delete(original)
    return prepared.jpeg


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


def _classify(scan: Scan, image: bytes) -> tuple[dict, str, dict | None, bool]:
    """Classification, provider name, usage of a paid call (None if free or cached), cache hit."""
    provider = get_vision_provider()
    namespace = getattr(provider, "cache_namespace", None)
    key = vision_cache_key(namespace, scan.image_sha256, scan.hint) if namespace else None
    if key:
        entry = VisionCacheEntry.objects.filter(key=key).first()
        if entry:
            VisionCacheEntry.objects.filter(pk=entry.pk).update(
                hits=F("hits") + 1, last_hit_at=timezone.now()
            )
            return entry.classification, provider.name, None, True
    result = provider.classify(VisionRequest(image=image, hint=scan.hint))
    classification = result.to_dict()
    usage = classification.pop("usage", None)
    if key and result.outcome == ScanOutcome.CLASSIFIED:
        # two scans of the same photo racing: the first entry wins, the second is no error
        VisionCacheEntry.objects.get_or_create(
            key=key,
            defaults={
                "provider": namespace,
                "image_sha256": scan.image_sha256,
                "classification": classification,
            },
        )
    return classification, provider.name, usage, False


def run_vision_step(scan_id: str) -> None:
    scan = _load_active(scan_id)
    if scan is None:
        return
    if scan.classification is not None:
        return  # a redelivered message: the classification is stored, do not pay again
    if not _begin(scan, ScanStep.VISION):
        return
    image = ensure_prepared_image(scan)
    classification, provider_name, usage, cache_hit = _classify(scan, image)
    _save_if_active(
        scan,
        classification=classification,
        outcome=classification["outcome"],
        provider=provider_name,
        vision_cache_hit=cache_hit,
        vision_model=(usage or {}).get("model", ""),
        progress=STEP_PROGRESS[ScanStep.VISION][1],
        **_usage_fields(scan, "vision", usage),
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
        ).to_dict()
        usage = answer.pop("usage", None)
        saved = _save_if_active(
            scan,
            answer=answer,
            answer_model=(usage or {}).get("model", ""),
            **_usage_fields(scan, "answer", usage),
        )
        if not saved:
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

"""Answering a scan that asked (needs_input): the owner's choice or a new hint resumes it."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from ..errors import CodedError, error_message
from ..models import BatchStatus, Scan, ScanBatch, ScanEventType, ScanOutcome, ScanStatus, ScanStep
from ..outbox import append_event
from ..rules import current_rulebase, item_named
from .base import STEP_PROGRESS
from .dispatch import _requeue

logger = logging.getLogger(__name__)


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

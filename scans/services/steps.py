"""The four pipeline steps (prepare, vision, rule, answer), each idempotent."""

from __future__ import annotations

import logging
from decimal import Decimal

from django.utils import timezone

from ..models import Scan, ScanEventType, ScanStatus, ScanStep
from ..providers.base import AnswerRequest
from ..rules import current_rulebase, offered_choices, rule_step_result
from .base import SKIPPED, STEP_PROGRESS, SUCCEEDED, ScanStepError
from .caches import _classify, compose_answer
from .photos import ensure_prepared_image
from .state import _begin, _finish, _load_active, _save_if_active

logger = logging.getLogger(__name__)


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


def run_prepare_step(scan_id: str) -> str:
    """Prepare the photo (CPU-bound, its own queue); the scan shows it as the vision stage."""
    scan = _load_active(scan_id)
    if scan is None or scan.image_prepared_at:
        return SKIPPED
    # one write, with the prepared photo: "processing" and the photo appear together, and
    # the scan names the step it waits for (the vision step then writes nothing to start)
    started = {
        "status": ScanStatus.PROCESSING,
        "step": ScanStep.VISION,
        "progress": STEP_PROGRESS[ScanStep.VISION][0],
        "started_at": scan.started_at or timezone.now(),
    }
    ensure_prepared_image(scan, ends_step=True, **started)
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
        billed=usage,
        ends_step=True,
        **_usage_fields(scan, "vision", usage),
    )
    return SUCCEEDED if saved else SKIPPED


def run_rule_step(scan_id: str) -> str:
    scan = _load_active(scan_id)
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
    rulebase = current_rulebase()  # in memory, at the revision read with the scan
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
            ends_step=True,
        )
        return SUCCEEDED if asked else SKIPPED
    # the rules are stored, and the scan names the step it waits for: the answer step then
    # writes nothing to start (progress past RULE's end: "matched" for every check)
    saved = _save_if_active(
        scan,
        unless_stored={"progress__lt": STEP_PROGRESS[ScanStep.RULE][1]},
        status=ScanStatus.PROCESSING,
        step=ScanStep.ANSWER,
        matched_rules=rules,
        category=rulebase.by_code.get(rules["category_code"]),
        outcome=outcome,
        progress=STEP_PROGRESS[ScanStep.ANSWER][0],
        ends_step=True,
    )
    return SUCCEEDED if saved else SKIPPED


def run_answer_step(scan_id: str) -> str:
    scan = _load_active(scan_id)
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
            "billed": usage,
            **_usage_fields(scan, "answer", usage),
        }
    completed = _finish(
        scan,
        ScanEventType.COMPLETED,
        status=ScanStatus.COMPLETED,
        step=ScanStep.DONE,
        progress=100,
        finished_at=timezone.now(),
        ends_step=True,
        **answer_fields,
    )
    return SUCCEEDED if completed else SKIPPED

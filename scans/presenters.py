"""What the scan pages show, shaped from a scan: the stages with their states, the result card,
the question, why it failed and whether a retry helps, and the live page's labels. Views pass
these to templates; nothing here reads the request."""

from __future__ import annotations

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .errors import error_message, retry_helps
from .models import Category, Item, Scan, ScanOutcome, ScanStatus, ScanStep
from .providers.base import rules_language
from .providers.offline import rule_answer
from .serializers import question_message
from .stages import PIPELINE_STAGES, STAGE_LABELS


def stage_states(scan: Scan) -> list[dict]:
    """Each pipeline stage with its state for the page: done, active, failed, asking (the rule
    stage of a scan that asks which one it is) or waiting."""
    order = [s.value for s in PIPELINE_STAGES]
    if scan.step == ScanStep.INPUT:
        current = order.index(ScanStep.RULE)
    elif scan.step == ScanStep.DONE:
        current = len(order)
    else:
        current = order.index(scan.step) if scan.step in order else -1
    states = []
    for index, stage in enumerate(PIPELINE_STAGES):
        if index < current:
            state = "done"
        elif index == current:
            state = {ScanStatus.FAILED: "failed", ScanStatus.NEEDS_INPUT: "asking"}.get(
                scan.status, "active"
            )
        else:
            state = "waiting"
        states.append({"code": stage.value, "label": STAGE_LABELS[stage], "state": state})
    return states


def failure_info(scan: Scan, *, staff: bool = False) -> dict | None:
    """Why the scan failed, in the page's language, from its error code (scans.errors); the
    stored technical detail only for staff."""
    if scan.status != ScanStatus.FAILED:
        return None
    return {
        "reason": error_message(scan.error_code),
        "detail": scan.error_message if staff else "",
        "code": scan.error_code,
        "step": STAGE_LABELS.get(scan.step)
        or (ScanStep(scan.step).label if scan.step in ScanStep.values else scan.step),
        # nothing to retry: the photo (or the address) itself is the problem
        "photo_problem": not retry_helps(scan.error_code),
    }


def can_retry(scan: Scan, user) -> bool:
    return (
        scan.status == ScanStatus.FAILED
        and scan.owner_id == user.pk
        and retry_helps(scan.error_code)
        and bool(scan.image)  # its photo was deleted by retention: nothing to run again
    )


def _category_names(language: str) -> dict[str, str]:
    field = "middle_en" if language == "en" else "middle_ko"
    return dict(Category.objects.values_list("code", field))


CERTAIN = 0.97  # at or above: "sure"; from SCAN_MATCH_CONFIDENT up to here: "almost sure"


def certainty(classification: dict) -> dict:
    """How sure the answer is, in words a person understands, from the classification's
    ``confidence`` (or the owner's own choice). Below SCAN_MATCH_CONFIDENT the card marks the
    answer as a guess: a classified result that weak should have asked, and if one still
    reaches the card it must not look like a certain one."""
    if classification.get("chosen_by") == "user":
        return {"level": "chosen", "label": _("You chose this"), "uncertain": False}
    try:
        confidence = float(classification.get("confidence") or 0)
    except (TypeError, ValueError):
        confidence = 0.0
    if confidence >= max(CERTAIN, settings.SCAN_MATCH_CONFIDENT):
        return {"level": "certain", "label": _("Sure"), "uncertain": False}
    if confidence >= settings.SCAN_MATCH_CONFIDENT:
        return {"level": "likely", "label": _("Almost sure"), "uncertain": False}
    return {"level": "unsure", "label": _("Not sure"), "uncertain": True}


def result_card(scan: Scan, *, language: str, staff: bool) -> dict | None:
    """What the result card shows, in the page's language.

    In the scan's own language (the one its guidance is written in): the guidance as written
    (steps, what to fix, the short answer). In the other one (a Korean scan read in English, an
    English one in Korean): the rules' own answer in the page's language (the rule base's
    steps and fixes, the item's bin, its conditions); the written answer is kept as
    "original guidance".
    """
    if scan.status != ScanStatus.COMPLETED:
        return None
    english = language == "en"
    classification = scan.classification or {}
    rules = scan.matched_rules or {}
    answer = scan.answer or {}
    card: dict = {
        "english": english,
        "classified": scan.outcome == ScanOutcome.CLASSIFIED and bool(rules),
        # "classified from your hint": not said of a category the owner chose
        "offline": scan.provider == "offline" and classification.get("chosen_by") != "user",
        "provider": scan.provider,
    }
    if card["classified"]:
        card["major"] = rules.get("major_en" if english else "major_ko", "")
        card["middle"] = rules.get("middle_en" if english else "middle_ko", "")
        minor = classification.get("minor_category") or ""
        if minor and english:
            minor = (
                Item.objects.filter(name_ko=minor, category__code=rules.get("category_code"))
                .values_list("name_en", flat=True)
                .first()
                or minor
            )
        card["minor"] = minor
        card["certainty"] = certainty(classification)
        card["summary"] = rules.get("summary_en" if english else "summary_ko", "")
        goes_to = _category_names(language)
        card["exclusions"] = [
            {
                "name": ex.get("en" if english else "ko") or ex.get("ko", ""),
                "goes_to": goes_to.get(ex.get("goes_to"), ex.get("goes_to_ko", "")),
                "note": ex.get("note_en" if english else "note_ko", ""),
            }
            for ex in rules.get("exclusions") or []
        ]
    page_language = rules_language(language)
    if page_language != rules_language(scan.language):
        # written in the other language (a Korean scan read in English, or the other way):
        # the rules' own answer in the page's language, the written one kept as the original
        if card["classified"]:
            shown = rule_answer(classification, rules, page_language)
            card["steps"] = shown["disposal_steps"]
            card["fixes"] = shown["insufficiencies"]
            card["answer"] = shown["user_answer"]
        else:
            card["steps"], card["fixes"] = [], []
            card["answer"] = _(
                "We could not tell what this is. Describe the item in the hint, for example "
                "“clear PET bottle, label on”, and scan again."
            )
        card["original_answer"] = answer.get("user_answer", "")
        card["original_language"] = rules_language(scan.language)
    else:
        card["steps"] = answer.get("disposal_steps") or []
        card["fixes"] = answer.get("insufficiencies") or []
        card["answer"] = answer.get("user_answer", "")
    if staff:
        card["usage"] = {
            "cost_usd": format(scan.cost_usd.normalize(), "f"),  # exact, no trailing zeros
            "input_tokens": scan.input_tokens,
            "cached_input_tokens": scan.cached_input_tokens,
            "output_tokens": scan.output_tokens,
            "models": " / ".join(
                dict.fromkeys(m for m in (scan.vision_model, scan.answer_model) if m)
            ),
            "cache_hit": scan.vision_cache_hit,
            "answer_cache_hit": scan.answer_cache_hit,
        }
    return card


def question_card(scan: Scan, *, language: str) -> dict | None:
    """What a scan that asks which one it is (status needs_input) shows: the question, its
    choices as one-tap buttons (the item and its bin, in the page's language), every category
    for "none of these", and the hint form."""
    if scan.status != ScanStatus.NEEDS_INPUT:
        return None
    english = language == "en"
    choices = []
    for choice in scan.choices or []:
        item = (choice.get("item_en") if english else None) or choice.get("item", "")
        bin_ = choice.get("category_en" if english else "category_ko", "")
        if item == bin_:  # offered as the category itself: say where it belongs instead
            bin_ = choice.get("major_en" if english else "major_ko", "")
        choices.append({**choice, "name": item, "bin": bin_})
    name = "middle_en" if english else "middle_ko"
    return {
        "message": question_message(scan),
        "choices": choices,
        "categories": list(Category.objects.values_list("code", name)),
        "offline": scan.provider == "offline",
        "hint_max_length": settings.SCAN_HINT_MAX_LENGTH,
    }


RETRYING_ONE = "Retrying: %(counter)s failed attempt so far."
RETRYING_OTHER = "Retrying: %(counter)s failed attempts so far."


def live_labels() -> dict:
    """Labels for static/scan.js, in the page's language."""
    return {
        "status": dict(ScanStatus.choices),
        "step": dict(ScanStep.choices),
        "stages": [stage.value for stage in PIPELINE_STAGES],
        # the same messages as the page's: %(counter)s is the number of failed attempts
        "retrying": {
            "one": ngettext(RETRYING_ONE, RETRYING_OTHER, 1),
            "other": ngettext(RETRYING_ONE, RETRYING_OTHER, 2),
        },
        "last_error": _("Last error"),
        "failed": _("The scan failed"),
        "loading": _("Loading the result…"),
        "resuming": _("Going on with your answer…"),
        "answer_failed": _("Your answer could not be sent. Try again."),
    }

"""What a scan that is not sure offers: its candidates as items of the rule base, with bins."""

from __future__ import annotations

from typing import Any

from .cache import RuleBase, current_rulebase
from .items import item_of

MAX_CHOICES = 4


def classification_candidates(classification: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidates of a classification that is not sure, best first, in the contract's shape
    ``{"category_code", "item", "item_en", "score"}``.

    Providers put them in ``classification["candidates"]``; results stored before that (the
    offline matcher's ``details.candidates``: ``{"category", "score", "alias"}``) are read as
    well, the alias standing in for the item until it is resolved against the rule base.
    """
    candidates = classification.get("candidates")
    if candidates:
        return [c for c in candidates if isinstance(c, dict)]
    legacy = (classification.get("details") or {}).get("candidates") or []
    return [
        {
            "category_code": c.get("category_code") or c.get("category"),
            "item": c.get("item"),
            "item_en": c.get("item_en"),
            "alias": c.get("alias"),
            "score": c.get("score"),
        }
        for c in legacy
        if isinstance(c, dict)
    ]


def offered_choices(
    classification: dict[str, Any], rulebase: RuleBase | None = None
) -> list[dict[str, Any]]:
    """What a scan that is not sure offers: up to MAX_CHOICES items with their bins, best first.

    Each is ``{"category_code", "item", "item_en", "category_ko", "category_en", "major_ko",
    "major_en", "kind", "score"}``. Candidates naming no category of the rule base are left
    out; an item the rule base does not know keeps the provider's words, and a candidate with
    no item is offered as its category. May be empty (no hint at all): the owner can still pick
    any category, or add a hint.
    """
    rulebase = rulebase or current_rulebase()
    choices: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for candidate in classification_candidates(classification):
        category = rulebase.by_code.get(candidate.get("category_code") or "")
        if category is None:
            continue
        named = candidate.get("item") or candidate.get("alias")
        item = item_of(category, named, rulebase)
        item_ko = item.name_ko if item else (candidate.get("item") or category.middle_ko)
        item_en = (
            candidate.get("item_en")
            or (item.name_en if item else "")
            or (category.middle_en if item_ko == category.middle_ko else item_ko)
        )
        if (category.code, item_ko) in seen:
            continue
        seen.add((category.code, item_ko))
        score = candidate.get("score")
        choices.append(
            {
                "category_code": category.code,
                "item": item_ko,
                "item_en": item_en,
                "category_ko": category.middle_ko,
                "category_en": category.middle_en,
                "major_ko": category.major_ko,
                "major_en": category.major_en,
                "kind": category.kind,
                "score": round(float(score), 4) if isinstance(score, int | float) else None,
            }
        )
        if len(choices) == MAX_CHOICES:
            break
    return choices

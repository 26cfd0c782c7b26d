"""The taxonomy as the API lists it and as a vision prompt renders it, and the tag table."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch

from ..models import Category, Item
from .cache import RuleBase, current_rulebase


def get_taxonomy() -> list[dict[str, Any]]:
    """The taxonomy as majors → middles → items, in the rule base's order."""
    categories = Category.objects.prefetch_related(
        Prefetch("items", queryset=Item.objects.order_by("name_ko"))
    )
    majors: dict[str, dict[str, Any]] = {}
    for cat in categories:
        major = majors.setdefault(
            cat.major_ko, {"major_ko": cat.major_ko, "major_en": cat.major_en, "categories": []}
        )
        major["categories"].append(
            {
                "code": cat.code,
                "kind": cat.kind,
                "middle_ko": cat.middle_ko,
                "middle_en": cat.middle_en,
                "summary_ko": cat.summary_ko,
                "summary_en": cat.summary_en,
                "items": [{"ko": i.name_ko, "en": i.name_en} for i in cat.items.all()],
            }
        )
    return list(majors.values())


def situation_tag_table() -> list[tuple[str, list[str], list[str]]]:
    return [(t.code, t.triggers, t.negations) for t in current_rulebase().tags]


def vision_taxonomy(
    items_per_category: int = 8, rulebase: RuleBase | None = None
) -> dict[str, Any]:
    """The taxonomy a vision prompt and its JSON schema are built from, in a fixed order.

    Prompts are cached by prefix, so the same rule base must always render the same bytes:
    categories in the rule base's order (position, code), their first items by id (the rule
    base lists the most common items first), the exclusions ("not this bin") by category and
    name, tags by group and code with their trigger and negation phrases. Only a few item names are
    given per category: they anchor what the category means without paying for every alias.
    """
    rulebase = rulebase or current_rulebase()
    items_by_category: dict[int, list[Item]] = {}
    for item in sorted(rulebase.items, key=lambda item: item.pk):
        items_by_category.setdefault(item.category_id, []).append(item)
    return {
        "categories": [
            {
                "code": category.code,
                "major_ko": category.major_ko,
                "major_en": category.major_en,
                "middle_ko": category.middle_ko,
                "middle_en": category.middle_en,
                "items": [item.name_ko for item in items_by_category.get(category.pk, [])][
                    :items_per_category
                ],
            }
            for category in rulebase.categories
        ],
        "exclusions": [
            {
                "ko": exclusion.name_ko,
                "en": exclusion.name_en,
                "category": category.code,
                "goes_to": exclusion.goes_to.code,
            }
            for category in rulebase.categories
            for exclusion in rulebase.exclusions_of(category)
        ],
        "situation_tags": [
            {
                "code": tag.code,
                "ko": tag.name_ko,
                "en": tag.name_en,
                "triggers": list(tag.triggers or []),
                "negations": list(tag.negations or []),
            }
            for tag in rulebase.tags
        ],
    }

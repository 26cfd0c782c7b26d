"""Which item of the rule base a name names: a classification's item, a choice's item."""

from __future__ import annotations

from ..models import Category, Item
from .cache import RuleBase, current_rulebase
from .matching.text import compact


def item_of_classification(category: Category, name: str | None, rulebase: RuleBase) -> str:
    """The Korean name of the rule base's item (or exclusion) of ``category`` that a
    classification's item names: by its Korean name, else by any of its names or aliases
    (a vision model's own words); "" when it names none."""
    if not name:
        return ""
    entry = rulebase.entry_of(category, name)
    if entry is not None:
        return entry.name_ko
    item = item_of(category, name, rulebase)
    if item is not None:
        return item.name_ko
    wanted = compact(name)
    for exclusion in rulebase.exclusions:
        if exclusion.goes_to_id == category.pk or exclusion.category_id == category.pk:
            names = [exclusion.name_ko, exclusion.name_en, *(exclusion.aliases or [])]
            if any(compact(str(n)) == wanted for n in names):
                return exclusion.name_ko
    return ""


def item_of(category: Category, name: str | None, rulebase: RuleBase) -> Item | None:
    """The rule base's item of ``category`` that ``name`` names (Korean or English name, or an
    alias), compared without spaces and case."""
    wanted = compact(name or "")
    if not wanted:
        return None
    for item in rulebase.items:
        if item.category_id != category.pk:
            continue
        names = [item.name_ko, item.name_en, *(item.aliases or [])]
        if any(compact(str(n)) == wanted for n in names):
            return item
    return None


def item_named(category_code: str, name: str, rulebase: RuleBase | None = None) -> Item | None:
    """The rule base's item of a category by its Korean or English name or an alias."""
    rulebase = rulebase or current_rulebase()
    category = rulebase.by_code.get(category_code)
    return item_of(category, name, rulebase) if category else None

"""A classification placed in the rule base: its category (``resolve_category``), the rules
that apply to it (``match_rules``: steps, exclusions, fixes, open conditions), and the rule
step's decision (``rule_step_result``)."""

from __future__ import annotations

from typing import Any

from ..models import Category, DisposalStep, ScanOutcome
from .cache import RuleBase, current_rulebase
from .items import item_of_classification
from .matching.hints import match_hint
from .matching.text import compact


def resolve_category(
    classification: dict[str, Any], rulebase: RuleBase | None = None
) -> tuple[Category | None, str]:
    """Find the category a classification names, tolerating spelling drift.

    Returns the category and how it was found. A provider's ``category_code`` is trusted only
    if it exists; then the middle and major names (normalized, Korean or English), then the
    minor category as an item name, then the text matcher over the names given.
    """
    rulebase = rulebase or current_rulebase()
    code = classification.get("category_code")
    if code and code in rulebase.by_code:
        return rulebase.by_code[code], "code"
    middle = compact(classification.get("middle_category") or "")
    major = compact(classification.get("major_category") or "")
    if middle or major:
        for category in rulebase.categories:
            names = {compact(category.middle_ko), compact(category.middle_en)}
            if middle and middle in names:
                return category, "middle_name"
            if not middle and major in names:
                return category, "major_name"
    minor = classification.get("minor_category") or ""
    if minor and minor in rulebase.first_item_named:
        return rulebase.first_item_named[minor].category, "item"
    text = " ".join(
        filter(
            None,
            [minor, classification.get("middle_category"), classification.get("major_category")],
        )
    )
    if text:
        found = match_hint(text)
        if found.outcome == "classified" and found.category_code in rulebase.by_code:
            return rulebase.by_code[found.category_code], f"text_{found.method}"
    return None, "none"


def match_rules(
    classification: dict[str, Any], rulebase: RuleBase | None = None
) -> dict[str, Any] | None:
    """The disposal rules for a classification, as a JSON snapshot stored on the scan.

    Only steps that apply (common steps, plus conditional steps whose tag is present, less
    the common steps such a step replaces, and of those only the ones for this item:
    ``applicable_steps``) are included, in the rule base's order, with every exclusion of the
    category. An item whose bin depends on a condition nothing settled lists its
    ``conditions`` (each with its bin), for the answer to state them all. Read from the
    in-memory rule base (scans.rules.cache): one revision check, no table reads.
    """
    rulebase = rulebase or current_rulebase()
    category, matched_by = resolve_category(classification, rulebase)
    if category is None:
        return None
    tags = set(classification.get("situation_tags") or [])
    # A state can send the item to another bin (broken glass is not the bottle bin): the
    # rule base's reroutes, for any provider. The offline matcher applies them itself, and says
    # so in its details; a category reached that way is not re-routed again.
    minor = classification.get("minor_category")
    category, rerouted = rulebase.reroute(category, minor, tags)
    tag_names = {t.code: (t.name_ko, t.name_en) for t in rulebase.tags}
    if not rerouted:
        earlier = (classification.get("details") or {}).get("rerouted") or []
        rerouted = [hop for hop in earlier if isinstance(hop, dict)]
        if rerouted and rerouted[-1].get("to") != category.code:
            rerouted = []
    item = item_of_classification(category, minor, rulebase)
    entry = rulebase.entry_of(category, item) if item else None
    return {
        "category_code": category.code,
        "kind": category.kind,
        "major_ko": category.major_ko,
        "major_en": category.major_en,
        "middle_ko": category.middle_ko,
        "middle_en": category.middle_en,
        "summary_ko": category.summary_ko,
        "summary_en": category.summary_en,
        "matched_by": matched_by,
        # the rule base's item the steps were chosen for ("" when it names none: then only
        # the steps meant for every item of the category)
        "item_ko": item,
        "rerouted": [
            {
                **hop,
                "from_ko": rulebase.by_code[hop["from"]].middle_ko,
                "from_en": rulebase.by_code[hop["from"]].middle_en,
                "tag_ko": tag_names.get(hop["tag"], (hop["tag"],) * 2)[0],
                "tag_en": tag_names.get(hop["tag"], (hop["tag"],) * 2)[1],
            }
            for hop in rerouted
            if hop.get("from") in rulebase.by_code
        ],
        "conditions": open_conditions(classification, entry, category, rerouted, tags, rulebase),
        "steps": [
            {"ko": s.text_ko, "en": s.text_en, "tag": s.tag.code if s.tag else None}
            for s in applicable_steps(rulebase.steps_of(category), item, tags)
        ],
        "exclusions": [
            {
                "ko": e.name_ko,
                "en": e.name_en,
                "goes_to": e.goes_to.code,
                "goes_to_ko": e.goes_to.middle_ko,
                "note_ko": e.note_ko,
                "note_en": e.note_en,
            }
            for e in rulebase.exclusions_of(category)
        ],
        "fixes": [
            {"tag": t.code, "ko": t.fix_ko, "en": t.fix_en}
            for t in rulebase.tags
            if t.code in tags and t.fix_ko
        ],
    }


def step_applies_to(step: DisposalStep, item: str) -> bool:
    """Whether a step is for this item: a step limited to some items (``items``) is for those
    only, and never for an item the rule base does not know (""); ``except_items`` are left
    out."""
    if step.items:
        return item in step.items
    return item not in (step.except_items or [])


def applicable_steps(steps: list[DisposalStep], item: str, tags: set[str]) -> list[DisposalStep]:
    """The steps that apply to ``item`` with ``tags``, in order: common steps and those of a
    present tag, for this item (``step_applies_to``). A common step that a tag's step replaces
    (``unless_tag``) gives way only when that replacement, the step right after it, applies."""
    kept = []
    for index, step in enumerate(steps):
        if step.tag is not None and step.tag.code not in tags:
            continue
        if not step_applies_to(step, item):
            continue
        if step.unless_tag is not None and step.unless_tag.code in tags:
            after = steps[index + 1] if index + 1 < len(steps) else None
            if (
                after is not None
                and after.tag_id == step.unless_tag_id
                and step_applies_to(after, item)
            ):
                continue
        kept.append(step)
    return kept


def open_conditions(
    classification: dict[str, Any],
    entry: Any,
    category: Category,
    rerouted: list[dict[str, Any]],
    tags: set[str],
    rulebase: RuleBase,
) -> list[dict[str, Any]]:
    """The item's conditions (``conditions:`` in the rule base: a paint tin with or without
    paint left) when nothing settled which one holds, each with its bin, for the answer to
    state them all; [] when the item has none, or when they are settled: the owner chose, a
    state re-routed the item, or a present tag names the bin it is in."""
    conditions = [c for c in (entry.conditions if entry else None) or [] if isinstance(c, dict)]
    if not conditions or classification.get("chosen_by") == "user" or rerouted:
        return []
    if any(c.get("tag") in tags and c.get("goes_to") == category.code for c in conditions):
        return []
    out = []
    for condition in conditions:
        goes_to = rulebase.by_code.get(condition.get("goes_to") or "")
        if goes_to is None:
            continue
        out.append(
            {
                "when_ko": condition.get("when_ko") or "",
                "when_en": condition.get("when_en") or "",
                "goes_to": goes_to.code,
                "goes_to_ko": goes_to.middle_ko,
                "goes_to_en": goes_to.middle_en,
                "current": goes_to.code == category.code,
            }
        )
    return out if any(c["current"] for c in out) else []


def rule_step_result(
    classification: dict[str, Any], rulebase: RuleBase | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The rule step's decision for a classification: the matched rules and the scan's outcome.

    Only a classified result is looked up, and a classification the rule base cannot place is
    honestly unclassified, not a guess. The pipeline's rule step and bench/guidance_eval.py
    both call this, so the benchmark scores exactly what a scan would show.
    """
    rules = None
    if classification.get("outcome") == ScanOutcome.CLASSIFIED:
        rules = match_rules(classification, rulebase)
    # not sure (or not placeable): the scan asks which one it is (status needs_input)
    return rules, (ScanOutcome.CLASSIFIED if rules else ScanOutcome.AMBIGUOUS)

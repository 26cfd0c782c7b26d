"""Read-only queries: the taxonomy, rule lookups and what a user may see."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Prefetch, QuerySet, Sum

from .matching import compact, match_hint
from .models import Category, DisposalStep, Item, Scan, ScanBatch, ScanOutcome
from .rulebase_cache import RuleBase, current_rulebase


def scans_visible_to(user) -> QuerySet[Scan]:
    """A user sees their own scans; staff see all. Nobody else sees anything."""
    if not user.is_authenticated:
        return Scan.objects.none()
    scans = Scan.objects.select_related("owner", "category")
    return scans if user.is_staff else scans.filter(owner=user)


def visible_scan(user, scan_id: object) -> Scan | None:
    """The scan with this id if ``user`` may see it; None for a malformed id, a scan of someone
    else or no scan at all (callers answer 404 alike, so ids of others do not leak)."""
    try:
        pk = uuid.UUID(str(scan_id))
    except ValueError:
        return None
    return scans_visible_to(user).filter(pk=pk).first()


def batches_visible_to(user) -> QuerySet[ScanBatch]:
    """A user sees their own batches; staff see all."""
    if not user.is_authenticated:
        return ScanBatch.objects.none()
    return ScanBatch.objects.all() if user.is_staff else ScanBatch.objects.filter(owner=user)


def visible_batch(user, batch_id: object) -> ScanBatch | None:
    """The batch with this id if ``user`` may see it (None otherwise, as ``visible_scan``)."""
    try:
        pk = uuid.UUID(str(batch_id))
    except ValueError:
        return None
    return batches_visible_to(user).filter(pk=pk).first()


def usage_totals(scans: QuerySet[Scan]) -> dict[str, Any]:
    """Provider tokens (input, cached_input, output) and cost (USD) summed over ``scans``;
    None where no scan has a value."""
    return scans.aggregate(
        input=Sum("input_tokens"),
        cached_input=Sum("cached_input_tokens"),
        output=Sum("output_tokens"),
        cost=Sum("cost_usd"),
    )


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
    in-memory rule base (scans.rulebase_cache): one revision check, no table reads.
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


def item_of_classification(category: Category, name: str | None, rulebase: RuleBase) -> str:
    """The Korean name of the rule base's item (or exclusion) of ``category`` that a
    classification's item names: by its Korean name, else by any of its names or aliases
    (a vision model's own words); "" when it names none."""
    if not name:
        return ""
    entry = rulebase.entry_of(category, name)
    if entry is not None:
        return entry.name_ko
    item = _item_of(category, name, rulebase)
    if item is not None:
        return item.name_ko
    wanted = compact(name)
    for exclusion in rulebase.exclusions:
        if exclusion.goes_to_id == category.pk or exclusion.category_id == category.pk:
            names = [exclusion.name_ko, exclusion.name_en, *(exclusion.aliases or [])]
            if any(compact(str(n)) == wanted for n in names):
                return exclusion.name_ko
    return ""


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


def _item_of(category: Category, name: str | None, rulebase: RuleBase) -> Item | None:
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
        item = _item_of(category, named, rulebase)
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


def item_named(category_code: str, name: str, rulebase: RuleBase | None = None) -> Item | None:
    """The rule base's item of a category by its Korean or English name or an alias."""
    rulebase = rulebase or current_rulebase()
    category = rulebase.by_code.get(category_code)
    return _item_of(category, name, rulebase) if category else None


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

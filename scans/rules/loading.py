"""Loading the rule base (taxonomy, situation tags, steps, exclusions) from YAML into the DB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from ..models import Category, DisposalStep, Exclusion, Item, SituationTag
from .cache import one_revision
from .validation import validate_rulebase

DEFAULT_RULEBASE = Path(__file__).parent.parent / "data" / "rulebase.yaml"


# libyaml's loader when present: the rule base parses about ten times faster
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_rulebase(path: Path = DEFAULT_RULEBASE) -> dict[str, Any]:
    data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    validate_rulebase(data)
    return data


def step_scope(category: dict[str, Any], step: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A step's ``items`` and ``except_items`` as item names: a name of the category's
    ``item_groups`` stands for the items of that group."""
    groups = category.get("item_groups") or {}

    def expand(names: list[str]) -> list[str]:
        out: list[str] = []
        for name in names or []:
            out += groups.get(name, [name])
        return list(dict.fromkeys(out))

    return expand(step.get("items") or []), expand(step.get("except_items") or [])


def names_of(entry: dict[str, Any]) -> list[str]:
    """An item's or exclusion's aliases followed by its brand names, without repeats.

    Brands are kept apart in the YAML (a brand names a product, an alias the thing itself) and
    stored with the aliases: the matcher reads both the same way. A brand whose usual container
    varies (a cola in a can or a PET bottle) is listed on each of those items, so the brand alone
    is an honest "which one?" and "<brand> 캔" names the container.
    """
    return list(dict.fromkeys([*(entry.get("aliases") or []), *(entry.get("brands") or [])]))


def ordered_steps(category: dict[str, Any], tags: dict[str, SituationTag]) -> list[DisposalStep]:
    """A category's steps in the order a person follows them.

    A conditional step goes in front of the common step numbered by its ``before``, or right
    after the one its ``replaces`` names (that one then gives way to it when the tag is
    present), or after all common steps when it says neither.
    """
    conditional = category.get("conditional_steps") or []

    def scoped(step: dict[str, Any], **fields: Any) -> DisposalStep:
        items, except_items = step_scope(category, step)
        return DisposalStep(
            text_ko=step["ko"],
            text_en=step["en"],
            items=items,
            except_items=except_items,
            **fields,
        )

    def tagged(step: dict[str, Any]) -> DisposalStep:
        return scoped(step, tag=tags[step["tag"]])

    ordered = []
    for number, step in enumerate(category.get("steps") or [], start=1):
        ordered += [tagged(c) for c in conditional if c.get("before") == number]
        replacements = [c for c in conditional if c.get("replaces") == number]
        unless_tag = tags[replacements[0]["tag"]] if replacements else None
        ordered.append(scoped(step, unless_tag=unless_tag))
        ordered += [tagged(c) for c in replacements]
    return ordered + [tagged(c) for c in conditional if not {"before", "replaces"} & c.keys()]


@transaction.atomic
def load_rulebase(data: dict[str, Any]) -> dict[str, int]:
    """Replace the rule base with ``data``. Scans keep their stored rule snapshots.

    The whole load makes one new revision: processes re-read the rule base once.
    """
    validate_rulebase(data)
    with one_revision():
        return _replace_rulebase(data)


def _replace_rulebase(data: dict[str, Any]) -> dict[str, int]:
    DisposalStep.objects.all().delete()
    Exclusion.objects.all().delete()
    Item.objects.all().delete()
    tags = {}
    keep_tags = []
    for t in data["situation_tags"]:
        tag, _ = SituationTag.objects.update_or_create(
            code=t["code"],
            defaults={
                "group": t.get("group", ""),
                "name_ko": t["ko"],
                "name_en": t["en"],
                "fix_ko": t.get("fix_ko") or "",
                "fix_en": t.get("fix_en") or "",
                "triggers": list(t.get("triggers") or []),
                "negations": list(t.get("negations") or []),
            },
        )
        tags[tag.code] = tag
        keep_tags.append(tag.code)
    SituationTag.objects.exclude(code__in=keep_tags).delete()

    categories = {}
    for position, c in enumerate(data["categories"]):
        cat, _ = Category.objects.update_or_create(
            code=c["code"],
            defaults={
                "kind": c["kind"],
                "major_ko": c["major_ko"],
                "major_en": c["major_en"],
                "middle_ko": c["middle_ko"],
                "middle_en": c["middle_en"],
                "summary_ko": c.get("summary_ko", ""),
                "summary_en": c.get("summary_en", ""),
                "position": position,
                "reroutes": list(c.get("reroutes") or []),
            },
        )
        categories[cat.code] = cat
    Category.objects.exclude(code__in=categories).update(position=999)

    steps, items, exclusions = [], [], []
    for c in data["categories"]:
        cat = categories[c["code"]]
        for position, step in enumerate(ordered_steps(c, tags)):
            step.category, step.position = cat, position
            steps.append(step)
        for it in c.get("items") or []:
            items.append(
                Item(
                    category=cat,
                    name_ko=it["ko"],
                    name_en=it["en"],
                    aliases=names_of(it),
                    reroutes=list(it.get("reroutes") or []),
                    conditions=list(it.get("conditions") or []),
                )
            )
        for e in c.get("exclusions") or []:
            exclusions.append(
                Exclusion(
                    category=cat,
                    name_ko=e["ko"],
                    name_en=e["en"],
                    aliases=names_of(e),
                    goes_to=categories[e["goes_to"]],
                    note_ko=e.get("note_ko", ""),
                    note_en=e.get("note_en", ""),
                    reroutes=list(e.get("reroutes") or []),
                    conditions=list(e.get("conditions") or []),
                )
            )
    DisposalStep.objects.bulk_create(steps)
    Item.objects.bulk_create(items)
    Exclusion.objects.bulk_create(exclusions)
    return {
        "categories": len(categories),
        "situation_tags": len(tags),
        "steps": len(steps),
        "items": len(items),
        "exclusions": len(exclusions),
        "brands": sum(
            len(entry.get("brands") or [])
            for c in data["categories"]
            for entry in [*(c.get("items") or []), *(c.get("exclusions") or [])]
        ),
    }

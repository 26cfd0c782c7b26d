"""Loading the rule base (taxonomy, situation tags, steps, exclusions) from YAML into the DB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from .models import Category, DisposalStep, Exclusion, Item, SituationTag
from .rulebase_cache import one_revision

DEFAULT_RULEBASE = Path(__file__).parent / "data" / "rulebase.yaml"


class RuleBaseError(ValueError):
    pass


# libyaml's loader when present: the rule base parses about ten times faster
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_rulebase(path: Path = DEFAULT_RULEBASE) -> dict[str, Any]:
    data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)
    validate_rulebase(data)
    return data


def validate_rulebase(data: dict[str, Any]) -> None:
    """Reject a rule base whose references do not resolve, before anything is written."""
    tags = {t["code"] for t in data.get("situation_tags", [])}
    codes = [c["code"] for c in data.get("categories", [])]
    if len(codes) != len(set(codes)):
        raise RuleBaseError("duplicate category codes")
    problems = []
    for cat in data["categories"]:
        for step in cat.get("conditional_steps") or []:
            if step["tag"] not in tags:
                problems.append(f"{cat['code']}: unknown tag {step['tag']!r}")
        for excl in cat.get("exclusions") or []:
            if excl["goes_to"] not in codes:
                problems.append(
                    f"{cat['code']}: exclusion {excl['ko']!r} goes to unknown {excl['goes_to']!r}"
                )
    if problems:
        raise RuleBaseError("; ".join(problems))


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
            },
        )
        categories[cat.code] = cat
    Category.objects.exclude(code__in=categories).update(position=999)

    steps, items, exclusions = [], [], []
    for c in data["categories"]:
        cat = categories[c["code"]]
        for i, s in enumerate(c.get("steps") or []):
            steps.append(DisposalStep(category=cat, position=i, text_ko=s["ko"], text_en=s["en"]))
        offset = len(c.get("steps") or [])
        for i, s in enumerate(c.get("conditional_steps") or []):
            steps.append(
                DisposalStep(
                    category=cat,
                    position=offset + i,
                    tag=tags[s["tag"]],
                    text_ko=s["ko"],
                    text_en=s["en"],
                )
            )
        for it in c.get("items") or []:
            items.append(
                Item(
                    category=cat,
                    name_ko=it["ko"],
                    name_en=it["en"],
                    aliases=list(it.get("aliases") or []),
                )
            )
        for e in c.get("exclusions") or []:
            exclusions.append(
                Exclusion(
                    category=cat,
                    name_ko=e["ko"],
                    name_en=e["en"],
                    aliases=list(e.get("aliases") or []),
                    goes_to=categories[e["goes_to"]],
                    note_ko=e.get("note_ko", ""),
                    note_en=e.get("note_en", ""),
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
    }

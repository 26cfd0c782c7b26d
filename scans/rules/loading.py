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
    data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (a SafeLoader)
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
        common = len(cat.get("steps") or [])
        replaced: set[int] = set()
        for step in cat.get("conditional_steps") or []:
            if step["tag"] not in tags:
                problems.append(f"{cat['code']}: unknown tag {step['tag']!r}")
            places = [key for key in ("before", "replaces") if key in step]
            if len(places) > 1:
                problems.append(f"{cat['code']}: step {step['ko']!r} has both before and replaces")
                continue
            if not places:
                continue
            number = step[places[0]]
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= common:
                problems.append(
                    f"{cat['code']}: step {step['ko']!r}: {places[0]} {number!r} is not "
                    f"the number of one of its {common} steps"
                )
            elif places[0] == "replaces":
                if number in replaced:
                    problems.append(f"{cat['code']}: step {number} is replaced twice")
                replaced.add(number)
        for entry in [*(cat.get("items") or []), *(cat.get("exclusions") or [])]:
            for field in ("aliases", "brands"):
                names = entry.get(field)
                if names is None:
                    continue
                if not isinstance(names, list) or not all(
                    isinstance(name, str) and name.strip() for name in names
                ):
                    problems.append(
                        f"{cat['code']}: {entry['ko']!r}: {field} must be a list of names"
                    )
        for excl in cat.get("exclusions") or []:
            if excl["goes_to"] not in codes:
                problems.append(
                    f"{cat['code']}: exclusion {excl['ko']!r} goes to unknown {excl['goes_to']!r}"
                )
        problems += _reroute_problems(cat["code"], cat.get("reroutes"), tags, codes)
        for item in cat.get("items") or []:
            problems += _reroute_problems(
                f"{cat['code']}: item {item.get('ko')!r}", item.get("reroutes"), tags, codes
            )
        for excl in cat.get("exclusions") or []:
            problems += _reroute_problems(
                f"{excl.get('goes_to')}: exclusion {excl.get('ko')!r}",
                excl.get("reroutes"),
                tags,
                codes,
            )
    problems += _reroute_cycles(data["categories"])
    problems += _item_scope_problems(data["categories"])
    problems += _condition_problems(data["categories"], tags, codes)
    if problems:
        raise RuleBaseError("; ".join(problems))


def _reroute_problems(where: str, reroutes: Any, tags: set[str], codes: list[str]) -> list[str]:
    """A reroute names a known tag (``tag``: the state is there; ``absent``: the hint says it is
    not, 빈 통) and another known category, once per tag."""
    if reroutes is None:
        return []
    if not isinstance(reroutes, list):
        return [f"{where}: reroutes must be a list"]
    problems, seen = [], set()
    own = where.split(":")[0]
    for reroute in reroutes:
        keys = set(reroute) if isinstance(reroute, dict) else set()
        if len(keys & {"tag", "absent"}) != 1 or "goes_to" not in keys:
            problems.append(f"{where}: a reroute needs a tag (or absent) and goes_to: {reroute!r}")
            continue
        unknown = keys - {"tag", "absent", "goes_to", "note_ko", "note_en"}
        if unknown:
            problems.append(f"{where}: reroute has unknown field(s) {', '.join(sorted(unknown))}")
        state = reroute.get("tag") or reroute.get("absent")
        if state not in tags:
            problems.append(f"{where}: reroute on unknown tag {state!r}")
        if reroute["goes_to"] not in codes:
            problems.append(f"{where}: reroute goes to unknown {reroute['goes_to']!r}")
        elif reroute["goes_to"] == own:
            problems.append(f"{where}: reroute on {state!r} goes to its own category")
        key = ("absent" in reroute, state)
        if key in seen:
            problems.append(f"{where}: two reroutes on {state!r}")
        seen.add(key)
    return problems


def _reroute_cycles(categories: list[dict[str, Any]]) -> list[str]:
    """Category reroutes may chain (a → b on one tag, b → c on another) but never loop."""
    edges: dict[str, set[str]] = {}
    for cat in categories:
        for reroute in cat.get("reroutes") or []:
            if isinstance(reroute, dict) and "goes_to" in reroute:
                edges.setdefault(cat["code"], set()).add(reroute["goes_to"])

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    return [f"{code}: reroutes lead back to {code}" for code in edges if reaches(code, code, set())]


def item_names(categories: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The item names a step of each category may be limited to, by category code: its items,
    its exclusions (a state can bring one back: an empty paint tin is a can), and the
    exclusions of other categories that send things to it (부탄가스 listed under general waste
    goes to metal)."""
    names: dict[str, set[str]] = {c["code"]: set() for c in categories}
    for cat in categories:
        own = names[cat["code"]]
        own.update(str(item.get("ko")) for item in cat.get("items") or [])
        for excl in cat.get("exclusions") or []:
            own.add(str(excl.get("ko")))
            if excl.get("goes_to") in names:
                names[excl["goes_to"]].add(str(excl.get("ko")))
    return names


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


def _item_scope_problems(categories: list[dict[str, Any]]) -> list[str]:
    """``items:`` / ``except_items:`` of a step name items the category knows (or its
    ``item_groups``), and a step has at most one of the two."""
    known = item_names(categories)
    problems = []
    for cat in categories:
        code = cat["code"]
        groups = cat.get("item_groups") or {}
        if not isinstance(groups, dict):
            problems.append(f"{code}: item_groups must map a group name to item names")
            groups = {}
        for group, members in groups.items():
            if not isinstance(members, list) or not members:
                problems.append(f"{code}: item group {group!r} must list item names")
                continue
            for name in members:
                if name not in known[code]:
                    problems.append(f"{code}: item group {group!r} names unknown item {name!r}")
        for step in [*(cat.get("steps") or []), *(cat.get("conditional_steps") or [])]:
            scopes = [key for key in ("items", "except_items") if key in step]
            if len(scopes) > 1:
                problems.append(f"{code}: step {step.get('ko')!r} has both items and except_items")
            for key in scopes:
                names = step[key]
                if not isinstance(names, list) or not names:
                    problems.append(f"{code}: step {step.get('ko')!r}: {key} must list items")
                    continue
                for name in names:
                    if name not in groups and name not in known[code]:
                        problems.append(
                            f"{code}: step {step.get('ko')!r}: {key} names unknown item {name!r}"
                        )
    return problems


CONDITION_FIELDS = {"when_ko", "when_en", "goes_to", "tag", "absent"}


def _condition_problems(
    categories: list[dict[str, Any]], tags: set[str], codes: list[str]
) -> list[str]:
    """An item's (or exclusion's) ``conditions:``: two or more, each saying when
    (``when_ko``, ``when_en``) it goes to which known category (``goes_to``), optionally the
    state that settles it (``tag``: present; ``absent``: the hint says it is not there), the
    bins not all the same, and one of them the bin the item is listed for."""
    problems = []
    for cat in categories:
        entries = [(cat["code"], item) for item in cat.get("items") or []] + [
            (excl.get("goes_to"), excl) for excl in cat.get("exclusions") or []
        ]
        for home, entry in entries:
            conditions = entry.get("conditions")
            if conditions is None:
                continue
            where = f"{cat['code']}: {entry.get('ko')!r}"
            if not isinstance(conditions, list) or len(conditions) < 2:
                problems.append(f"{where}: conditions must list two or more bins")
                continue
            for condition in conditions:
                if not isinstance(condition, dict):
                    problems.append(f"{where}: a condition must be a mapping: {condition!r}")
                    continue
                unknown = set(condition) - CONDITION_FIELDS
                if unknown:
                    problems.append(f"{where}: condition has unknown field(s) {sorted(unknown)}")
                for key in ("when_ko", "when_en", "goes_to"):
                    if not condition.get(key):
                        problems.append(f"{where}: a condition needs {key}")
                if condition.get("goes_to") and condition["goes_to"] not in codes:
                    problems.append(f"{where}: condition goes to unknown {condition['goes_to']!r}")
                if "tag" in condition and "absent" in condition:
                    problems.append(f"{where}: a condition has a tag or absent, not both")
                state = condition.get("tag") or condition.get("absent")
                if state is not None and state not in tags:
                    problems.append(f"{where}: condition on unknown tag {state!r}")
            bins = [c.get("goes_to") for c in conditions if isinstance(c, dict)]
            if len(set(bins)) < 2:
                problems.append(f"{where}: conditions must name at least two different bins")
            if home not in bins:
                problems.append(f"{where}: no condition names its own bin {home!r}")
    return problems


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

"""Checking a rule base before anything is written: every reference resolves (tags, categories,
item names), reroutes do not loop, steps are placed and scoped consistently."""

from __future__ import annotations

from typing import Any


class RuleBaseError(ValueError):
    pass


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

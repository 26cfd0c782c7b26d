"""The evaluation set of bench/guidance_eval.py (bench/data/guidance_cases.yaml): its schema,
the validator that refuses a file which would measure nothing trustworthy, the dev/holdout
split and the smoke subset. Shared by the benchmark and tests/bench/test_guidance_cases.py."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_CASES = ROOT / "bench" / "data" / "guidance_cases.yaml"
STYLES = (
    "everyday",
    "colloquial",
    "brand",
    "state",
    "typo_spacing",
    "english",
    "mixed",
    "vague",
    "multi_item",
    "injection",
)
NOT_SURE_STYLES = ("vague", "multi_item", "injection")
LANGS = ("ko", "en", "mixed")
SPLITS = ("dev", "holdout")
HOLDOUT_PERCENT = 30
REQUIRED_FIELDS = ("id", "split", "hint", "lang", "style", "expect")
OPTIONAL_FIELDS = ("choices", "fix", "note")
HINT_MAX_CHARS = 200  # Scan.hint
MIN_CASES, MIN_NOT_SURE, MIN_PER_CATEGORY = 400, 40, 12
NOT_SURE = "(not sure)"


# --- the data file --------------------------------------------------------------------------
class CaseFileError(ValueError):
    """The evaluation set is not usable; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"the evaluation set has {len(problems)} problem(s):\n{shown}{more}")


def expected_split(case_id: str) -> str:
    """dev or holdout, from the id alone: sha256(id) mod 100 < 30 is held out."""
    digest = int(hashlib.sha256(case_id.encode("utf-8")).hexdigest(), 16)
    return "holdout" if digest % 100 < HOLDOUT_PERCENT else "dev"


def _code_list(case: dict, field: str, known: Collection[str], what: str) -> list[str]:
    value = case.get(field, [])
    where = f"case {case.get('id')!r}: {field}"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return [f"{where} must be a list of {what} codes"]
    problems = [f"{where}: unknown {what} code {v!r}" for v in value if v not in known]
    if len(set(value)) != len(value):
        problems.append(f"{where} lists a code twice")
    return problems


def validate_cases(
    cases: Any,
    *,
    categories: Collection[str],
    tags: Collection[str],
    fix_tags: Collection[str] | None = None,
    min_cases: int = MIN_CASES,
    min_not_sure: int = MIN_NOT_SURE,
    min_per_category: int = MIN_PER_CATEGORY,
) -> None:
    """Raise CaseFileError listing every problem of the evaluation set.

    ``categories`` and ``tags`` are the rule base's codes; ``fix_tags``, the tags that have a
    fix sentence (a ``fix`` naming any other tag could never be checked).
    """
    if not isinstance(cases, list) or not cases:
        raise CaseFileError(["'cases' must be a non-empty list"])
    problems: list[str] = []
    seen: Counter[str] = Counter()
    for index, case in enumerate(cases):
        if not isinstance(case, dict):
            problems.append(f"case #{index + 1} is not a mapping")
            continue
        case_id = case.get("id")
        label = f"case {case_id!r}" if case_id else f"case #{index + 1}"
        missing = [f for f in REQUIRED_FIELDS if f not in case]
        if missing:
            problems.append(f"{label}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(case) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
        if unknown:
            problems.append(f"{label}: unknown field(s) {', '.join(unknown)}")
        if case_id is not None:
            if not isinstance(case_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", case_id):
                problems.append(f"{label}: id must be lowercase letters, digits, - or _")
            else:
                seen[case_id] += 1
                split = case.get("split")
                if split is not None and split != expected_split(case_id):
                    problems.append(
                        f"{label}: split is {split!r}, but sha256(id) puts it in "
                        f"{expected_split(case_id)!r} (the split is not chosen by hand)"
                    )
        hint = case.get("hint")
        if "hint" in case:
            if not isinstance(hint, str) or not hint.strip():
                problems.append(f"{label}: hint must be non-empty text")
            elif len(hint.strip()) > HINT_MAX_CHARS:
                problems.append(f"{label}: hint is longer than {HINT_MAX_CHARS} characters")
            elif any(unicodedata.category(ch) == "Cc" for ch in hint):
                problems.append(f"{label}: hint contains control characters")
        if "lang" in case and case["lang"] not in LANGS:
            problems.append(f"{label}: lang must be one of {', '.join(LANGS)}")
        style = case.get("style")
        if "style" in case and style not in STYLES:
            problems.append(f"{label}: style must be one of {', '.join(STYLES)}")
        if style == "english" and case.get("lang") != "en":
            problems.append(f"{label}: an english case has lang en")
        if style == "mixed" and case.get("lang") != "mixed":
            problems.append(f"{label}: a mixed case has lang mixed")
        if "expect" in case:
            problems += _code_list(case, "expect", categories, "category")
        expect = case.get("expect")
        if "choices" in case:
            problems += _code_list(case, "choices", categories, "category")
            if expect:
                problems.append(f"{label}: choices belong to not-sure cases (expect: [])")
        if expect == [] and style not in NOT_SURE_STYLES:
            problems.append(f"{label}: a not-sure case has style {', '.join(NOT_SURE_STYLES)}")
        if "fix" in case:
            fix = case["fix"]
            if not isinstance(fix, list) or not fix or not all(isinstance(f, str) for f in fix):
                problems.append(f"{label}: fix must be a non-empty list of situation tag codes")
            else:
                named = [t for entry in fix for t in entry.split("|")]
                problems += [f"{label}: fix: unknown situation tag code {t!r}" for t in named
                             if t not in tags]  # fmt: skip
                if fix_tags is not None:
                    problems += [
                        f"{label}: fix: tag {t!r} has no fix sentence in the rule base"
                        for t in named
                        if t in tags and t not in fix_tags
                    ]
        if "split" in case and case["split"] not in SPLITS:
            problems.append(f"{label}: split must be dev or holdout")
    problems += [f"duplicate id {case_id!r} ({n} cases)" for case_id, n in seen.items() if n > 1]
    valid = [c for c in cases if isinstance(c, dict) and isinstance(c.get("expect"), list)]
    if len(cases) < min_cases:
        problems.append(f"{len(cases)} cases; at least {min_cases} are needed")
    not_sure = sum(1 for c in valid if not c["expect"])
    if not_sure < min_not_sure:
        problems.append(f"{not_sure} not-sure cases (expect: []); at least {min_not_sure}")
    per_category = Counter(c["expect"][0] for c in valid if c["expect"])
    problems += [
        f"category {code!r} is the main bin of {per_category[code]} case(s); "
        f"at least {min_per_category} are needed"
        for code in categories
        if per_category[code] < min_per_category
    ]
    if problems:
        raise CaseFileError(problems)


def read_cases(path: Path) -> list[dict]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CaseFileError([f"cannot read {path}: {exc}"]) from exc
    if not isinstance(data, dict) or "cases" not in data:
        raise CaseFileError([f"{path}: a mapping with a 'cases' list is expected"])
    return data["cases"]


def smoke_subset(cases: list[dict], per_category: int = 2, not_sure: int = 2) -> list[dict]:
    """A small deterministic subset: the first ``per_category`` cases of each main bin and the
    first ``not_sure`` not-sure cases of each style, in file order."""
    taken: Counter[str] = Counter()
    subset = []
    for case in cases:
        key = case["expect"][0] if case["expect"] else f"{NOT_SURE}:{case['style']}"
        if taken[key] < (per_category if case["expect"] else not_sure):
            taken[key] += 1
            subset.append(case)
    return subset

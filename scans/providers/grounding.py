"""The grounding check of a written answer: nothing the user reads may leave the matched rules.

A model writes the guidance from the matched rules (scans.rules.match_rules), and is told
to add nothing. This module checks that it did not, line by line, and puts the rule text in
place of what fails. The comparison is by character bigrams of the normalized text (lowercase,
NFKC, no spaces or punctuation; ``scans.rules.compact``), which works the same for Korean,
where a shortened sentence keeps most syllable pairs of the original, and for English.

- **steps**: each written step must be *grounded*: at least GROUNDED_SHARE of its bigrams occur
  in one rule text (a step, a tag's fix or the summary, in Korean or English), or in two of
  them together (a step that merges two rule steps). One step that is not grounded ("burn it in
  the yard") means the model left the rules: the written steps are replaced by the rule steps,
  verbatim in the answer's language (a list patched in place could lose a step or the order).
- **insufficiencies** (what to fix): each line must be grounded in the fixes of the detected
  tags; a line that is not is dropped, and a fix that no kept line says is added as written.
- **user_answer** (the headline): it may name no bin other than the matched category, the bins
  its exclusions send items to, and bins its own rule texts name. Bin names are the rule
  base's category names (Korean of three syllables or more, English of six letters or more,
  so that "종이" in "종이 라벨" or "paper" in "paper label" are not read as bins) and a few
  everyday ones (일반쓰레기, 종량제봉투, 음식물쓰레기), found leftmost-longest so that 불연성
  종량제 봉투 is one bin, not two. A headline that names another bin, or is empty, is replaced
  by one built from the rules (a headline that names no bin at all is kept: "put it in the
  clear-PET bin" says the right thing in words of its own). A headline that contradicts the rules in other words
  ("it is not recyclable") is not caught: the bin names are the check.

Every change is reported in ``Answer.checks`` for staff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..rules import compact
from .bins import _PARENTHESES, bins_named, directed_bins
from .wording import conditions_sentence, direction

GROUNDED_SHARE = 0.6  # of a written line's bigrams found in its rule text(s)
# Part of the answer cache key: a cached answer was checked by this version of the check.
GROUNDING_VERSION = "grounding-2"
_LIST_MARKER = re.compile(r"^\s*(?:\d+\s*[.)]|[-•*·])\s*")
_SENTENCE_END = re.compile(r"[.!?。\n]+")
# Sentence-final polite endings, longest first; "헹궈 주세요" says "헹궈", "버려요" says "버려".
_ENDING = re.compile(
    r"\s*(?:주십시오|주세요|하세요|합니다|습니다|입니다|니다|세요|해요|어요|아요|여요|예요|에요|요)\s*$"
)


def bigrams(text: str) -> frozenset[str]:
    """The character bigrams of what ``text`` says: its sentences without their polite endings
    (주세요, 해요 …, shared by nearly every rule text, so "태워 주세요" would half match any
    of them), normalized (``compact``)."""
    said = " ".join(_ENDING.sub("", sentence) for sentence in _SENTENCE_END.split(text))
    said = compact(said)
    return frozenset(said[i : i + 2] for i in range(len(said) - 1))


def clean_line(text: str) -> str:
    """One line as shown: spaces folded, a list marker the model added taken off."""
    return _LIST_MARKER.sub("", " ".join(str(text).split()))


def grounding(line: str, texts: list[frozenset[str]]) -> tuple[int, ...] | None:
    """The indexes of the one or two rule texts ``line`` is grounded in, or None."""
    grams = bigrams(line)
    if not grams or not texts:
        return None
    need = GROUNDED_SHARE * len(grams)
    best = max(range(len(texts)), key=lambda i: len(grams & texts[i]))
    if len(grams & texts[best]) >= need:
        return (best,)
    rest = grams - texts[best]
    second = max(range(len(texts)), key=lambda i: len(rest & texts[i]))
    if len(grams) - len(rest - texts[second]) >= need:
        return (best, second)
    return None


def _text(entry: dict[str, Any], language: str) -> str:
    return entry.get(language) or entry.get("ko") or entry.get("en") or ""


# --- the check ------------------------------------------------------------------------------
@dataclass
class CheckedAnswer:
    disposal_steps: list[str]
    insufficiencies: list[str]
    user_answer: str
    checks: dict[str, Any]


def rule_headline(rules: dict[str, Any], language: str) -> str:
    """The headline the rules themselves give: every condition with its bin when the item's
    bin depends on one, else the bin; then the category's summary."""
    if language == "en":
        first = f"This goes with {_PARENTHESES.sub('', rules.get('middle_en') or '').strip()}."
        summary = rules.get("summary_en") or ""
    else:
        first = f"{direction(rules.get('middle_ko') or '')} 배출해요."
        summary = rules.get("summary_ko") or ""
    first = conditions_sentence(rules, language) or first
    return f"{first} {summary}".strip()


def consistent_answer(
    written: dict[str, Any], rules: dict[str, Any], language: str, names: dict[str, str]
) -> CheckedAnswer:
    """``written`` with one bin throughout, the matched category's (every answer, any
    provider, passes here): a headline that sends the item to another bin
    (``directed_bins``), or that leaves out a condition's bin the item depends on, is
    replaced by the rules' own; a step or a what-to-fix line that sends it elsewhere is
    left out. What changed is reported in ``checks`` (``consistency``)."""
    code = rules.get("category_code") or ""
    headline = " ".join(str(written.get("user_answer") or "").split())
    steps = [str(line) for line in written.get("disposal_steps") or []]
    fixes = [str(line) for line in written.get("insufficiencies") or []]
    changed: dict[str, Any] = {}
    said = compact(headline)
    unsaid = [
        c
        for c in rules.get("conditions") or []
        if not any(
            compact(_PARENTHESES.sub("", c.get(key) or "")) in said
            for key in ("goes_to_ko", "goes_to_en")
        )
    ]
    if directed_bins(headline, names) - {code} or unsaid:
        changed["user_answer"] = {"written": headline}
        headline = rule_headline(rules, language)
    contradicting = [line for line in [*steps, *fixes] if directed_bins(line, names) - {code}]
    if contradicting:
        changed["dropped"] = contradicting
        steps = [line for line in steps if line not in contradicting]
        fixes = [line for line in fixes if line not in contradicting]
    return CheckedAnswer(steps, fixes, headline, {"consistency": changed} if changed else {})


def check_answer(
    written: dict[str, Any], rules: dict[str, Any], language: str, names: dict[str, str]
) -> CheckedAnswer:
    """``written`` (disposal_steps, insufficiencies, user_answer) checked against ``rules``."""
    steps = [s for s in rules.get("steps") or [] if s.get("ko") or s.get("en")]
    fixes = [f for f in rules.get("fixes") or [] if f.get("ko") or f.get("en")]
    summary = {"ko": rules.get("summary_ko") or "", "en": rules.get("summary_en") or ""}
    checks: dict[str, Any] = {}

    # steps: grounded in a step, a fix or the summary (either language), else the rule steps
    texts = _by_language([*steps, *fixes, summary])
    lines = [line for line in map(clean_line, written.get("disposal_steps") or []) if line]
    ungrounded = [line for line in lines if grounding(line, texts) is None]
    if lines and not ungrounded:
        disposal_steps = lines
    else:
        disposal_steps = [_text(s, language) for s in steps] or (
            [_text(summary, language)] if _text(summary, language) else []
        )
        checks["steps"] = {
            "replaced_by": "rules",
            "ungrounded": ungrounded,
            "reason": "not grounded in the rules" if ungrounded else "no steps written",
        }

    # what to fix: lines grounded in a fix; every fix said once
    fix_texts = _by_language(fixes)
    kept, dropped, said = [], [], set()
    for line in map(clean_line, written.get("insufficiencies") or []):
        if not line:
            continue
        found = grounding(line, fix_texts)
        if found is None:
            dropped.append(line)
        else:
            kept.append(line)
            said.update(index % len(fixes) for index in found)
    added = [_text(f, language) for i, f in enumerate(fixes) if i not in said]
    if dropped or added:
        checks["insufficiencies"] = {"dropped": dropped, "added": added}

    # the headline: no bin but this category's (and those its rules name)
    headline = " ".join(str(written.get("user_answer") or "").split())
    allowed = {rules.get("category_code")}
    allowed.update(ex.get("goes_to") for ex in rules.get("exclusions") or [])
    rule_texts = " ".join(
        text
        for entry in [*steps, *fixes, summary, *_notes(rules)]
        for text in (entry.get("ko"), entry.get("en"))
        if text
    )
    allowed |= bins_named(rule_texts, names)
    named = bins_named(headline, names)
    if not headline or (named - allowed):
        checks["user_answer"] = {
            "replaced_by": "rules",
            "written": headline,
            "bins_named": sorted(named - allowed),
        }
        headline = rule_headline(rules, language)
    # one bin throughout, as for every answer: the same check as the offline provider's
    if any(directed_bins(line, names) - {rules.get("category_code")} for line in disposal_steps):
        checks.setdefault("steps", {"replaced_by": "rules", "reason": "names another bin"})
        disposal_steps = [_text(s, language) for s in steps]
    consistent = consistent_answer(
        {
            "disposal_steps": disposal_steps,
            "insufficiencies": kept + added,
            "user_answer": headline,
        },
        rules,
        language,
        names,
    )
    checks.update(consistent.checks)
    return CheckedAnswer(
        consistent.disposal_steps,
        consistent.insufficiencies,
        consistent.user_answer,
        checks,
    )


def _by_language(entries: list[dict[str, Any]]) -> list[frozenset[str]]:
    """The bigrams of each entry's Korean text, then of each one's English text: each language
    on its own, so a line never passes on the syllables of one and the letters of the other.
    Index ``i % len(entries)`` is the entry."""
    return [bigrams(e.get("ko") or "") for e in entries] + [
        bigrams(e.get("en") or "") for e in entries
    ]


def _notes(rules: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"ko": ex.get("note_ko") or "", "en": ex.get("note_en") or ""}
        for ex in rules.get("exclusions") or []
    ]

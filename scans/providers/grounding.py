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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..rules import compact

GROUNDED_SHARE = 0.6  # of a written line's bigrams found in its rule text(s)
# Part of the answer cache key: a cached answer was checked by this version of the check.
GROUNDING_VERSION = "grounding-2"
# Everyday names of a bin that are not in the rule base's category names, by category code.
EVERYDAY_BIN_NAMES = {
    "general": ("일반쓰레기", "일반 쓰레기", "종량제봉투", "종량제 봉투", "일반 종량제"),
    "food": ("음식물쓰레기", "음식물 쓰레기"),
    "pet_clear": ("투명 페트병 전용", "투명 페트병 수거함", "clear-PET bin"),
    "glass": ("유리병 수거함", "glass bin", "bottle bin"),
    "battery": ("전지 수거함", "전지 전용 수거함", "battery bin"),
    "lighting": ("조명 수거함", "조명 전용 수거함", "lamp bin"),
    "noncombustible": ("불연성 종량제 마대", "non-combustible sack"),
}
_LIST_MARKER = re.compile(r"^\s*(?:\d+\s*[.)]|[-•*·])\s*")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_PARENTHESES = re.compile(r"\(([^)]*)\)")
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


# --- bin names ------------------------------------------------------------------------------
def _names(category: Any) -> Iterable[str]:
    for name in (category.middle_ko, category.major_ko):
        yield name
        if name.endswith("폐기물"):
            yield name.removesuffix("폐기물")
    for name in (category.middle_en, category.major_en):
        yield _PARENTHESES.sub("", name)
        yield from _PARENTHESES.findall(name)


def _long_enough(name: str) -> bool:
    return len(name) >= 3 if _HANGUL.search(name) else len(name) >= 6


def bin_names(categories: Iterable[Any]) -> dict[str, str]:
    """Compact bin name → category code, from the rule base's categories.

    A name two categories share (재활용폐기물, "Recyclables") names no bin and is left out.
    """
    codes: dict[str, set[str]] = {}
    categories = list(categories)
    known = {category.code for category in categories}
    for category in categories:
        for name in _names(category):
            key = compact(name)
            if key and _long_enough(key):
                codes.setdefault(key, set()).add(category.code)
    for code, names in EVERYDAY_BIN_NAMES.items():
        if code in known:
            for name in names:
                codes.setdefault(compact(name), set()).add(code)
    return {name: next(iter(found)) for name, found in codes.items() if len(found) == 1}


def bins_named(text: str, names: dict[str, str]) -> set[str]:
    """The category codes whose bin ``text`` names (leftmost-longest, no overlaps)."""
    text = compact(text)
    by_first: dict[str, list[str]] = {}
    for name in sorted(names, key=len, reverse=True):
        by_first.setdefault(name[0], []).append(name)
    found: set[str] = set()
    position = 0
    while position < len(text):
        match = next(
            (n for n in by_first.get(text[position], ()) if text.startswith(n, position)), None
        )
        if match:
            found.add(names[match])
            position += len(match)
        else:
            position += 1
    return found


# --- consistency: the bins a text sends the item to -----------------------------------------
# A text may name a bin other than the answer's without contradicting it in exactly four ways,
# judged per mention of a bin name (``bin_names``; a Latin name only as whole words) within its
# sentence (split at . ! ? ; and line ends) and clause (the sentence split at commas):
# 1. **conditional**: a condition comes before the mention in its sentence, or after it in its
#    clause. Korean: a word ending in the conditional 면 (않으면, 있으면, 빈 통이면; not a noun
#    such as 라면 or 표면), or 경우, or 따라 ("depending on"); English: if, unless, where, when,
#    otherwise, depending, whether. "씻어도 지워지지 않으면 일반 종량제 봉투에", "종량제 봉투에
#    들어가지 않으면 대형폐기물로", "if it won't wash off, put it in general waste";
# 2. **negated**: Korean: the rest of its clause says it is not that bin or not to put, mix or
#    throw it there (아니, 넣지 말/마/않, 섞지 말, 섞이지 않 …): "유리병 수거함이 아니라",
#    "일반 쓰레기나 재활용품에 섞지 마세요"; English: its clause (also split at "and", "then")
#    says not, never, n't, no, out of, instead of or rather than before it;
# 3. **a part taken off**: the text before it (Korean: in its clause; English: in its sentence)
#    says to take a part off (떼어, 빼서, 분리해 …; remove, take off, peel …): "빨대는 떼어 일반
#    종량제 봉투에", "remove the pump head and bin it as general waste": the part's bin;
# 4. **the subject**: it is what the sentence is about, not where it goes: a Korean topic
#    (followed by 은/는), or followed by a colon, or in English starting its sentence or
#    followed by is / are: "깨진 유리병은 …", "Food-soiled plastic film: put it out with …".
# Any other mention sends the item to that bin (``directed_bins``).
_SENTENCE = re.compile(r"[^.!?;。\n]+")
_CONDITION_KO = re.compile(r"(?<![가-힣])([가-힣]*면(?=[\s,)]|$)|[가-힣]*경우[가-힣]*|따라)")
# Korean words ending in 면 that are nouns, not the conditional ending
_NOUNS_IN_MYEON = frozenset({"면", "라면", "표면", "측면", "양면", "전면", "단면", "화면", "냉면"})
_CONDITION_EN = re.compile(r"\b(?:if|unless|where|when|otherwise|depending|whether)\b", re.I)
_NEGATED_KO = re.compile(r"아니|(?:넣|섞|버리|내놓)지\s*(?:말|마|않)|섞이지\s*않")
_NEGATED_EN = re.compile(
    r"\b(?:not|never|no|out\s+of|instead\s+of|rather\s+than)\b|n't\b|n’t\b", re.I
)
_CLAUSE_EN = re.compile(r",|\band\b|\bthen\b", re.I)
_DETACH_KO = re.compile(r"(?:떼어|떼고|떼서|떼 내|빼서|빼고|빼 내|분리해|분리하고|잘라|꺼내)")
_DETACH_EN = re.compile(
    r"\b(?:remove|take\s+(?:off|out)|peel|detach|cut\s+off|pull\s+(?:off|out)|strip|unscrew)\b",
    re.I,
)
_SUBJECT_KO = re.compile(r"^\s*(?:은|는|:)")
_SUBJECT_EN = re.compile(r"^\s*(?::|is\b|are\b)", re.I)
_LATIN = re.compile(r"[a-z0-9]", re.I)


def _mentions(text: str, names: dict[str, str]) -> list[tuple[int, int, str]]:
    """The bin names in ``text`` as (start, end, category code) in ``text``'s own positions:
    ``bins_named``'s leftmost-longest reading of its normalized characters, a Latin name only
    where it is whole words ("plastics" is not in "plastic sack")."""
    chars: list[str] = []
    where: list[int] = []
    for index, char in enumerate(text):
        for piece in compact(char):
            chars.append(piece)
            where.append(index)
    flat = "".join(chars)
    by_first: dict[str, list[str]] = {}
    for name in sorted(names, key=len, reverse=True):
        by_first.setdefault(name[0], []).append(name)

    def whole(start: int, end: int) -> bool:
        if not _LATIN.match(text[start]):
            return True
        return not (
            (start > 0 and _LATIN.match(text[start - 1]))
            or (end < len(text) and _LATIN.match(text[end]))
        )

    found = []
    position = 0
    while position < len(flat):
        match = next(
            (
                n
                for n in by_first.get(flat[position], ())
                if flat.startswith(n, position)
                and whole(where[position], where[position + len(n) - 1] + 1)
            ),
            None,
        )
        if match:
            found.append((where[position], where[position + len(match) - 1] + 1, names[match]))
            position += len(match)
        else:
            position += 1
    return found


def _hangul(text: str) -> bool:
    return bool(_HANGUL.search(text))


def _conditional_ko(text: str) -> bool:
    return any(word not in _NOUNS_IN_MYEON for word in _CONDITION_KO.findall(text))


def directed_bins(text: str, names: dict[str, str]) -> set[str]:
    """The category codes of the bins ``text`` sends the item to: every bin it names except
    where the mention is conditional, negated, a part's or the subject (see above)."""
    directed: set[str] = set()
    for sentence in _SENTENCE.finditer(text or ""):
        said = sentence.group()
        for start, end, code in _mentions(said, names):
            before, after = said[:start], said[end:]
            clause_before = before.rsplit(",", 1)[-1]
            clause_after = after.split(",", 1)[0]
            if _hangul(said):
                excused = (
                    _conditional_ko(before)
                    or _conditional_ko(clause_after)
                    or _NEGATED_KO.search(clause_after)
                    or _DETACH_KO.search(clause_before)
                    or _SUBJECT_KO.match(after)
                )
            else:
                excused = (
                    _CONDITION_EN.search(before)
                    or _CONDITION_EN.search(clause_after)
                    or _NEGATED_EN.search(_CLAUSE_EN.split(before)[-1])
                    or _DETACH_EN.search(before)
                    or _SUBJECT_EN.match(after)
                    or not before.strip()
                )
            if not excused:
                directed.add(code)
    return directed


def contradictions(answer: dict[str, Any], bin_code: str, names: dict[str, str]) -> list[str]:
    """The lines of an answer (headline, steps, what to fix) that send the item to another bin
    than ``bin_code``, the one it is answered for: the answer contradicts itself there."""
    lines = [
        str(answer.get("user_answer") or ""),
        *map(str, answer.get("disposal_steps") or []),
        *map(str, answer.get("insufficiencies") or []),
    ]
    return [line for line in lines if directed_bins(line, names) - {bin_code}]


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
    from .offline import conditions_sentence, direction  # the offline answer's wording

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

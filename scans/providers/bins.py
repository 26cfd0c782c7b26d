"""The bins a text names: the rule base's bin names, and the bins a line of an answer sends the
item to (a mention that is conditional, negated, a part's or the subject sends it nowhere)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..rules import compact

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
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_PARENTHESES = re.compile(r"\(([^)]*)\)")


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

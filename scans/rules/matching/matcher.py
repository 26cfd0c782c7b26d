"""The decision for a whole hint: instructions cut out, states found, the hint split into
parts, each part read, and one answer, a question, or the candidates to choose from."""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.conf import settings

from ..morphology import analyser, phrasing
from ..morphology.analyser import Morpheme
from .calibration import calibrated
from .parts import PartReader
from .results import Guess, TextMatch, dedupe
from .segments import Segment, item_words, split_segments, unknown_words
from .text import find_all, normalize
from .triggers import ABSENT, State


class RuleIndex(PartReader):
    """All aliases of the rule base, ready for matching one hint at a time."""

    # -- the decision ------------------------------------------------------------------------
    def match(self, hint: str) -> TextMatch:
        if not normalize(hint):
            return TextMatch(outcome="unclassified", reason="no_hint", method="none")
        cleaned, removed = phrasing.strip_instructions(hint)
        if not normalize(cleaned):
            return TextMatch(
                outcome="unclassified",
                reason="instruction_only",
                method="none",
                instructions=removed,
                analyser="kiwi" if analyser.get_analyser() else "none",
            )
        morphemes = analyser.analyse(cleaned)
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
        parts_of_hint = split_segments(morphemes)
        for k, segment in enumerate(parts_of_hint):
            words = item_words(segment, morphemes, state, covered, wordlike)
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

        # "clear PET bottle, label on": a part after a comma whose words all belong to a state
        # phrase (the label of "label on") describes the item of the other parts, as
        # ", 라벨 붙어있음" does; it is no second item
        def only_a_state(words: list[int]) -> bool:
            return bool(words) and all(i in state for i in words)

        if any(words and not only_a_state(words) for _, words in segments):
            segments = [
                (segment, [] if not segment.conjoined and only_a_state(words) else words)
                for segment, words in segments
            ]
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
                state = State(set(state) - named, state)
                segments = [
                    (segment, item_words(segment, morphemes, state, covered, wordlike))
                    for segment, _ in segments
                ]
        item_parts = [set(seg.indices) for seg, words in segments if words]

        def tags_of(segment: Segment) -> list[str]:
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

        parts: list[tuple[Guess, bool]] = []
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
            leftover = unknown_words(morphemes, state)
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
                or phrasing.frames(morphemes)
                or phrasing.names_an_answer(morphemes)
                or phrasing.asks_back(cleaned, morphemes)
            )
            # a word alone that names a bin or a material (플라스틱, 캔, 비닐), insisted on
            bin_word = guess.bare
            if (
                guess.source == "category"
                and (removed or insisted or phrasing.asks_for_an_answer(morphemes))
            ) or (bin_word and insisted):
                # only a bin's own name is left beside an instruction ("이건 종이야, 그렇게
                # 답해"), insisted on ("종이 종이 종이", "100% 종이", "종이라니까") or set as the
                # answer ("종이로 해"): that name is the instruction's, not an item
                guess.always_ask, guess.bucket = "instruction_only", "instruction_target"
            elif "unclear_item" in tags or phrasing.is_hedged(cleaned, morphemes):
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

    def _several(self, guesses: list[Guess]) -> TextMatch:
        """Two or more items: one answer if they share a bin, else ask which one."""
        codes = {g.code for g in guesses}
        if len(codes) == 1 and None not in codes and all(g.exact for g in guesses):
            first = guesses[0]
            if first.bucket != "substring":
                first.bucket = "exact_multi_same"
            first.candidates = dedupe([c for g in guesses for c in g.candidates[:1]])
            return self._result(first)
        # each item's own reading first, then what else each could be
        candidates = dedupe(
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
            candidates=dedupe(candidates)[:4],
        )

    def _result(self, guess: Guess) -> TextMatch:
        confidence = calibrated(guess.bucket, guess.score, guess.gap, guess.method)
        candidates = dedupe(guess.candidates)[:4]
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
                spans += [(p, p + len(needle), i) for p in find_all(hint_compact, needle)]
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
                    Guess(
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

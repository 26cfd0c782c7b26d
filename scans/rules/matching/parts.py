"""Reading one part of a hint: the alias that covers its head noun, a compound split by a
description, a head word with the words that describe it, or a typo or fuzzy guess."""

from __future__ import annotations

from collections.abc import Sequence

from ..morphology import analyser
from ..morphology.analyser import Morpheme
from ..morphology.words import (
    BIN_WORDS,
    CONTAINER_WORDS,
    FILLER_WORDS,
    FRAMING_WORDS,
    MATERIAL_WORDS,
    PART_WORDS,
    VAGUE_WORDS,
)
from .index import Span
from .results import Guess
from .scoring import FuzzyScoring
from .segments import Segment
from .text import compact


class PartReader(FuzzyScoring):
    """One part of a hint read as an item: exact, split, by head word, as a typo or fuzzily."""

    def _read_part(
        self,
        text: str,
        segment: Segment,
        words: list[int],
        morphemes: Sequence[Morpheme],
        spans: list[Span],
        state: set[int],
        tags: list[str],
    ) -> Guess:
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
                morphemes[j].is_noun and morphemes[j].lemma in MATERIAL_WORDS
                for j in range(i + 1, head)
            ):
                break  # 계란 플라스틱 판: a material between says what the head is made of
            names = [(first.form, first.lemma)]
            for mod in modifiers:
                if mod.last == i:
                    alias = self.aliases[mod.alias]
                    names += [
                        (self.aliases[j].compact, analyser.singular(self.aliases[j].compact))
                        for j in self._item_aliases.get((alias.category_code, alias.item), ())
                    ]
            for form, lemma in names:
                found = (
                    self._hangul.get(compact(form + head_m.form), [])
                    or self._latin.get((form, head_m.form), [])
                    or self._latin.get((lemma, head_m.lemma), [])
                )
                if found:
                    split = [Span(a, first.start, head_m.end, i, head) for a in found]
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
            or (morphemes[i].lemma not in FILLER_WORDS and morphemes[i].lemma not in VAGUE_WORDS)
        )
        # a misspelt word is often cut into odd morphemes (형굉등 → 형굉 + 등): compare the
        # written words from the first item word to the head's word's last content morpheme
        first_word, head_word = morphemes[words[0]].word, head_m.word
        written = [
            m
            for m in morphemes
            if first_word <= m.word <= head_word and not analyser.is_function(m)
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
            if head_m.lemma in PART_WORDS:
                # pieces of the thing it names: 깨진 소주병 조각, 시멘트 부스러기
                bucket = "part_of"
            elif family and (code in family or alias.category_code in family):
                # the describing item is itself known by a name ending in the head word (a
                # 생수병 is a 병): then it names the head (삼다수 병); else it is what the head
                # holds (곽티슈 상자: tissues in a box, medicine bottle), and the head decides
                named = head_m.lemma in self._item_heads.get((alias.category_code, alias.item), ())
                bucket = "family_modifier" if named else "family_content"
            if bucket:
                return Guess(
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
            return Guess(
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
                return Guess(
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
                return Guess(
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
            return Guess(
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
        covering: list[Span],
        mine: list[Span],
        words: list[int],
        morphemes: Sequence[Morpheme],
        state: set[int],
        tags: list[str],
    ) -> Guess:
        longest = max(s.end - s.start for s in covering)
        best = [s for s in covering if s.end - s.start == longest]
        codes = {self.aliases[s.alias].category_code for s in best}
        head_form = morphemes[words[-1]].form
        if len(codes) > 1:
            return Guess(
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
            and morphemes[s.last].lemma in MATERIAL_WORDS
            and self.aliases[s.alias].category_code not in {alias.category_code, code}
        ]
        covered = {j for s in mine for j in range(s.first, s.last + 1)}
        unknown = [i for i in words if i < span.first and i not in covered]
        # a material the rule base has no name for, right before the head (스텐 빨대): the
        # material may be another bin's; ask, offering what the material reads as
        material = [i for i in unknown if i == adjacent and morphemes[i].lemma in MATERIAL_WORDS]
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
            return Guess(
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
            alias.source == "category" or compact(alias.text) in BIN_WORDS - CONTAINER_WORDS
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
        bare = compact(alias.text) in BIN_WORDS and all(
            span.first <= i <= span.last
            or morphemes[i].lemma in (morphemes[span.last].lemma, *FRAMING_WORDS)
            for i in words
        )
        return Guess(
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

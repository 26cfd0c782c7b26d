"""A hint's parts and the words in each that can name the item.

The hint is split at conjunctions and commas (이랑/하고/와/과/and, …); in each part the head
noun is the last noun that is not filler, vague, a counter or a state word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..morphology import analyser
from ..morphology.analyser import Morpheme
from ..morphology.words import (
    CONJUNCTION_WORDS,
    COUNTER_WORDS,
    EN_PREPOSITIONS,
    EN_QUANTITY_NOUNS,
    FILLER_WORDS,
    INSTRUCTION_VERBS,
    QUANTITY_DETERMINERS,
    SEGMENT_PUNCTUATION,
    VAGUE_WORDS,
    VERBAL_NOUNS,
)


@dataclass
class Segment:
    indices: list[int]
    conjoined: bool  # joined to another part by a conjunction (not just a comma)


def split_segments(morphemes: Sequence[Morpheme]) -> list[Segment]:
    segments: list[Segment] = []
    current: list[int] = []
    joint = ""
    for i, m in enumerate(morphemes):
        kind = ""
        if m.tag == "JC" or (m.tag in {"MAJ", "MAG", "SL"} and m.form in CONJUNCTION_WORDS):
            kind = "conj"
        elif m.tag.startswith("S") and m.tag not in {"SL", "SN", "SH"}:
            if m.form in {"/", "+", "&"}:
                kind = "conj"
            elif m.form in SEGMENT_PUNCTUATION:
                kind = "punct"
        if not kind:
            current.append(i)
            continue
        if current:
            segments.append(Segment(current, joint == "conj" or kind == "conj"))
            current = []
        joint = kind if joint != "conj" or kind == "conj" else joint
    if current:
        segments.append(Segment(current, joint == "conj"))
    return segments


def item_words(
    segment: Segment,
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
        if m.is_latin and m.lemma in EN_PREPOSITIONS and (words or described):
            break
        if i in loose and i not in covered and m.lemma not in FILLER_WORDS:
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
        if lemma in VAGUE_WORDS or lemma in FILLER_WORDS or lemma in VERBAL_NOUNS:
            continue
        if m.is_latin and (len(lemma) < 2 or lemma in INSTRUCTION_VERBS):
            continue
        prev = morphemes[indices[k - 1]] if k else None
        if (
            lemma in COUNTER_WORDS
            and prev is not None
            and (
                prev.tag in {"SN", "NR"} or (prev.tag == "MM" and prev.form in QUANTITY_DETERMINERS)
            )
        ):
            continue
        nxt = morphemes[indices[k + 1]] if k + 1 < len(indices) else None
        if m.is_latin and lemma in EN_QUANTITY_NOUNS and nxt and nxt.form == "of":
            continue
        words.append(i)
    # with nothing else to name the item, the words of an English state phrase do
    return words or described


def unknown_words(morphemes: Sequence[Morpheme], state: set[int]) -> str:
    """The hint's content words that are neither filler, vague, state nor grammar."""
    kept = []
    for i, m in enumerate(morphemes):
        if i in state or analyser.is_function(m) or analyser.is_negation_marker(m):
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
        if m.lemma in VAGUE_WORDS or m.lemma in FILLER_WORDS:
            continue
        if m.lemma in VERBAL_NOUNS:
            continue
        if m.tag in {"VV", "VA"} and len(kept) == 0 and i + 1 < len(morphemes):
            continue  # a leading verb describes; a verb-only typo is kept below
        kept.append(m.form)
    return " ".join(kept)

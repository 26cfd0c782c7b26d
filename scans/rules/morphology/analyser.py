"""The hint's morphemes (kiwipiepy), with negation marked, and the vowels people confuse.

The analyser is Kiwi (kiwipiepy; its model ships inside the wheel): loaded lazily, once per
process, only where the offline matcher runs, ~1 s and ~320 MB resident (the multi-word proper
noun dictionary, ~190 MB more, is not loaded: it names places and works, not household waste),
then well under a millisecond per hint. When it cannot load, ``analyse`` returns None and the
matcher falls back to substring matching, with a warning.

Latin words and numbers are tokenized here, not by Kiwi (which splits unknown English words
into pieces); English plurals are folded to the singular.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
import warnings
from dataclasses import dataclass

from .words import LISTED_WORDS

logger = logging.getLogger(__name__)

_kiwi = None
_kiwi_failed = False
_kiwi_lock = threading.Lock()
_tokenize_lock = threading.Lock()


def get_analyser():
    """The process's Kiwi, loaded on first use; None when it cannot load (warned once)."""
    global _kiwi, _kiwi_failed
    if _kiwi is not None or _kiwi_failed:
        return _kiwi
    with _kiwi_lock:
        if _kiwi is None and not _kiwi_failed:
            try:
                from kiwipiepy import Kiwi

                with warnings.catch_warnings():
                    # num_workers=0: one thread, no pool (a prefork child inherits it safely);
                    # kiwipiepy warns that 0 meant "all cores" before 0.21
                    warnings.simplefilter("ignore", DeprecationWarning)
                    kiwi = Kiwi(num_workers=0, load_multi_dict=False)
                kiwi.tokenize("")  # the model is loaded lazily: load it now
                _kiwi = kiwi
            except Exception:  # a native library: any failure means "not here"
                logger.warning(
                    "kiwipiepy unavailable; matching hints by substrings, without morphemes",
                    exc_info=True,
                )
                _kiwi_failed = True
    return _kiwi


def warm_analyser() -> bool:
    """Load the analyser now (worker start, load_rulebase); True when it is available."""
    return get_analyser() is not None


# --- morphemes ------------------------------------------------------------------------------
@dataclass(slots=True)
class Morpheme:
    form: str  # lowercased surface form (a verb's stem: 깨져 → 깨지)
    tag: str  # Sejong tag without kiwi's -R/-I variants: NNG, VV, JC, SL (Latin), SN, …
    lemma: str  # the form to compare: a stem, or an English word in the singular
    start: int  # position in the compact hint (normalize() without spaces)
    end: int
    word: int  # index of the space-separated word (eojeol) it belongs to
    neg: bool = False  # a predicate negated by 안/못/-지 않, or a noun followed by 없다
    oov: bool = False  # a word the analyser's dictionary does not have (a typo, a new word)

    @property
    def is_noun(self) -> bool:
        return self.tag in NOUN_TAGS

    @property
    def is_predicate(self) -> bool:
        return self.tag in PREDICATE_TAGS

    @property
    def is_latin(self) -> bool:
        return self.tag == "SL"


NOUN_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "NP", "SL", "SH"})
PREDICATE_TAGS = frozenset({"VV", "VA", "VX", "VCN"})
# tags that carry no content of their own: particles, endings, copula, verb-making suffixes,
# punctuation and symbols
FUNCTION_TAG_PREFIXES = ("J", "E", "S", "Z", "W", "U")
FUNCTION_TAGS = frozenset({"VCP", "XSV", "XSA", "XSM", "IC"})

_LATIN_OR_NUMBER = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+(?:[.][0-9]+)?|[^a-z0-9]+")
_WORD_CHAR = re.compile(r"\w")


def is_function(m: Morpheme) -> bool:
    return m.tag in FUNCTION_TAGS or (m.tag.startswith(FUNCTION_TAG_PREFIXES) and m.tag not in {
        "SL", "SN", "SH"})  # fmt: skip


def singular(word: str) -> str:
    """English plural → singular, the regular cases ("bottles", "batteries", "boxes")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _compact_map(text: str) -> list[int]:
    """For each character of ``text``, its position in the compact text (word characters
    only, "_" excluded as normalize() does); a non-word character maps to the next one's."""
    positions, k = [], 0
    for ch in text:
        positions.append(k)
        if ch != "_" and _WORD_CHAR.match(ch):
            k += 1
    positions.append(k)
    return positions


def analyse(text: str) -> list[Morpheme] | None:
    """The hint's morphemes with compact positions, or None when no analyser is available."""
    kiwi = get_analyser()
    if kiwi is None:
        return None
    text = unicodedata.normalize("NFKC", text or "").lower()
    cmap = _compact_map(text)
    words = [0] * (len(text) + 1)
    word = 0
    for i, ch in enumerate(text):
        if ch.isspace() and i and not text[i - 1].isspace():
            word += 1
        words[i] = word
    words[len(text)] = word

    def span(start: int, end: int) -> tuple[int, int]:
        return cmap[start], cmap[end]

    out: list[Morpheme] = []
    for chunk in _LATIN_OR_NUMBER.finditer(text):
        piece, offset = chunk.group(), chunk.start()
        if piece[0].isascii() and piece[0].isalpha():
            start, end = span(offset, chunk.end())
            lemma = piece if piece in LISTED_WORDS else singular(piece)
            out.append(Morpheme(piece, "SL", lemma, start, end, words[offset]))
        elif piece[0].isdigit():
            start, end = span(offset, chunk.end())
            out.append(Morpheme(piece, "SN", piece, start, end, words[offset]))
        elif piece.strip():
            with _tokenize_lock:
                tokens = kiwi.tokenize(piece)
            for tok in tokens:
                tag = tok.tag.split("-")[0]
                begin = offset + tok.start
                start, end = span(begin, begin + tok.len)
                oov = bool(getattr(tok, "oov", False))
                out.append(Morpheme(tok.form, tag, tok.form, start, end, words[begin], oov=oov))
    nouns_read_as_adverbs(out)
    mark_negation(out)
    return out


# 못 is "cannot" and "nail", 안 "not" and "inside": Kiwi reads them as the adverb by default
ADVERB_NOUNS = frozenset({"못", "안"})


def nouns_read_as_adverbs(morphemes: list[Morpheme]) -> None:
    """못 and 안 are the negation adverbs only before a predicate; before a particle, a
    noun or punctuation they are the nouns (못이랑 나사: nails; 못 한 봉지: a bag of nails),
    and so is a 못 that ends the hint."""
    for k, m in enumerate(morphemes):
        if m.tag != "MAG" or m.form not in ADVERB_NOUNS:
            continue
        nxt = morphemes[k + 1] if k + 1 < len(morphemes) else None
        if nxt is None:
            # a hint ending in 안 is cut short after its negation ("분리가 안"); 못 is a nail
            noun = m.form == "못"
        else:
            noun = nxt.tag.startswith(("J", "N", "S")) or nxt.tag == "MM"
            noun = noun and nxt.tag not in {"SL", "SN"}  # 안 USB: before English or a number
        if noun:
            m.tag = "NNG"


NEGATION_ADVERBS = frozenset({"안", "못"})
NEGATING_AUXILIARIES = frozenset({"않", "못하", "말"})
DO_VERBS = frozenset({"하", "되"})


def mark_negation(morphemes: list[Morpheme]) -> None:
    """Flag predicates that are negated: 안/못 before them (안 뗀), -지 않/못하 after them
    (떼지 않은), a verbal noun with 안 하/되 after it (제거 안 함), and a noun followed by 없다
    (곰팡이 없는: what it names is absent)."""
    content = [i for i, m in enumerate(morphemes) if not is_function(m) or m.tag == "XSV"]

    def at(k: int) -> Morpheme | None:
        return morphemes[content[k]] if 0 <= k < len(content) else None

    for k, i in enumerate(content):
        m = morphemes[i]
        before, after, after2 = at(k - 1), at(k + 1), at(k + 2)
        if m.tag in {"VV", "VA", "XR"} or (m.tag == "NNG" and after and after.tag == "XSV"):
            if before and before.tag == "MAG" and before.form in NEGATION_ADVERBS:
                m.neg = True
            # -지 않다: the ending 지 is a function morpheme between the two
            following = morphemes[i + 1 : i + 4]
            forms = [(f.form, f.tag) for f in following]
            if ("지", "EC") in forms:
                rest = following[forms.index(("지", "EC")) + 1 :]
                if rest and rest[0].form in NEGATING_AUXILIARIES:
                    m.neg = True
        if m.tag in {"NNG", "NNP", "SL"}:
            if (
                after
                and after.tag == "MAG"
                and after.form in NEGATION_ADVERBS
                and after2
                and after2.form in DO_VERBS
            ):
                m.neg = True
            if after and (
                (after.tag == "VA" and after.form == "없")
                or (after.tag == "VCN" and after.form == "아니")
            ):
                m.neg = True  # 곰팡이 없는, 종이 아님: what it names is absent, or not it


def is_negation_marker(m: Morpheme) -> bool:
    return (m.tag == "MAG" and m.form in NEGATION_ADVERBS) or (
        m.tag == "VX" and m.form in NEGATING_AUXILIARIES
    )


# Vowels that sound alike in today's Korean and are written one for the other (쓰래기 for 쓰레기,
# 껍대기 for 껍데기, 패트 for 페트): ㅐ/ㅔ, ㅒ/ㅖ, and 왜/외/웨.
_MERGED_VOWELS = str.maketrans({"\u1162": "\u1166", "\u1164": "\u1168", "\u116b": "\u1170",
                                "\u116c": "\u1170"})  # fmt: skip


def fold_vowels(text: str) -> str:
    """``text`` with the vowels people confuse written one way; as many characters as before."""
    return unicodedata.normalize(
        "NFC", unicodedata.normalize("NFD", text).translate(_MERGED_VOWELS)
    )

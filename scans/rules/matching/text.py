"""Text compared the way the matcher compares it: normalized, compacted, as jamo, as n-grams."""

from __future__ import annotations

import re
import unicodedata

LATIN = re.compile(r"[a-z0-9]")
_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)
HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def normalize(text: str) -> str:
    """Lowercase, NFKC, punctuation to spaces, runs of spaces folded."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return " ".join(_NOT_WORD.sub(" ", text).replace("_", " ").split())


def compact(text: str) -> str:
    return normalize(text).replace(" ", "")


def to_jamo(text: str) -> str:
    """Hangul syllables → conjoining jamo (NFD); other characters are kept."""
    return unicodedata.normalize("NFD", text)


def char_grams(text: str, sizes: tuple[int, ...] = (2, 3)) -> set[str]:
    grams: set[str] = set()
    for n in sizes:
        if len(text) < n:
            continue
        grams.update(text[i : i + n] for i in range(len(text) - n + 1))
    return grams


def find_all(haystack: str, needle: str) -> list[int]:
    found, pos = [], haystack.find(needle)
    while pos != -1:
        found.append(pos)
        pos = haystack.find(needle, pos + 1)
    return found


def edit_distance(a: str, b: str, limit: int) -> int:
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

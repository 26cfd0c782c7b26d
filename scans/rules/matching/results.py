"""What the matcher returns (``TextMatch``), and one part's reading on the way (``Guess``)."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class Guess:
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


def dedupe(candidates: list[dict]) -> list[dict]:
    """One candidate per category, in order."""
    seen: set[str] = set()
    out = []
    for candidate in candidates:
        code = candidate.get("category_code")
        if code and code not in seen:
            seen.add(code)
            out.append(candidate)
    return out

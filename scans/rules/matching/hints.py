"""Matching a hint against the rule base as it is now: one index per process, rebuilt only
when the rule base's revision changes."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..cache import current_rulebase
from ..morphology import analyser
from .embeddings import get_embedder
from .index import Alias
from .matcher import RuleIndex
from .results import TextMatch
from .triggers import split_states

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
        present, absent = split_states(tags)
        final, hops = rulebase.reroute(category, item, present, absent)
        return final.code, hops

    return RuleIndex(_rulebase_aliases(rulebase), table, reroute)


def get_rule_index() -> RuleIndex:
    """The index for the rule base as it is now; rebuilt only when the rule base changed
    (its revision token, scans.rules.cache)."""
    global _index
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
    analyser.warm_analyser()
    embedder = get_embedder(num_threads=num_threads)
    index = get_rule_index()
    if embedder is not None and index.aliases:
        index.ensure_vectors(embedder)
    return len(index.aliases)


def match_hint(hint: str) -> TextMatch:
    return get_rule_index().match(hint)

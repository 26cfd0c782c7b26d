"""The rule base: loaded from YAML, held in memory per process, and matched against.

- ``loading`` and ``validation``: the YAML (scans/data/rulebase.yaml) checked and written into
  the database (``read_rulebase``, ``load_rulebase``; ``manage.py load_rulebase``).
- ``cache``: the rule base in memory (``current_rulebase``), one immutable snapshot per process,
  refreshed when its revision token changes.
- ``categories``: a classification placed in the rule base (``resolve_category``) and the rules
  that apply to it (``match_rules``, ``rule_step_result``); ``items``: which item a name names;
  ``choices``: what a scan that is not sure offers (``offered_choices``).
- ``taxonomy``: the taxonomy for the API (``get_taxonomy``) and the vision prompt
  (``vision_taxonomy``).
- ``matching``: hint text → category, Korean and English (``match_hint``), over the rule base's
  names and aliases; ``morphology``: how a hint is written (Kiwi morphemes, negation, the
  language's word lists, instructions and hedges).

Arrows point one way: categories, choices and taxonomy read the cache and the matcher; the
matcher reads the cache and morphology; loading writes through the cache's revision. Other
layers import the names below from ``scans.rules``.
"""

from __future__ import annotations

from .cache import (
    RuleBase,
    current_rulebase,
    note_rulebase_token,
    one_revision_per_step,
    rulebase_token,
    token_subquery,
)
from .categories import (
    applicable_steps,
    match_rules,
    open_conditions,
    resolve_category,
    rule_step_result,
    step_applies_to,
)
from .choices import MAX_CHOICES, classification_candidates, offered_choices
from .items import item_named, item_of_classification
from .loading import DEFAULT_RULEBASE, load_rulebase, read_rulebase
from .matching.hints import get_rule_index, match_hint, warm_embeddings
from .matching.results import TextMatch
from .matching.text import compact, normalize
from .matching.triggers import detect_tags
from .taxonomy import get_taxonomy, situation_tag_table, vision_taxonomy
from .validation import RuleBaseError, validate_rulebase

__all__ = [
    "DEFAULT_RULEBASE",
    "MAX_CHOICES",
    "RuleBase",
    "RuleBaseError",
    "TextMatch",
    "applicable_steps",
    "classification_candidates",
    "compact",
    "current_rulebase",
    "detect_tags",
    "get_rule_index",
    "get_taxonomy",
    "item_named",
    "item_of_classification",
    "load_rulebase",
    "match_hint",
    "match_rules",
    "normalize",
    "note_rulebase_token",
    "offered_choices",
    "one_revision_per_step",
    "open_conditions",
    "read_rulebase",
    "resolve_category",
    "rule_step_result",
    "rulebase_token",
    "situation_tag_table",
    "step_applies_to",
    "token_subquery",
    "validate_rulebase",
    "vision_taxonomy",
    "warm_embeddings",
]

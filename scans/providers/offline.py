"""The offline provider: the embedded default when no API key is set.

It cannot see the photo. It classifies from the hint text against the rule base and composes
the answer from the matched rules, and every result says so (``provider: "offline"``).
"""

from __future__ import annotations

from typing import Any

from ..models import Category, Exclusion
from ..rules import current_rulebase, match_hint
from .base import Answer, AnswerRequest, Classification, VisionRequest, rules_language
from .bins import bin_names
from .grounding import consistent_answer
from .wording import (
    EXAMPLE_HINTS,
    TEXTS,
    bin_en,
    conditions_sentence,
    direction,
    goes_to_sentence,
    item_en,
)

OFFLINE = "offline"


class OfflineVisionProvider:
    name = OFFLINE
    sees_photos = False  # it reads the hint; the photo is stored and shown, never looked at

    def classify(self, request: VisionRequest) -> Classification:
        hint = request.hint.strip()
        found = match_hint(hint)
        note = TEXTS[rules_language(request.language)]["note"]
        if found.outcome != "classified":
            return Classification(
                outcome="unclassified",
                situation_tags=found.tags,
                confidence=round(found.confidence, 3),
                user_input=hint,
                provider=self.name,
                note=note,
                details=found.to_dict(),
                candidates=found.candidates,
            )
        category = Category.objects.get(code=found.category_code)
        return Classification(
            outcome="classified",
            major_category=category.major_ko,
            middle_category=category.middle_ko,
            minor_category=found.item,
            category_code=category.code,
            situation_tags=found.tags,
            confidence=round(found.confidence, 3),
            user_input=hint,
            provider=self.name,
            note=note,
            details=found.to_dict(),
        )


class OfflineAnswerProvider:
    """Composes the answer from the matched rules in the scan's language (Korean, or English
    for every other language: ``rules_language``), and checks it the way every answer is
    checked (``grounding.consistent_answer``): one bin throughout."""

    name = OFFLINE

    def compose(self, request: AnswerRequest) -> Answer:
        language = rules_language(request.language)
        if request.rules is None:
            return self._ask(request.classification, language)
        answer = rule_answer(request.classification, request.rules, language)
        rulebase = current_rulebase()
        checked = consistent_answer(answer, request.rules, language, bin_names(rulebase.categories))
        return Answer(
            disposal_steps=checked.disposal_steps,
            insufficiencies=checked.insufficiencies,
            user_answer=checked.user_answer,
            provider=self.name,
            checks=checked.checks,
        )

    def _ask(self, classification: dict[str, Any], language: str) -> Answer:
        """Not sure what it is: ask for a description, naming the candidates, and say what the
        hint's states need whatever the bin turns out to be."""
        texts = TEXTS[language]
        reason = (classification.get("details") or {}).get("reason")
        ask = texts[reason if reason in ("ambiguous", "vague", "instruction_only") else "unknown"]
        name = "item_en" if language == "en" else "item"
        choices = [
            c.get(name) or c.get("item")
            for c in classification.get("candidates") or []
            if isinstance(c, dict) and c.get("item")
        ]
        if choices:
            ask += texts["one_of"].format(items=", ".join(choices[:4]))
        tags = set(classification.get("situation_tags") or [])
        fixes = [
            t.fix_en if language == "en" else t.fix_ko
            for t in current_rulebase().tags
            if t.code in tags and t.fix_ko
        ]
        return Answer(
            disposal_steps=[],
            insufficiencies=[
                texts["describe"].format(example=EXAMPLE_HINTS[language]),
                *[fix for fix in fixes if fix],
            ],
            user_answer=f"{texts['offline']} {ask}",
            provider=self.name,
        )


def rule_answer(
    classification: dict[str, Any], rules: dict[str, Any], language: str
) -> dict[str, Any]:
    """The answer the rules give, in ``language`` ("ko" or "en"): the steps and what to fix as
    the rule base words them, and a headline that says where the item goes and, first, why
    when that is not where people think (a state re-routed it, or it is a classic wrong-bin
    item), or every condition with its bin when the bin depends on one nothing settled."""
    texts = TEXTS[language]
    steps = [step.get(language) or step["ko"] for step in rules["steps"]]
    fixes = [fix.get(language) or fix["ko"] for fix in rules["fixes"]]
    item = _item_name(classification, rules, language)
    headline = conditions_sentence(rules, language) or _why(classification, rules, language)
    headline = headline or goes_to_sentence(item, rules, language)
    if fixes:
        headline += texts["fix_first" if len(fixes) == 1 else "fixes_first"].format(
            count=len(fixes)
        )
    elif steps and not rules.get("conditions"):
        headline += f" {steps[0]}"
    return {"disposal_steps": steps, "insufficiencies": fixes, "user_answer": headline}


def _item_name(classification: dict[str, Any], rules: dict[str, Any], language: str) -> str:
    item = classification.get("minor_category") or ""
    if language == "ko":
        return item or rules["middle_ko"]
    if item:
        rulebase = current_rulebase()
        for entry in [*rulebase.items, *rulebase.exclusions]:
            if entry.name_ko == item and entry.name_en:
                return entry.name_en
        if not any("\uac00" <= char <= "\ud7a3" for char in item):
            return item  # a vision model's own English words
    return rules["middle_en"]


def _why(classification: dict[str, Any], rules: dict[str, Any], language: str) -> str:
    """Why it goes where it goes, when that is not where people think; "" otherwise."""
    rerouted = rules.get("rerouted") or []
    if rerouted:
        # a state (or a settled condition of the item) sent it to another bin: say which
        hop = rerouted[0]
        note = hop.get(f"note_{language}") or ""
        if note:
            return note
        when = hop.get(f"when_{language}") or ""
        if language == "en":
            if when:
                return f"{item_en(when)}, put it out with {bin_en(rules['middle_en'])}."
            state = (hop.get("tag_en") or hop["tag"]).lower()
            came_from = bin_en(hop.get("from_en") or hop["from"])
            return (
                f"Because it is {state}, it goes with {bin_en(rules['middle_en'])}, "
                f"not {came_from}."
            )
        if when:
            return f"{when} {direction(rules['middle_ko'])} 배출해요."
        return (
            f"{hop.get('tag_ko') or hop['tag']} 상태라 {hop.get('from_ko') or hop['from']}이(가) "
            f"아니라 {direction(rules['middle_ko'])} 배출해요."
        )
    if (classification.get("details") or {}).get("source") == "exclusion":
        # the hint named something people often put in the wrong bin: its note says why
        field = "note_en" if language == "en" else "note_ko"
        return (
            Exclusion.objects.filter(
                name_ko=classification.get("minor_category") or "",
                goes_to__code=rules["category_code"],
            )
            .exclude(**{field: ""})
            .values_list(field, flat=True)
            .first()
            or ""
        )
    return ""

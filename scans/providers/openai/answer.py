"""The OpenAI answer step: guidance written from the matched rules in the scan's language,
checked against them, and the unclassified answer that makes no call."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.conf import settings
from django.utils.translation import get_language_info

from ...rules import current_rulebase
from ..base import (
    Answer,
    AnswerRequest,
    rules_language,
)
from ..bins import bin_names
from ..grounding import GROUNDING_VERSION, check_answer
from ..wording import EXAMPLE_HINT
from .client import OPENAI, TEMPERATURE, _OpenAIProvider
from .prompts import ANSWER_SCHEMA, ANSWER_SCHEMA_NAME, Prompt, cache_key, load_prompt

logger = logging.getLogger(__name__)

# Caps on what one call may generate, so a runaway reply cannot run up the bill. Far above a
# normal reply (vision ~100 tokens, answer ~400); hitting one ends as invalid_provider_output.
ANSWER_MAX_OUTPUT_TOKENS = 1500


# --- answer ---------------------------------------------------------------------------------
def language_name(language: str) -> str:
    try:
        return get_language_info(language)["name"]
    except KeyError:
        return language


def _rules_for_prompt(rules: dict[str, Any], language: str) -> dict[str, Any]:
    """The matched rules in one language (the answer's): both would double the tokens."""
    lang = rules_language(language)
    by_code = current_rulebase().by_code

    def goes_to(exclusion: dict[str, Any]) -> str:
        category = by_code.get(exclusion.get("goes_to"))
        if category is None:
            return exclusion.get("goes_to_ko") or ""
        return category.middle_en if lang == "en" else category.middle_ko

    return {
        "summary": rules.get(f"summary_{lang}") or "",
        "steps": [step.get(lang) for step in rules.get("steps") or []],
        "fixes": [
            {"tag": fix.get("tag"), "fix": fix.get(lang)} for fix in rules.get("fixes") or []
        ],
        "exclusions": [
            {"item": ex.get(lang), "goes_to": goes_to(ex), "note": ex.get(f"note_{lang}") or ""}
            for ex in rules.get("exclusions") or []
        ],
        "conditions": [
            {"when": c.get(f"when_{lang}") or "", "goes_to": c.get(f"goes_to_{lang}") or ""}
            for c in rules.get("conditions") or []
        ],
    }


def answer_payload(request: AnswerRequest) -> dict[str, Any]:
    """The variable part of the answer prompt (the user message), as a JSON-ready dict.

    Only what the answer is cached by: the language, the category, the situation tags (sorted)
    and the category's rules. Not the hint nor the item's name: the same guidance serves every
    scan of this category and these tags (services.compose_answer), and no text the user typed
    reaches the answer step.
    """
    rules = request.rules or {}
    lang = rules_language(request.language)
    tags = sorted(
        {tag for tag in request.classification.get("situation_tags") or [] if isinstance(tag, str)}
    )
    names = {t.code: (t.name_en if lang == "en" else t.name_ko) for t in current_rulebase().tags}
    return {
        "language": {"code": request.language, "name": language_name(request.language)},
        "category": {
            "code": rules.get("category_code"),
            "major": rules.get(f"major_{lang}"),
            "middle": rules.get(f"middle_{lang}"),
        },
        "situation_tags": [{"code": tag, "name": names.get(tag, tag)} for tag in tags],
        "rules": _rules_for_prompt(rules, request.language),
    }


UNCLASSIFIED_TEXTS = {
    "ko": {
        "ambiguous": "여러 물건이 함께 찍혔거나 애매해요. 한 번에 한 가지 물건만 찍고, 이름을 힌트에 "
        "적어 다시 스캔해 주세요.",
        "unclear": "사진만으로는 어떤 물건인지 확실하지 않아요. 물건 이름을 힌트에 적어 다시 스캔해 "
        "주세요.",
        "low_confidence": "사진만으로는 확실하지 않아요. {items} 중 하나라면 그 이름을 힌트에 적어 다시 "
        "스캔해 주세요.",
        "describe": "물건 설명이 필요해요 (예: '{example}').",
    },
    "en": {
        "ambiguous": "Several items are in the photo, or it is unclear. Photograph one item at a "
        "time and write its name in the hint.",
        "unclear": "We cannot tell from the photo what this is. Write the item's name in the hint "
        "and scan again.",
        "low_confidence": "We are not sure from the photo. If it is one of {items}, write its name "
        "in the hint and scan again.",
        "describe": "Describe the item (for example '{example}').",
    },
}


def unclassified_answer(classification: dict[str, Any], language: str = "ko") -> Answer:
    """No rule matched: say so honestly and ask, without calling the API. A result that was
    not sure names its candidates."""
    lang = rules_language(language)
    texts = UNCLASSIFIED_TEXTS[lang]
    reason = (classification.get("details") or {}).get("reason")
    names = [
        c.get("item_en" if lang == "en" else "item") or c.get("item") or c.get("category_code")
        for c in classification.get("candidates") or []
        if isinstance(c, dict)
    ]
    if reason == "low_confidence" and names:
        ask = texts["low_confidence"].format(items=", ".join(f"'{n}'" for n in names))
    else:
        ask = texts["ambiguous" if reason == "ambiguous" else "unclear"]
    example = EXAMPLE_HINT if lang == "ko" else "clear PET bottle, label on"
    return Answer(
        disposal_steps=[],
        insufficiencies=[texts["describe"].format(example=example)],
        user_answer=ask,
        provider=OPENAI,
    )


class OpenAIAnswerProvider(_OpenAIProvider):
    """Writes the guidance from the matched rules (and only them), in the scan's language, and
    checks what it wrote against them (scans.providers.grounding)."""

    refused_message = "The AI model declined to write guidance for this item."

    def _messages(self, request: AnswerRequest) -> tuple[Prompt, list[dict[str, Any]]]:
        prompt = load_prompt("answer")
        payload = json.dumps(answer_payload(request), ensure_ascii=False, sort_keys=True)
        return prompt, [
            {"role": "system", "content": prompt.text},
            {"role": "user", "content": payload},
        ]

    def answer_cache_key(self, request: AnswerRequest) -> str | None:
        """The key of this answer in the answer cache (services.compose_answer), or None when
        it costs nothing (no rules: the unclassified answer makes no call).

        A hash of all that the answer depends on: the server, the model, the prompt version and
        the exact messages (the language, the category, the sorted tags and the category's
        rules as matched: a revision of the rule base that changes them changes the key, one
        that does not keeps it), the schema and the grounding check's version.
        """
        if request.rules is None:
            return None
        prompt, messages = self._messages(request)
        return hashlib.sha256(
            json.dumps(
                {
                    "server": settings.OPENAI_BASE_URL or "api.openai.com",
                    "model": settings.OPENAI_ANSWER_MODEL,
                    "prompt": prompt.version,
                    "messages": messages,
                    "schema": ANSWER_SCHEMA,
                    "temperature": TEMPERATURE,
                    "check": GROUNDING_VERSION,
                },
                ensure_ascii=False,
                sort_keys=True,
            ).encode()
        ).hexdigest()

    @property
    def cache_namespace(self) -> str:
        """What an answer cache entry is labelled with (the admin shows it)."""
        server = settings.OPENAI_BASE_URL or "api.openai.com"
        return f"{OPENAI}|{server}|{settings.OPENAI_ANSWER_MODEL}|{load_prompt('answer').version}"

    def compose(self, request: AnswerRequest) -> Answer:
        if request.rules is None:
            return unclassified_answer(request.classification, request.language)
        prompt, messages = self._messages(request)
        data, usage, _ = self._complete(
            step="answer",
            model=settings.OPENAI_ANSWER_MODEL,
            messages=messages,
            schema_name=ANSWER_SCHEMA_NAME,
            schema=ANSWER_SCHEMA,
            prompt=prompt,
            prompt_cache_key=cache_key(prompt, prompt.text),
            max_output_tokens=ANSWER_MAX_OUTPUT_TOKENS,
        )
        checked = check_answer(
            data, request.rules, rules_language(request.language), self._bin_names()
        )
        if checked.checks:
            logger.info("openai answer: the grounding check changed %s", sorted(checked.checks))
        return Answer(
            disposal_steps=checked.disposal_steps,
            insufficiencies=checked.insufficiencies,
            user_answer=checked.user_answer,
            provider=self.name,
            checks=checked.checks,
            usage=usage,
        )

    def _bin_names(self) -> dict[str, str]:
        """The rule base's bin names (for the headline check), built again when it changed."""
        rulebase = current_rulebase()
        cached = getattr(self, "_names", None)
        if cached is None or cached[0] != rulebase.token:
            cached = (rulebase.token, bin_names(rulebase.categories))
            self._names = cached
        return cached[1]

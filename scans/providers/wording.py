"""How the rules' answer is worded: the offline provider's phrases in each language, Korean
particles, bin and item names inside a sentence, and the "goes to" and "if …, then …" sentences."""

from __future__ import annotations

from typing import Any

EXAMPLE_HINT = "투명 페트병, 라벨 있음"
EXAMPLE_HINTS = {"ko": EXAMPLE_HINT, "en": "clear PET bottle, label on"}

# What the offline provider says in each language of the rule base (``rules_language``).
TEXTS = {
    "ko": {
        "note": "오프라인 모드: 사진은 보지 않고 힌트 글자로만 분류했어요.",
        "offline": "오프라인 모드에서는 사진을 볼 수 없어요.",
        "ambiguous": "여러 품목이 섞여 있거나 애매해요. 한 번에 한 가지 물건만, 이름을 적어 다시 "
        "스캔해 주세요.",
        "vague": "어떤 물건인지 더 알려 주세요. 재질이나 물건 이름을 적어 다시 스캔해 주세요.",
        "instruction_only": "힌트에는 버릴 물건을 적어 주세요. 물건 이름을 적어 다시 스캔해 주세요.",
        "unknown": "무엇인지 알 수 없어요. 물건 이름을 힌트에 적어 다시 스캔해 주세요.",
        "one_of": " 혹시 {items} 중 하나인가요?",
        "describe": "물건 설명이 필요해요 (예: '{example}').",
        "fixes_first": " 배출 전에 {count}가지를 먼저 챙겨 주세요.",
        "fix_first": " 배출 전에 1가지를 먼저 챙겨 주세요.",
        "steps_for": " 아래 방법은 {bin} 기준이에요.",
    },
    "en": {
        "note": "Offline mode: classified from the hint's words only; the photo was not looked at.",
        "offline": "In offline mode the photo is not looked at.",
        "ambiguous": "Several items are mixed, or it is unclear which one. Scan one item at a "
        "time and write its name in the hint.",
        "vague": "Tell us more about the item: write its material or its name and scan again.",
        "instruction_only": "Write the item you are throwing away in the hint, then scan again.",
        "unknown": "We can't tell what this is. Write the item's name in the hint and scan again.",
        "one_of": " Is it one of these: {items}?",
        "describe": "Describe the item (for example '{example}').",
        "fixes_first": " First fix the {count} things below.",
        "fix_first": " First fix the one thing below.",
        "steps_for": " The steps below are for {bin}.",
    },
}


def _final_consonant(word: str) -> int | None:
    """Index of the final consonant (batchim) of the last Hangul syllable; 0 = none."""
    for char in reversed(word.strip()):
        code = ord(char) - 0xAC00
        if 0 <= code < 11172:
            return code % 28
        if char.isalnum():
            return None  # ends in Latin or a digit: no reliable reading
    return None


def topic(word: str) -> str:
    """word + 은/는 ("건전지는", "페트병은")."""
    final = _final_consonant(word)
    return word + ("은(는)" if final is None else "은" if final else "는")


def direction(word: str) -> str:
    """word + 으로/로 ("전지로", "종이팩으로", "금속류로"; ㄹ takes 로)."""
    final = _final_consonant(word)
    return word + ("(으)로" if final is None else "으로" if final not in (0, 8) else "로")


def bin_en(middle_en: str) -> str:
    """A bin's English name inside a sentence: "Metals and cans" → "metals and cans" (an
    initialism such as PET keeps its capitals)."""
    name = " ".join(middle_en.split())
    if len(name) > 1 and name[1].isupper():
        return name
    return name[:1].lower() + name[1:]


def item_en(name: str) -> str:
    """An item's English name starting a sentence: "clear PET bottle" → "Clear PET bottle"."""
    return name[:1].upper() + name[1:]


def goes_to_sentence(item: str, rules: dict[str, Any], language: str) -> str:
    """ "<item> goes to <bin>": the headline's plain form, in natural Korean or English."""
    if language == "en":
        return f"{item_en(item)}: put it out with {bin_en(rules['middle_en'])}."
    return f"{topic(item)} {direction(rules['middle_ko'])} 배출해요."


def conditions_sentence(rules: dict[str, Any], language: str) -> str:
    """An item whose bin depends on a condition nothing settled: every condition with its
    bin, as one "if …, then …" sentence, and which one the steps below follow."""
    conditions = rules.get("conditions") or []
    if not conditions:
        return ""
    texts = TEXTS[language]
    if language == "en":
        parts = [f"{c['when_en']}, put it out with {bin_en(c['goes_to_en'])}" for c in conditions]
        said = "; ".join(parts)
        sentence = said[:1].upper() + said[1:] + "."
        return sentence + texts["steps_for"].format(bin=bin_en(rules["middle_en"]))
    parts = [f"{c['when_ko']} {direction(c['goes_to_ko'])}" for c in conditions]
    sentence = ", ".join(parts) + " 배출해요."
    return sentence + texts["steps_for"].format(bin=rules["middle_ko"])

"""The offline provider: the embedded default when no API key is set.

It cannot see the photo. It classifies from the hint text against the rule base and composes
the answer from the matched rules, and every result says so (``provider: "offline"``).
"""

from __future__ import annotations

from ..matching import match_hint
from ..models import Category, Exclusion
from ..rulebase_cache import current_rulebase
from .base import Answer, AnswerRequest, Classification, VisionRequest

OFFLINE = "offline"
EXAMPLE_HINT = "투명 페트병, 라벨 있음"


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


class OfflineVisionProvider:
    name = OFFLINE
    sees_photos = False  # it reads the hint; the photo is stored and shown, never looked at

    def classify(self, request: VisionRequest) -> Classification:
        hint = request.hint.strip()
        found = match_hint(hint)
        note = "오프라인 모드: 사진은 보지 않고 힌트 글자로만 분류했어요."
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
    name = OFFLINE

    def compose(self, request: AnswerRequest) -> Answer:
        rules = request.rules
        classification = request.classification
        if rules is None:
            details = classification.get("details") or {}
            reason = details.get("reason")
            if reason == "ambiguous":
                ask = "여러 품목이 섞여 있거나 애매해요. 한 번에 한 가지 물건만, 이름을 적어 다시 스캔해 주세요."
            elif reason == "vague":
                ask = "어떤 물건인지 더 알려 주세요. 재질이나 물건 이름을 적어 다시 스캔해 주세요."
            elif reason == "instruction_only":
                ask = "힌트에는 버릴 물건을 적어 주세요. 물건 이름을 적어 다시 스캔해 주세요."
            else:
                ask = "무엇인지 알 수 없어요. 물건 이름을 힌트에 적어 다시 스캔해 주세요."
            choices = [
                c.get("item") for c in classification.get("candidates") or [] if c.get("item")
            ]
            if choices:
                ask += f" 혹시 {', '.join(choices[:4])} 중 하나인가요?"
            # what the hint says about its state needs doing whatever the bin turns out to be
            tags = set(classification.get("situation_tags") or [])
            fixes = [t.fix_ko for t in current_rulebase().tags if t.code in tags and t.fix_ko]
            return Answer(
                disposal_steps=[],
                insufficiencies=[f"물건 설명이 필요해요 (예: '{EXAMPLE_HINT}').", *fixes],
                user_answer=f"오프라인 모드에서는 사진을 볼 수 없어요. {ask}",
                provider=self.name,
            )
        steps = [step["ko"] for step in rules["steps"]]
        fixes = [fix["ko"] for fix in rules["fixes"]]
        item = classification.get("minor_category") or rules["middle_ko"]
        details = classification.get("details") or {}
        note = None
        rerouted = rules.get("rerouted") or []
        if rerouted:
            # a state sent it to another bin: say which, and why
            hop = rerouted[0]
            note = hop.get("note_ko") or (
                f"{hop.get('tag_ko') or hop['tag']} 상태라 {hop.get('from_ko') or hop['from']}이(가) "
                f"아니라 {direction(rules['middle_ko'])} 배출해요."
            )
        elif details.get("source") == "exclusion":
            # the hint named something people often put in the wrong bin: its note says why
            note = (
                Exclusion.objects.filter(name_ko=item, goes_to__code=rules["category_code"])
                .exclude(note_ko="")
                .values_list("note_ko", flat=True)
                .first()
            )
        answer = note or f"{topic(item)} {direction(rules['middle_ko'])} 배출해요."
        if fixes:
            answer += f" 배출 전에 {len(fixes)}가지를 먼저 챙겨 주세요."
        elif steps:
            answer += f" {steps[0]}"
        return Answer(
            disposal_steps=steps,
            insufficiencies=fixes,
            user_answer=answer,
            provider=self.name,
        )

"""The offline provider as a user reads it: honest about not seeing, natural Korean, why-not notes."""

import pytest

from scans.providers.base import AnswerRequest, VisionRequest
from scans.providers.offline import OfflineAnswerProvider, OfflineVisionProvider, direction, topic
from scans.selectors import match_rules

pytestmark = pytest.mark.django_db


def guidance(hint: str):
    classification = OfflineVisionProvider().classify(VisionRequest(image=b"", hint=hint)).to_dict()
    rules = match_rules(classification) if classification["outcome"] == "classified" else None
    return classification, OfflineAnswerProvider().compose(
        AnswerRequest(classification, rules, hint)
    )


@pytest.mark.parametrize(
    ("word", "with_topic", "with_direction"),
    [
        ("건전지", "건전지는", "건전지로"),
        ("종이팩", "종이팩은", "종이팩으로"),
        ("금속류", "금속류는", "금속류로"),  # no batchim
        ("물", "물은", "물로"),  # ㄹ batchim takes 로
        ("PET", "PET은(는)", "PET(으)로"),  # Latin: both forms, no guess
    ],
)
def test_korean_particles_follow_the_final_consonant(word, with_topic, with_direction):
    assert topic(word) == with_topic
    assert direction(word) == with_direction


def test_the_classification_says_it_did_not_look_at_the_photo(rulebase):
    classification, _ = guidance("콜라캔")
    assert classification["provider"] == "offline"
    assert "사진은 보지 않고" in classification["note"]


def test_a_wrong_bin_item_gets_the_reason_first(rulebase):
    # bones are not food waste: the exclusion's note is what the user needs to hear
    classification, answer = guidance("닭뼈")
    assert classification["middle_category"] == "일반종량제폐기물"
    assert answer.user_answer.startswith("뼈는")
    assert "일반 종량제" in answer.user_answer


def test_what_to_fix_comes_from_the_situation_tags(rulebase):
    _, answer = guidance("투명 페트병, 라벨 있음")
    assert (
        answer.user_answer
        == "투명 페트병은 무색페트병으로 배출해요. 배출 전에 1가지를 먼저 챙겨 주세요."
    )
    assert answer.insufficiencies == ["비닐 라벨을 떼어 주세요."]


def test_two_items_ask_for_one_at_a_time(rulebase):
    classification, answer = guidance("콜라캔이랑 우유팩")
    assert classification["outcome"] == "unclassified"
    assert answer.disposal_steps == []
    assert "한 가지 물건만" in answer.user_answer


@pytest.mark.parametrize(
    ("hint", "middle", "says"),
    [
        ("종이컵", "종이팩", "종이팩과 함께"),  # cups go with cartons, not ordinary paper
        ("주사바늘", "일반종량제폐기물", "폐의약품 수거함에 넣지 않아요"),
        ("두부모래", "일반종량제폐기물", "음식물이 아니에요"),
        ("프링글스 통", "일반종량제폐기물", "복합재질"),
    ],
)
def test_a_classic_wrong_bin_item_is_told_why(rulebase, hint, middle, says):
    classification, answer = guidance(hint)
    assert classification["middle_category"] == middle
    assert says in answer.user_answer

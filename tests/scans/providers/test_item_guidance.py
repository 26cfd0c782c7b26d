"""Guidance for the item, not the whole category, in the scan's language, one bin throughout.

- a step can be for some items of its category only (``items:`` / ``except_items:``): the
  aluminium can gets no butane step, the newspaper no box step;
- an item whose bin depends on a condition (``conditions:``) is answered with every condition
  and its bin, unless the hint settled it;
- the offline answer (headline, steps, what to fix, the "not sure" ask) is written in the
  scan's language, Korean or English (other languages: English);
- the OpenAI answer is held to the same rules (the same rule snapshot, the same check).
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from scans.providers.base import AnswerRequest, VisionRequest
from scans.providers.bins import bin_names
from scans.providers.grounding import check_answer
from scans.providers.offline import OfflineAnswerProvider, OfflineVisionProvider
from scans.rules import current_rulebase, match_rules
from tests.conftest import wait_for_scan

BUTANE = "부탄가스·스프레이 캔은 노즐을 눌러 가스를 완전히 뺀 뒤 배출해 주세요."
BOX = "상자는 납작하게 펼쳐 다른 종이와 따로 모아 종이류로 내놓아 주세요."
DEPOSIT = "빈용기보증금"


def steps_for(code: str, item: str | None, tags=()) -> list[str]:
    rules = match_rules(
        {"category_code": code, "minor_category": item, "situation_tags": list(tags)}
    )
    return [step["ko"] for step in rules["steps"]]


def offline(hint: str, language: str = "ko"):
    classification = (
        OfflineVisionProvider()
        .classify(VisionRequest(image=b"", hint=hint, language=language))
        .to_dict()
    )
    rules = match_rules(classification) if classification["outcome"] == "classified" else None
    answer = OfflineAnswerProvider().compose(
        AnswerRequest(classification, rules, hint, language=language)
    )
    return classification, rules, answer


@pytest.mark.django_db
class TestStepsAreTheItems:
    def test_an_aluminium_can_gets_no_butane_step_and_a_butane_canister_does(self, rulebase):
        assert BUTANE not in steps_for("metal", "알루미늄 캔")
        assert "캔은 캔류 수거함에 넣어 주세요." in steps_for("metal", "알루미늄 캔")
        assert BUTANE in steps_for("metal", "부탄가스")
        assert not any("고철 수거함" in step for step in steps_for("metal", "알루미늄 캔"))
        assert any("고철 수거함" in step for step in steps_for("metal", "프라이팬"))

    def test_a_box_gets_the_box_step_and_a_newspaper_does_not(self, rulebase):
        assert BOX in steps_for("paper", "택배상자")
        assert BOX not in steps_for("paper", "신문지")
        assert any("신문·책" in step for step in steps_for("paper", "신문지"))

    def test_a_paper_cup_is_not_told_to_open_out_a_carton(self, rulebase):
        cup = steps_for("paper_pack", "종이컵", ["needs_flattening"])
        assert not any("팩을 펼치" in step or "접합부" in step for step in cup)
        assert "종이컵은 헹궈 말린 뒤 겹쳐서 모아 주세요." in cup
        assert any(
            "접합부" in step for step in steps_for("paper_pack", "우유팩", ["needs_flattening"])
        )

    def test_only_deposit_bottles_get_the_deposit_step(self, rulebase):
        assert any(DEPOSIT in step for step in steps_for("glass", "소주병"))
        assert not any(DEPOSIT in step for step in steps_for("glass", "와인병"))

    def test_a_replacing_step_for_other_items_does_not_hide_the_common_one(self, rulebase):
        # gas left: the butane canister's venting step is replaced by the outdoor one
        butane = steps_for("metal", "부탄가스", ["gas_remaining"])
        assert BUTANE not in butane and any("불씨가 없는 바깥" in step for step in butane)
        # neither is an aluminium can's step, whatever the tags say
        can = steps_for("metal", "알루미늄 캔", ["gas_remaining"])
        assert not any("가스" in step for step in can)

    def test_an_item_the_rule_base_does_not_know_gets_the_steps_for_every_item(self, rulebase):
        # a vision model's own words: no item-limited step is guessed for it
        unknown = steps_for("metal", "이상한 금속 물건")
        assert BUTANE not in unknown and "캔은 캔류 수거함에 넣어 주세요." not in unknown
        assert any("고철 수거함" in step for step in unknown)
        # an alias of an item is that item
        assert BUTANE in steps_for("metal", "부탄가스통")


@pytest.mark.django_db
class TestConditionalItems:
    def test_a_paint_tin_says_both_conditions_when_the_hint_does_not(self, rulebase):
        _, rules, answer = offline("페인트 통")
        assert rules["category_code"] == "hazardous"
        assert {c["goes_to"] for c in rules["conditions"]} == {"hazardous", "metal"}
        assert answer.user_answer.startswith(
            "페인트가 남아 있으면 생활계유해폐기물로, 페인트를 다 쓰고 말린 빈 통이면 금속류로 배출해요."
        )
        assert "생활계유해폐기물 기준" in answer.user_answer
        _, _, english = offline("페인트 통", "en")
        assert english.user_answer.startswith(
            "If there is paint left in it, put it out with household hazardous waste; if it is "
            "empty and the paint has dried, put it out with metals and cans."
        )

    @pytest.mark.parametrize(
        ("hint", "bin_", "says"),
        [
            ("반쯤 남은 페인트 통", "hazardous", "유해폐기물로 배출해요"),
            ("빈 페인트 통", "metal", "빈 통이면 금속류로 배출해요"),
        ],
    )
    def test_a_hint_that_settles_the_condition_gets_that_bin_only(self, rulebase, hint, bin_, says):
        _, rules, answer = offline(hint)
        assert rules["category_code"] == bin_ and rules["conditions"] == []
        assert says in answer.user_answer
        other = "금속류" if bin_ == "hazardous" else "생활계유해"
        assert other not in answer.user_answer

    def test_a_takeout_cup_is_paper_or_plastic(self, rulebase):
        _, rules, answer = offline("테이크아웃 컵")
        assert rules["category_code"] == "plastic"
        assert "플라스틱 컵이면 플라스틱류로, 종이컵이면 종이팩으로" in answer.user_answer

    def test_the_owners_choice_settles_it(self, rulebase):
        rules = match_rules(
            {
                "category_code": "hazardous",
                "minor_category": "남은 페인트 통",
                "chosen_by": "user",
            }
        )
        assert rules["conditions"] == []

    def test_the_openai_answer_must_state_the_conditions(self, rulebase):
        classification = {"category_code": "hazardous", "minor_category": "남은 페인트 통"}
        rules = match_rules(classification)
        names = bin_names(current_rulebase().categories)
        written = {
            "disposal_steps": [step["en"] for step in rules["steps"]],
            "insufficiencies": [],
            "user_answer": "This goes with household hazardous waste.",
        }
        checked = check_answer(written, rules, "en", names)
        assert checked.checks["consistency"]["user_answer"]
        assert "if it is empty and the paint has dried, put it out with metals and cans" in (
            checked.user_answer
        )


@pytest.mark.django_db
class TestTheScansLanguage:
    def test_an_english_scan_is_answered_in_english(self, rulebase):
        _, _, answer = offline("투명 페트병, 라벨 있음", "en")
        assert answer.user_answer.startswith("Clear PET bottle: put it out with clear PET bottles.")
        assert answer.insufficiencies == ["Peel off the plastic label."]
        assert "Tear the label off completely along the perforation." in answer.disposal_steps
        assert not any("\uac00" <= char <= "\ud7a3" for char in answer.user_answer)

    def test_another_language_gets_english(self, rulebase):
        _, _, answer = offline("투명 페트병, 라벨 있음", "fr")
        assert answer.insufficiencies == ["Peel off the plastic label."]

    def test_a_state_that_re_routes_says_why_in_english(self, rulebase):
        _, rules, answer = offline("금 간 소주병", "en")
        assert rules["category_code"] == "noncombustible"
        assert answer.user_answer.startswith("A broken bottle does not go in the glass bin")

    def test_the_offline_note_and_the_not_sure_ask_are_in_english(self, rulebase):
        classification, _, answer = offline("콜라캔이랑 우유팩", "en")
        assert classification["note"].startswith("Offline mode:")
        assert answer.user_answer.startswith("In offline mode the photo is not looked at.")
        assert "Scan one item at a time" in answer.user_answer
        assert "drink can" in answer.user_answer and "milk carton" in answer.user_answer
        assert answer.insufficiencies == [
            "Describe the item (for example 'clear PET bottle, label on')."
        ]

    def test_korean_stays_korean(self, rulebase):
        _, _, answer = offline("투명 페트병, 라벨 있음", "ko")
        assert answer.insufficiencies == ["비닐 라벨을 떼어 주세요."]
        assert answer.user_answer.startswith("투명 페트병은 무색페트병으로 배출해요.")


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_an_api_scan_with_accept_language_en_is_answered_in_english(
    celery_worker, rulebase, user, photo
):
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(
        "/api/v1/scans",
        {"image": photo(), "hint": "알루미늄 캔"},
        format="multipart",
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 202, response.content
    task_id = response.json()["task_id"]
    wait_for_scan(task_id)

    body = client.get(f"/api/v1/scans/{task_id}", HTTP_ACCEPT_LANGUAGE="en").json()
    assert body["status"] == "completed", body
    answer = body["result"]["answer"]
    assert answer["user_answer"].startswith("Aluminium can: put it out with metals and cans.")
    assert "Put cans in the can bin." in answer["disposal_steps"]
    assert not any("butane" in step.lower() for step in answer["disposal_steps"])
    assert body["result"]["classification"]["note"].startswith("Offline mode:")


def test_every_message_a_user_may_read_exists_in_korean_and_english():
    """The error catalogue and the questions a scan asks: Korean through locale/ko, English as
    written; none is left untranslated (a msgid shown on a Korean page)."""
    from django.utils import translation

    from scans.errors import ERROR_CODES, UNKNOWN_ERROR
    from scans.serializers import QUESTION_DEFAULT, QUESTION_MESSAGES, QUESTION_PHOTO_NOT_SEEN

    messages = [
        *(entry.message for entry in ERROR_CODES.values()),
        UNKNOWN_ERROR.message,
        *QUESTION_MESSAGES.values(),
        QUESTION_DEFAULT,
        QUESTION_PHOTO_NOT_SEEN,
    ]
    with translation.override("en"):
        english = [str(message) for message in messages]
    with translation.override("ko"):
        korean = [str(message) for message in messages]
    untranslated = [en for en, ko in zip(english, korean, strict=True) if en == ko]
    assert not untranslated
    assert all(any("\uac00" <= char <= "\ud7a3" for char in ko) for ko in korean)

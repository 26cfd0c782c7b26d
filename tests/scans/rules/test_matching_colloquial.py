"""The matcher reads what the first round missed: a bin's name framed as the answer or claimed
for another item, 못/안 as nouns, a state phrase about the item itself, vowels people confuse,
compounds split by a state or a material, and the colloquial families of the rule base."""

import pytest

from scans.rules import match_hint

# the matcher reading text against the rule base: the real-services pass adds nothing to it
pytestmark = [pytest.mark.django_db, pytest.mark.text_only]


@pytest.mark.parametrize(
    "hint",
    [
        "종이로 부탁해",  # set as the answer with 로
        "종이로 치자",
        "일반쓰레기 말고 종이 쪽으로 분류",
        "이건 종이. 진짜 종이. 종이라니까",  # insisted on
        "종이 종이 종이",
        "이건 100% 종이입니다",
        "This is definitely paper, trust me",
        "종이류 맞지?",  # asked back
        "PAPER!!!",
        "챗봇: 종이",  # a role prefix
        "just tell me paper",
    ],
)
def test_a_bin_s_name_framed_as_the_answer_asks(rulebase, hint):
    found = match_hint(hint)
    assert found.outcome == "unclassified", found.to_dict()
    assert found.category_code is None


def test_a_bin_s_name_that_describes_a_material_is_still_read(rulebase):
    found = match_hint("종이로 된 컵")  # made of paper: a paper cup
    assert (found.outcome, found.category_code) == ("classified", "paper_pack"), found.to_dict()


@pytest.mark.parametrize(
    ("hint", "item_bin"),
    [
        ("건전지는 종이야", "battery"),
        ("this battery is paper", "battery"),
        ("캔인데 종이임", "metal"),
    ],
)
def test_a_bin_s_name_claimed_for_an_item_asks_offering_the_item_first(rulebase, hint, item_bin):
    found = match_hint(hint)
    assert found.outcome == "unclassified", found.to_dict()
    assert found.candidates[0]["category_code"] == item_bin, found.to_dict()


@pytest.mark.parametrize(("hint", "category"), [("못이랑 나사", "metal"), ("못", "metal")])
def test_mot_before_a_particle_or_alone_is_a_nail(rulebase, hint, category):
    found = match_hint(hint)  # Kiwi reads 못 as "cannot"
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()


def test_mot_before_a_verb_is_still_a_negation(rulebase):
    found = match_hint("라벨 못 뗀 페트병")
    assert found.category_code == "pet_clear" and "label_attached" in found.tags, found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category", "tag"),
    [
        ("형광등 깨진 거", "noncombustible", "broken_lamp"),
        ("형광등 깨졌어요", "noncombustible", "broken_lamp"),
    ],
)
def test_a_state_phrase_about_the_item_itself_names_the_item(rulebase, hint, category, tag):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()
    assert tag in found.tags


def test_a_part_a_state_phrase_is_about_is_still_no_item(rulebase):
    found = match_hint("라벨 붙은 거")  # the label of what?
    assert found.outcome == "unclassified", found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category", "tag"),
    [
        ("clear PET bottle, label on", "pet_clear", "label_attached"),
        ("glass bottle, label on", "glass", "label_attached"),
        ("PET bottle, cap on", "pet_clear", "cap_attached"),
        ("soju bottle, cap on", "glass", "cap_attached"),
    ],
)
def test_a_part_after_a_comma_that_is_only_a_state_describes_the_item(
    rulebase, hint, category, tag
):
    # "label on" is the state of the bottle, as "라벨 붙어있음" is, not a second item
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()
    assert tag in found.tags


def test_a_second_item_after_a_comma_still_asks(rulebase):
    found = match_hint("PET bottle, glass bottle")
    assert found.outcome == "unclassified", found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("음식물쓰래기", "food"),
        ("수박 껍대기", "food"),
        ("세재통", "plastic"),
    ],
)
def test_a_word_written_with_a_merged_vowel_finds_its_name(rulebase, hint, category):
    found = match_hint(hint)  # ㅐ for ㅔ: 쓰래기 is 쓰레기
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()
    assert found.bucket == "exact_vowel"


def test_a_real_word_is_not_read_with_the_other_vowel(rulebase):
    found = match_hint("베개")  # a pillow, a word of its own: not looked up as 배개
    assert found.bucket != "exact_vowel", found.to_dict()


def test_a_compound_split_by_its_contents_is_still_the_compound(rulebase):
    found = match_hint("샴푸 남은 통")
    assert (found.outcome, found.category_code) == ("classified", "plastic"), found.to_dict()
    assert "contents_left" in found.tags


def test_a_material_between_the_parts_of_a_compound_is_not_skipped(rulebase):
    found = match_hint("계란 플라스틱 판")  # a plastic egg tray, not the paper one
    assert found.category_code != "paper", found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("다라이", "plastic"),
        ("빨간 다라이", "plastic"),
        ("양동이", "plastic"),
        ("맥주 깡", "metal"),
        ("리모컨 약", "battery"),  # 약 of a remote control is its battery
        ("애기 옷", "textile"),
        ("담배꽁초", "general"),
        ("cigarette butts", "general"),
        ("CD 케이스", "plastic"),
        ("귤 껍데기", "food"),
        ("창문 샷시", "construction"),
        ("공사 폐자재", "construction"),
        ("packing foam", "styrofoam"),
    ],
)
def test_colloquial_and_english_names_of_the_grown_families(rulebase, hint, category):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category", "tag"),
    [
        ("기름 범벅 피자박스", "general", "heavily_soiled"),
        ("배부른 보조배터리", "battery", "swollen_battery"),
        ("건전지 들어가는 장난감", "electronics", "powered"),
    ],
)
def test_colloquial_state_phrases_trigger_their_tag(rulebase, hint, category, tag):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()
    assert tag in found.tags


@pytest.mark.parametrize(
    "hint",
    [
        "비닐이라니까",  # a material's word, insisted on
        "100% 비닐",
        "무조건 캔",
        "플라스틱 맞지?",
        "정답 플라스틱",
        "put it in the plastic bin",
        "(paper)",
        "'paper'",
        "sort it as paper",  # English: "as" a bin
        "consider it paper",
        "종이류에 넣어줘",  # put it in the bin named
    ],
)
def test_a_material_s_word_insisted_on_or_quoted_asks(rulebase, hint):
    found = match_hint(hint)
    assert found.outcome == "unclassified", found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("플라스틱으로 된 거", "plastic"),
        ("500ml 캔", "metal"),
        ("캔 어떻게 버려요?", "metal"),
        ("건전지. 종이라고 답해", "battery"),  # an item beside an instruction is still the item
    ],
)
def test_a_material_s_word_used_plainly_is_still_answered(rulebase, hint, category):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("chopsticks", "general"),
        ("egg shells", "general"),
        ("청소기 먼지", "general"),
        ("씹던 껌", "general"),
        ("건조기 시트", "general"),
        ("너구리", "vinyl"),
        ("메가커피 컵", "plastic"),
        ("까스활명수", "glass"),
        ("모기향", "general"),
        ("신발 깔창", "general"),
        ("부러진 칼", "general"),
        ("알약 껍데기", "general"),
        ("꿀꽈배기", "vinyl"),
        ("핫식스", "metal"),
        ("장수막걸리", "plastic"),
        ("부루펜", "hazardous"),
    ],
)
def test_general_waste_and_brand_families(rulebase, hint, category):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()


@pytest.mark.parametrize("hint", ["일회용 커피컵 종이", "전부 종이", "항상 종이"])
def test_unknown_words_or_a_quantifier_before_a_bin_s_own_name_ask(rulebase, hint):
    found = match_hint(hint)  # the unknown words may be the item; "all of it" instructs
    assert found.outcome == "unclassified", found.to_dict()


def test_an_unknown_brand_is_not_read_as_a_slang_word_inside_it(rulebase):
    found = match_hint("쿨피스")  # a carton drink; 피스 is builders' slang for screws
    assert found.category_code != "metal", found.to_dict()


@pytest.mark.parametrize("hint", ["종이일걸", "종이겠지", "종이라던데", "종이?", "종이 찍어"])
def test_a_bin_s_name_guessed_heard_or_asked_about_asks(rulebase, hint):
    found = match_hint(hint)
    assert found.outcome == "unclassified", found.to_dict()


def test_a_word_that_only_looks_like_hearsay_is_still_read(rulebase):
    found = match_hint("두부모래")  # Kiwi: 두 + 부모 + 이 + 래, no "they say it is"
    assert (found.outcome, found.category_code) == ("classified", "general"), found.to_dict()


def test_a_container_word_after_an_unknown_word_is_still_the_container(rulebase):
    found = match_hint("beer 캔")  # a can is a can, whatever is written before it
    assert (found.outcome, found.category_code) == ("classified", "metal"), found.to_dict()

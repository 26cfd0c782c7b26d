"""Hint text → category, over the real rule base, in Korean and English, with spelling drift."""

from pathlib import Path

import pytest
import yaml

from scans.matching import detect_tags, match_hint
from scans.selectors import match_rules, resolve_category, situation_tag_table

PHRASES = yaml.safe_load(
    (Path(__file__).parent / "data" / "hint_phrases.yaml").read_text(encoding="utf-8")
)

pytestmark = pytest.mark.django_db


def test_the_phrase_table_is_big_and_covers_every_category(rulebase):
    from scans.models import Category

    assert len(PHRASES) >= 40
    assert {p["category"] for p in PHRASES} == set(Category.objects.values_list("code", flat=True))


@pytest.mark.parametrize("case", PHRASES, ids=[p["hint"] for p in PHRASES])
def test_hint_phrase_finds_its_category(rulebase, case):
    found = match_hint(case["hint"])
    assert found.outcome == "classified", found.to_dict()
    assert found.category_code == case["category"], found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("페트벙", "pet_clear"),
        ("알루미늄 캰", "metal"),
        ("cardbaord box", "paper"),
        ("형관등", "lighting"),
        ("건전기", "battery"),
        ("alumium can", "metal"),
    ],
)
def test_misspellings_that_are_no_alias_are_caught_by_character_ngrams(
    rulebase, settings, hint, category
):
    from scans.matching import compact, get_rule_index

    settings.SCAN_TEXT_MATCHER = "ngram"
    assert compact(hint) not in {a.compact for a in get_rule_index().aliases}, "not a stored alias"
    found = match_hint(hint)
    assert (found.outcome, found.category_code, found.method) == (
        "classified",
        category,
        "ngram",
    ), found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"), [("mobile handset", "electronics"), ("뜯어낸 벽 마감재", "construction")]
)
def test_paraphrases_need_the_embedding_model(rulebase, settings, hint, category):
    settings.SCAN_TEXT_MATCHER = "ngram"
    assert match_hint(hint).outcome == "unclassified"

    settings.SCAN_TEXT_MATCHER = "hybrid"
    found = match_hint(hint)
    assert (found.outcome, found.category_code, found.method) == (
        "classified",
        category,
        "hybrid",
    ), found.to_dict()


def test_an_attachment_phrase_is_not_a_second_item(rulebase):
    # "빨대 꽂혀 있음" describes the carton's state; the straw is not what is being thrown away
    assert match_hint("두유 팩 빨대 꽂혀 있음").category_code == "paper_pack"
    assert match_hint("빨대").category_code == "general"


def test_the_longest_name_wins_over_a_name_inside_it(rulebase):
    # "유색 페트병" contains "페트병", but coloured PET is not clear PET
    assert match_hint("유색 페트병").category_code == "plastic"
    assert match_hint("투명 페트병").category_code == "pet_clear"


def test_two_different_items_are_ambiguous_not_a_guess(rulebase):
    found = match_hint("콜라캔이랑 우유팩")
    assert found.outcome == "unclassified"
    assert found.reason == "ambiguous"


@pytest.mark.parametrize("hint", ["", "   ", "?!"])
def test_no_hint_is_unclassified(rulebase, hint):
    found = match_hint(hint)
    assert (found.outcome, found.reason) == ("unclassified", "no_hint")


def test_gibberish_is_not_forced_into_a_category(rulebase):
    found = match_hint("qzxv wprt")
    assert found.outcome == "unclassified", found.to_dict()


def test_situation_tags_come_from_the_hint_and_respect_negations(rulebase):
    table = situation_tag_table()
    assert "label_attached" in detect_tags("투명 페트병, 라벨 있음", table)
    assert "label_attached" not in detect_tags("투명 페트병, 라벨 제거함", table)


def test_rules_are_found_despite_spelling_drift_in_names(rulebase):
    # a provider may return names with spaces, English, or an item instead of the middle
    assert resolve_category({"middle_category": "무색 페트병"})[0].code == "pet_clear"
    assert resolve_category({"middle_category": "Clear PET bottles"})[0].code == "pet_clear"
    assert (
        resolve_category({"major_category": "재활용폐기물", "minor_category": "소주병"})[0].code
        == "glass"
    )
    assert (
        resolve_category({"category_code": "does-not-exist", "middle_category": "금속류"})[0].code
        == "metal"
    )
    assert resolve_category({"middle_category": "우주쓰레기"}) == (None, "none")


def test_matched_rules_carry_steps_fixes_and_exclusions(rulebase):
    rules = match_rules({"category_code": "pet_clear", "situation_tags": ["label_attached"]})

    assert rules["middle_ko"] == "무색페트병"
    assert rules["steps"] and all(s["ko"] and s["en"] for s in rules["steps"])
    assert any(f["tag"] == "label_attached" for f in rules["fixes"])
    assert any(e["goes_to"] == "plastic" for e in rules["exclusions"])
    without_tag = match_rules({"category_code": "pet_clear", "situation_tags": []})
    assert not without_tag["fixes"]
    assert len(without_tag["steps"]) <= len(rules["steps"])


# --- the rule base in memory (scans.rulebase_cache) -------------------------------------------
def test_matching_reads_the_rule_base_once_then_only_its_revision(
    rulebase, django_assert_num_queries
):
    classification = {"category_code": "pet_clear", "situation_tags": ["label_attached"]}
    first = match_rules(classification)  # reads the tables once

    with django_assert_num_queries(1):  # the revision check, nothing else
        again = match_rules(classification)
    assert again == first


def test_an_edit_of_the_rule_base_applies_to_the_next_match(rulebase):
    from scans.models import Category, DisposalStep

    before = match_rules({"category_code": "pet_clear"})
    pet = Category.objects.get(code="pet_clear")
    DisposalStep.objects.create(
        category=pet, position=99, text_ko="뚜껑을 닫아 주세요", text_en="Cap it"
    )
    pet.summary_ko = "요약이 바뀌었습니다"
    pet.save()  # as the admin saves

    after = match_rules({"category_code": "pet_clear"})
    assert after["steps"][-1] == {"ko": "뚜껑을 닫아 주세요", "en": "Cap it", "tag": None}
    assert len(after["steps"]) == len(before["steps"]) + 1
    assert after["summary_ko"] == "요약이 바뀌었습니다"

    pet.delete()
    assert resolve_category({"category_code": "pet_clear"}) == (None, "none")


def test_loading_the_rule_base_gives_it_a_new_revision(rulebase, rulebase_data):
    import copy

    from scans.rulebase import load_rulebase
    from scans.rulebase_cache import rulebase_token

    before = rulebase_token()
    load_rulebase(copy.deepcopy(rulebase_data))
    after = rulebase_token()

    assert after and after != before
    assert match_rules({"category_code": "pet_clear"})["category_code"] == "pet_clear"


def test_a_tagged_step_stands_in_for_the_common_step_it_replaces(rulebase):
    def steps(*tags):
        rules = match_rules({"category_code": "pet_clear", "situation_tags": list(tags)})
        return [step["en"] for step in rules["steps"]]

    plain = steps()
    labelled = steps("label_attached")

    assert plain[1] == "Peel off the plastic label."
    assert labelled[1] == "Tear the label off completely along the perforation."
    assert "Peel off the plastic label." not in labelled, "the label is not taken off twice"
    assert len(labelled) == len(plain)


def test_tagged_steps_come_where_a_person_follows_them(rulebase):
    rules = match_rules(
        {
            "category_code": "pet_clear",
            "situation_tags": ["contents_left", "needs_compression", "cap_attached"],
        }
    )
    steps = [step["en"] for step in rules["steps"]]

    assert steps[0] == "Pour out any drink that is left.", "emptied before it is rinsed"
    assert steps.index("Squeeze the air out to make it as small as possible.") > steps.index(
        "Step on or squeeze the bottle to flatten it."
    )
    assert steps[-1] == "Screw the cap back on and put it in the clear-PET bin.", (
        "putting it in the bin stays the last thing to do"
    )


# --- everyday words, colloquial names and brands ----------------------------------------------
# The bins come from the national guideline: the classic wrong-bin items it warns about, and
# the words households use for them (colloquial, dialect and loanword spellings, English).
@pytest.mark.parametrize(
    ("hint", "category"),
    [
        # single-use hygiene items: general waste, whatever they look like
        ("아기 물티슈", "general"),
        ("종이기저귀", "general"),
        ("생리대", "general"),
        ("kf94 마스크", "general"),
        ("면봉", "general"),
        ("화장솜", "general"),
        ("치실", "general"),
        ("일회용 면도기", "general"),
        ("used wet wipes", "general"),
        # writing and office tools
        ("다 쓴 볼펜", "general"),
        ("몽당연필", "general"),
        ("형광펜", "general"),
        ("크레파스", "general"),
        ("스카치테이프", "general"),
        # pets
        ("고양이 모래", "general"),
        ("강아지 배변패드", "general"),
        ("고양이 캔", "metal"),
        ("사료 봉지", "vinyl"),
        # disposable cutlery and kitchen items
        ("나무젓가락", "general"),
        ("이쑤시개", "general"),
        ("플라스틱 숟가락", "plastic"),
        ("비닐장갑", "vinyl"),
        ("수세미", "general"),
        ("실리콘 주걱", "general"),
        ("후라이팬", "metal"),
        ("스뎅 냄비", "metal"),
        # ceramics, glassware, mirrors, lamps
        ("머그컵", "noncombustible"),
        ("와인잔", "noncombustible"),
        ("글라스락", "noncombustible"),
        ("꽃병", "noncombustible"),
        ("백열전구", "general"),
        ("써클라인", "lighting"),
        # medical waste
        ("먹다 남은 감기약", "hazardous"),
        ("시럽약", "hazardous"),
        ("인공눈물", "hazardous"),
        ("인슐린 주사바늘", "general"),
        ("디지털 체온계", "electronics"),
        ("콘택트렌즈", "general"),
        # small and wearable electronics
        ("무선 이어폰", "electronics"),
        ("스마트워치", "electronics"),
        ("전자담배", "electronics"),
        ("전동칫솔", "electronics"),
        ("고데기", "electronics"),
        ("휴대폰 충전기", "electronics"),
        ("리모컨", "electronics"),
        ("old phone charger", "electronics"),
        # batteries by every name
        ("밧데리", "battery"),
        ("빳떼리", "battery"),
        ("AA 배터리", "battery"),
        ("단추형 전지", "battery"),
        ("보조배터리", "battery"),
        # food waste and what is not food waste
        ("치킨 뼈", "general"),
        ("꽃게 껍데기", "general"),
        ("복숭아 씨", "general"),
        ("드립백", "general"),
        ("수박 껍데기", "food"),
        ("음쓰", "food"),
        # paper and what only looks like paper
        ("종이컵", "paper_pack"),
        ("멸균팩", "paper_pack"),
        ("인화지", "general"),
        ("스프링 노트", "paper"),
        ("찌라시", "paper"),
        # plastic, film and foam
        ("컵라면", "general"),
        ("뽁뽁이", "vinyl"),
        ("봉다리", "vinyl"),
        ("막걸리병", "plastic"),
        ("아이스팩", "general"),
        ("스티로폴 박스", "styrofoam"),
        # metal, textile, bulky, construction
        ("깡통", "metal"),
        ("맥주 깡통", "metal"),
        ("알루미늄 호일", "metal"),
        ("기름 묻은 호일", "general"),
        ("츄리닝", "textile"),
        ("쓰레빠", "textile"),
        ("카페트", "bulky"),
        ("카시트", "bulky"),
        ("싱크대", "construction"),
        ("석면 슬레이트", "construction"),
    ],
)
def test_everyday_words_find_the_bin_the_guideline_gives(rulebase, hint, category):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("삼다수", "pet_clear"),
        ("아이시스 8.0", "pet_clear"),
        ("백산수 2리터", "pet_clear"),
        ("신라면", "vinyl"),
        ("짜파게티 봉지", "vinyl"),
        ("새우깡", "vinyl"),
        ("햇반", "plastic"),
        ("바나나맛우유", "plastic"),
        ("야쿠르트", "plastic"),
        ("박카스", "glass"),
        ("참이슬", "glass"),
        ("썬연료", "metal"),
        ("스팸", "metal"),
        ("프링글스", "general"),
        ("하기스", "general"),
        ("육개장 사발면", "general"),
        ("타이레놀", "hazardous"),
        ("판콜에이", "hazardous"),
        ("후시딘", "hazardous"),
        ("듀라셀", "battery"),
        ("에어팟", "electronics"),
        ("갤럭시 버즈", "electronics"),
        ("아이폰", "electronics"),
        ("갤럭시 s23", "electronics"),
        ("airpods", "electronics"),
        ("iphone", "electronics"),
    ],
)
def test_a_brand_finds_its_usual_container_or_item(rulebase, hint, category):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()


@pytest.mark.parametrize(
    ("brand", "bins"),
    [
        ("코카콜라", {"metal", "pet_clear"}),
        ("칠성사이다", {"metal", "pet_clear"}),
        ("불닭볶음면", {"vinyl", "general"}),
        ("베지밀", {"glass", "paper_pack"}),
    ],
)
def test_a_brand_sold_in_several_containers_asks_which_one(rulebase, brand, bins):
    found = match_hint(brand)
    assert (found.outcome, found.reason) == ("unclassified", "ambiguous"), found.to_dict()
    assert {c["category"] for c in found.candidates} == bins


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("코카콜라 캔", "metal"),
        ("코카콜라 페트병", "pet_clear"),
        ("칠성사이다 캔", "metal"),
        ("불닭볶음면 컵", "general"),
        ("베지밀 병", "glass"),
    ],
)
def test_a_brand_with_its_container_names_the_bin(rulebase, hint, category):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("두부 모래", "general"),  # not food, not 모래 (sand)
        ("스티로폼 아이스박스", "styrofoam"),  # not the hard cooler (아이스박스)
        ("바나나우유 팩", "paper_pack"),  # the carton, not the PS jar
        ("노트북", "electronics"),  # not a paper notebook (노트)
        ("물파스", "hazardous"),  # liquid medicine, not a used patch (파스)
        ("전기면도기", "electronics"),  # not a disposable razor (면도기)
    ],
)
def test_a_longer_everyday_name_wins_over_a_shorter_one_inside_it(rulebase, hint, category):
    found = match_hint(hint)
    assert (found.outcome, found.category_code) == ("classified", category), found.to_dict()

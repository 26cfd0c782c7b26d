"""The rule base: 18 categories from YAML into the DB, consistent, reloadable."""

import io

import pytest
from django.core.management import call_command

from scans.models import Category, CategoryKind, DisposalStep, Exclusion, Item, SituationTag
from scans.rules import RuleBaseError, read_rulebase, validate_rulebase

pytestmark = pytest.mark.django_db


def test_the_rule_base_has_the_eighteen_rule_addressable_categories(rulebase):
    assert Category.objects.count() == 18
    assert Category.objects.filter(kind=CategoryKind.RECYCLABLE).count() == 12
    for category in Category.objects.all():
        assert category.middle_en and category.major_en, category.code
        assert category.items.exists(), f"{category.code} has no items"
        assert DisposalStep.objects.filter(category=category, tag=None).exists(), (
            f"{category.code} has no steps"
        )


def test_every_step_and_exclusion_has_both_languages(rulebase):
    assert not DisposalStep.objects.filter(text_ko="").exists()
    assert not DisposalStep.objects.filter(text_en="").exists()
    assert Exclusion.objects.count() >= 18
    assert SituationTag.objects.count() >= 30
    assert SituationTag.objects.filter(code="label_attached").exclude(fix_ko="").exists()


def test_an_item_name_belongs_to_one_category_only(rulebase):
    names = list(Item.objects.values_list("name_ko", flat=True))
    assert len(names) == len(set(names))


def test_load_command_reports_and_keeps_admin_edits_with_if_empty():
    out = io.StringIO()
    call_command("load_rulebase", stdout=out)
    assert "18 categories" in out.getvalue()
    assert " brands" in out.getvalue()

    Category.objects.filter(code="paper").update(summary_ko="관리자가 고친 설명")
    call_command("load_rulebase", "--if-empty", stdout=io.StringIO())
    assert Category.objects.get(code="paper").summary_ko == "관리자가 고친 설명"

    call_command("load_rulebase", stdout=io.StringIO())
    assert Category.objects.get(code="paper").summary_ko != "관리자가 고친 설명"
    assert Category.objects.count() == 18


def test_a_rule_base_with_dangling_references_is_rejected():
    data = read_rulebase()
    data["categories"][0]["exclusions"] = [{"ko": "x", "en": "x", "goes_to": "nowhere"}]
    with pytest.raises(RuleBaseError, match="nowhere"):
        validate_rulebase(data)


@pytest.mark.parametrize(
    ("place", "message"),
    [
        ({"before": 9}, "before 9 is not the number of one of its 4 steps"),
        ({"replaces": 0}, "replaces 0 is not the number"),
        ({"before": "2"}, "before '2' is not the number"),
        ({"before": 1, "replaces": 1}, "has both before and replaces"),
    ],
)
def test_a_conditional_step_must_point_at_one_of_the_categorys_steps(place, message):
    data = read_rulebase()
    pet = next(c for c in data["categories"] if c["code"] == "pet_clear")
    pet["conditional_steps"][1] = {"tag": "contents_left", "ko": "x", "en": "x", **place}
    with pytest.raises(RuleBaseError, match=message):
        validate_rulebase(data)


def test_a_common_step_is_replaced_by_one_conditional_step_at_most():
    data = read_rulebase()
    pet = next(c for c in data["categories"] if c["code"] == "pet_clear")
    pet["conditional_steps"][1] |= {"replaces": 2}
    pet["conditional_steps"][1].pop("before", None)
    with pytest.raises(RuleBaseError, match="pet_clear: step 2 is replaced twice"):
        validate_rulebase(data)


@pytest.mark.parametrize(
    ("reroutes", "message"),
    [
        ([{"tag": "no_such_tag", "goes_to": "general"}], "reroute on unknown tag 'no_such_tag'"),
        ([{"tag": "broken", "goes_to": "nowhere"}], "reroute goes to unknown 'nowhere'"),
        ([{"tag": "broken", "goes_to": "glass"}], "goes to its own category"),
        ([{"tag": "broken"}], r"a reroute needs a tag \(or absent\) and goes_to"),
        (
            [{"tag": "broken", "absent": "broken", "goes_to": "general"}],
            r"a reroute needs a tag \(or absent\)",
        ),
        ([{"absent": "no_such_tag", "goes_to": "general"}], "reroute on unknown tag"),
        ([{"tag": "broken", "goes_to": "general", "when": "x"}], "unknown field"),
        (
            [{"tag": "broken", "goes_to": "general"}, {"tag": "broken", "goes_to": "metal"}],
            "two reroutes on 'broken'",
        ),
        ({"tag": "broken"}, "reroutes must be a list"),
    ],
)
def test_a_reroute_must_name_a_known_tag_and_another_known_category(reroutes, message):
    data = read_rulebase()
    glass = next(c for c in data["categories"] if c["code"] == "glass")
    glass["reroutes"] = reroutes
    with pytest.raises(RuleBaseError, match=message):
        validate_rulebase(data)


def test_reroutes_never_lead_back_where_they_started():
    data = read_rulebase()
    noncombustible = next(c for c in data["categories"] if c["code"] == "noncombustible")
    noncombustible["reroutes"] = [{"tag": "crushed", "goes_to": "glass"}]
    with pytest.raises(RuleBaseError, match="reroutes lead back to glass"):
        validate_rulebase(data)


def test_reroutes_are_loaded_and_an_items_own_comes_first(rulebase, rulebase_data):
    import copy

    from scans.rules import current_rulebase, load_rulebase

    data = copy.deepcopy(rulebase_data)
    general = next(c for c in data["categories"] if c["code"] == "general")
    brush = next(i for i in general["items"] if i["ko"] == "칫솔")
    brush["reroutes"] = [{"tag": "powered", "goes_to": "bulky"}]  # (not the guideline: a test)
    load_rulebase(data)
    rulebase = current_rulebase()
    general_category = rulebase.by_code["general"]

    category, hops = rulebase.reroute(general_category, "칫솔", ["powered"])
    assert (category.code, [h["tag"] for h in hops]) == ("bulky", ["powered"])
    category, hops = rulebase.reroute(general_category, "면봉", ["powered"])  # the category's
    assert category.code == "electronics"
    category, hops = rulebase.reroute(general_category, "칫솔", ["wet"])
    assert (category.code, hops) == ("general", [])
    assert Category.objects.get(code="glass").reroutes[0]["goes_to"] == "noncombustible"


# --- items, aliases and brand names ---------------------------------------------------------
def test_brand_names_are_stored_with_the_aliases_of_their_item(rulebase):
    assert "삼다수" in Item.objects.get(name_ko="생수병").aliases
    assert "프링글스" in Exclusion.objects.get(name_ko="감자칩 통", goes_to__code="general").aliases


@pytest.mark.parametrize("brands", ["삼다수", [""], [3]])
def test_a_brand_list_must_hold_names(brands):
    data = read_rulebase()
    data["categories"][0]["items"][0]["brands"] = brands
    with pytest.raises(RuleBaseError, match="brands must be a list of names"):
        validate_rulebase(data)


def test_the_same_words_name_one_bin_unless_a_brand_is_shared_on_purpose():
    # A word listed under two bins makes every hint with it an honest "which one?". That is
    # wanted for a brand sold in a can and in a PET bottle, and a mistake anywhere else.
    from collections import defaultdict

    from scans.rules import compact

    def names(entry):
        return [entry["ko"], entry["en"], *entry.get("aliases", []), *entry.get("brands", [])]

    bins_of = defaultdict(set)
    brands = set()
    for cat in read_rulebase()["categories"]:
        for text in (cat["middle_ko"], cat["middle_en"]):
            bins_of[compact(text)].add(cat["code"])
        for entry in cat.get("items") or []:
            for text in names(entry):
                bins_of[compact(text)].add(cat["code"])
        for entry in cat.get("exclusions") or []:
            for text in names(entry):
                bins_of[compact(text)].add(entry["goes_to"])
        for entry in [*(cat.get("items") or []), *(cat.get("exclusions") or [])]:
            brands.update(compact(text) for text in entry.get("brands", []))

    clashes = {word: bins for word, bins in bins_of.items() if len(bins) > 1 and word not in brands}
    assert not clashes


# --- steps for some items only, and items whose bin depends on a condition -------------------
def _category(data, code):
    return next(c for c in data["categories"] if c["code"] == code)


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ({"items": ["알루미늄 캔", "유니콘"]}, "items names unknown item '유니콘'"),
        ({"except_items": ["소주병"]}, "except_items names unknown item '소주병'"),  # glass's
        ({"items": []}, "items must list items"),
        ({"items": ["gas"], "except_items": ["cans"]}, "has both items and except_items"),
    ],
)
def test_a_step_limited_to_items_must_name_items_of_its_category(scope, message):
    data = read_rulebase()
    metal = _category(data, "metal")
    metal["steps"][0] = {key: metal["steps"][0][key] for key in ("ko", "en")} | scope
    with pytest.raises(RuleBaseError, match=message):
        validate_rulebase(data)


def test_an_item_group_names_items_of_its_category():
    data = read_rulebase()
    _category(data, "metal")["item_groups"]["gas"].append("생수병")
    with pytest.raises(RuleBaseError, match="item group 'gas' names unknown item '생수병'"):
        validate_rulebase(data)


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ([{"goes_to": "plastic", "when_ko": "x", "when_en": "x"}], "two or more bins"),
        (
            [
                {"goes_to": "plastic", "when_ko": "x", "when_en": "x"},
                {"goes_to": "plastic", "when_ko": "y", "when_en": "y"},
            ],
            "at least two different bins",
        ),
        (
            [
                {"goes_to": "paper_pack", "when_ko": "x", "when_en": "x"},
                {"goes_to": "general", "when_ko": "y", "when_en": "y"},
            ],
            "no condition names its own bin 'plastic'",
        ),
        (
            [
                {"goes_to": "plastic", "when_ko": "x", "when_en": "x"},
                {"goes_to": "nowhere", "when_ko": "y", "when_en": "y"},
            ],
            "condition goes to unknown 'nowhere'",
        ),
        (
            [
                {"goes_to": "plastic", "when_ko": "x"},
                {"goes_to": "general", "when_ko": "y", "when_en": "y", "tag": "no_such_tag"},
            ],
            "needs when_en.*condition on unknown tag 'no_such_tag'",
        ),
    ],
)
def test_an_items_conditions_name_two_bins_one_of_them_its_own(conditions, message):
    data = read_rulebase()
    cup = next(i for i in _category(data, "plastic")["items"] if i["ko"] == "테이크아웃 컵")
    cup["conditions"] = conditions
    with pytest.raises(RuleBaseError, match=message):
        validate_rulebase(data)


def test_item_scopes_and_conditions_are_stored(rulebase):
    butane = DisposalStep.objects.get(category__code="metal", text_ko__startswith="부탄가스")
    assert butane.items == ["부탄가스", "스프레이 캔", "다 쓴 스프레이 캔"]
    scrap = DisposalStep.objects.get(category__code="metal", text_ko__startswith="냄비·공구")
    assert "알루미늄 캔" in scrap.except_items and not scrap.items
    cup = Item.objects.get(name_ko="테이크아웃 컵")
    assert {c["goes_to"] for c in cup.conditions} == {"plastic", "paper_pack"}


def test_a_step_reads_the_rule_base_revision_once_and_keeps_it(rulebase, user, photo):
    """Inside a pipeline step (one_revision_per_step) the revision comes with the scan's load,
    and every use of the rules in the step takes it: no token query per use, and an edit
    made while the step runs is the next step's, not half of this one's."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scans import services
    from scans.rules import current_rulebase, one_revision_per_step
    from scans.services.state import _load_active

    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    before = current_rulebase()
    with one_revision_per_step():
        with CaptureQueriesContext(connection) as queries:
            _load_active(str(scan.id))
            first = current_rulebase()
            SituationTag.objects.first().save()  # an edit in the admin: a new token
            during = current_rulebase()
        token_reads = [q for q in queries.captured_queries if "SELECT token" in q["sql"]]
        assert token_reads == [], "the token came with the scan"
        assert first is before and during is before, "the revision the step's load read"
    assert current_rulebase().token != before.token, "outside a step, the edit is seen"

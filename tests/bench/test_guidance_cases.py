"""The evaluation set of bench/guidance_eval.py: its validator refuses a file that would measure
nothing trustworthy, and the shipped file passes it against the real rule base."""

import copy

import pytest

from scans.rules import read_rulebase
from tests.support.guidance_cases import (
    DEFAULT_CASES,
    CaseFileError,
    expected_split,
    read_cases,
    smoke_subset,
    validate_cases,
)

CATEGORIES = ["paper", "glass"]
TAGS = ["label_attached", "cap_attached", "crushed"]
FIX_TAGS = ["label_attached", "cap_attached"]  # "crushed" has no fix sentence
SMALL = {"min_cases": 6, "min_not_sure": 2, "min_per_category": 2}


def case(case_id: str, expect: list[str], **fields) -> dict:
    return {
        "id": case_id,
        "split": expected_split(case_id),
        "hint": fields.pop("hint", f"hint of {case_id}"),
        "lang": fields.pop("lang", "ko"),
        "style": fields.pop("style", "everyday" if expect else "vague"),
        "expect": expect,
        **fields,
    }


def good_cases() -> list[dict]:
    return [
        case("paper-01", ["paper"]),
        case("paper-02", ["paper", "glass"], fix=["label_attached"], note="why"),
        case("glass-01", ["glass"], fix=["cap_attached|label_attached"]),
        case("glass-02", ["glass"], hint="empty jar", lang="en", style="english"),
        case("unsure-01", [], choices=["paper", "glass"], style="multi_item"),
        case("unsure-02", [], style="injection"),
    ]


def problems_of(cases: list[dict], **limits) -> list[str]:
    with pytest.raises(CaseFileError) as caught:
        validate_cases(
            cases, categories=CATEGORIES, tags=TAGS, fix_tags=FIX_TAGS, **{**SMALL, **limits}
        )
    return caught.value.problems


def test_a_well_formed_set_passes():
    validate_cases(good_cases(), categories=CATEGORIES, tags=TAGS, fix_tags=FIX_TAGS, **SMALL)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda cs: cs[0].update(expect=["cardboard"]), "unknown category code 'cardboard'"),
        (lambda cs: cs[4].update(choices=["paper", "tin"]), "unknown category code 'tin'"),
        (lambda cs: cs[1].update(fix=["label_on"]), "unknown situation tag code 'label_on'"),
        (
            lambda cs: cs[2].update(fix=["cap_attached|cap_on"]),
            "unknown situation tag code 'cap_on'",
        ),
        (lambda cs: cs[1].update(fix=["crushed"]), "tag 'crushed' has no fix sentence"),
        (
            lambda cs: cs[1].update(id="paper-01", split=expected_split("paper-01")),
            "duplicate id 'paper-01'",
        ),
        (lambda cs: cs[0].pop("hint"), "missing field(s) hint"),
        (lambda cs: cs[0].pop("expect"), "missing field(s) expect"),
        (lambda cs: cs[0].update(bin="paper"), "unknown field(s) bin"),
        (lambda cs: cs[0].update(style="slang"), "style must be one of"),
        (lambda cs: cs[0].update(lang="jp"), "lang must be one of"),
        (lambda cs: cs[0].update(hint="   "), "hint must be non-empty text"),
        (lambda cs: cs[0].update(hint="가" * 201), "longer than 200 characters"),
        (lambda cs: cs[0].update(expect=["paper", "paper"]), "lists a code twice"),
        (lambda cs: cs[0].update(choices=["paper"]), "choices belong to not-sure cases"),
        (lambda cs: cs[5].update(style="everyday"), "a not-sure case has style"),
        (lambda cs: cs[3].update(lang="ko"), "an english case has lang en"),
        (
            lambda cs: cs[0].update(split="holdout" if cs[0]["split"] == "dev" else "dev"),
            "the split is not chosen by hand",
        ),
    ],
)
def test_each_problem_is_named(change, expected):
    cases = good_cases()
    change(cases)
    problems = problems_of(cases)
    assert any(expected in problem for problem in problems), problems


def test_too_few_cases_too_few_not_sure_and_a_thin_category_are_refused():
    problems = problems_of(good_cases(), min_cases=7, min_not_sure=3, min_per_category=3)
    assert "6 cases; at least 7 are needed" in problems
    assert "2 not-sure cases (expect: []); at least 3" in problems
    assert any("'paper' is the main bin of 2 case(s); at least 3" in p for p in problems)
    assert any("'glass' is the main bin of 2 case(s); at least 3" in p for p in problems)


def test_the_default_minimums_are_the_issue_s():
    with pytest.raises(CaseFileError) as caught:
        validate_cases(good_cases(), categories=CATEGORIES, tags=TAGS, fix_tags=FIX_TAGS)
    problems = caught.value.problems
    assert "6 cases; at least 400 are needed" in problems
    assert "2 not-sure cases (expect: []); at least 40" in problems
    assert any("at least 12 are needed" in p for p in problems)


def test_every_problem_is_reported_at_once():
    cases = good_cases()
    cases[0]["expect"] = ["cardboard"]
    cases[1]["fix"] = ["label_on"]
    assert len(problems_of(cases)) >= 2


def test_the_split_is_a_stable_hash_of_the_id():
    assert expected_split("paper-01") == expected_split("paper-01")
    splits = {expected_split(f"case-{i}") for i in range(50)}
    assert splits == {"dev", "holdout"}


@pytest.mark.django_db
def test_the_shipped_evaluation_set_is_valid_against_the_rule_base():
    data = read_rulebase()
    cases = read_cases(DEFAULT_CASES)
    validate_cases(
        cases,
        categories=[c["code"] for c in data["categories"]],
        tags=[t["code"] for t in data["situation_tags"]],
        fix_tags=[t["code"] for t in data["situation_tags"] if t.get("fix_ko")],
    )
    held_out = sum(1 for c in cases if c["split"] == "holdout") / len(cases)
    assert 0.2 < held_out < 0.4


def test_the_smoke_subset_takes_a_few_cases_of_every_bin_and_of_every_not_sure_style():
    cases = good_cases() + copy.deepcopy(good_cases())
    for index, item in enumerate(cases[6:]):
        item["id"] = f"{item['id']}-b{index}"
    subset = smoke_subset(cases, per_category=1, not_sure=1)
    assert [c["id"] for c in subset] == ["paper-01", "glass-01", "unsure-01", "unsure-02"]

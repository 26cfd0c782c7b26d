"""Every answer says one bin: for every item of the rule base, alone and with each situation
tag that matters to it, the offline answer in Korean and in English names no bin in its
headline, steps or what-to-fix lines other than the one it is answered for, except where a
line says so conditionally, negated, or of a part taken off (``grounding.directed_bins``
defines exactly which mentions send the item somewhere).

It reads the rule base file (scans/data/rulebase.yaml) through the real loader, rule lookup
(``match_rules``) and offline provider, so a step or fix added to the file that contradicts its
bin fails here.
"""

from __future__ import annotations

import pytest

from scans.providers.base import AnswerRequest
from scans.providers.bins import bin_names, directed_bins
from scans.providers.offline import OfflineAnswerProvider, rule_answer
from scans.rules import current_rulebase, match_rules

# the matcher reading text against the rule base: the real-services pass adds nothing to it
pytestmark = [pytest.mark.django_db, pytest.mark.text_only]


def relevant_tags(category, entry, rulebase) -> set[str]:
    """The tags that change an item's answer: its category's tagged steps and reroutes, and
    its own reroutes and conditions."""
    tags = {step.tag.code for step in rulebase.steps_of(category) if step.tag}
    for source in (category.reroutes, getattr(entry, "reroutes", None), entry.conditions):
        tags |= {r.get("tag") for r in source or [] if isinstance(r, dict) and r.get("tag")}
    return tags


def every_item_with_its_tags(rulebase):
    """(category, item name, tags) for every item and exclusion, as the bin it is answered
    for (an exclusion: the bin it goes to), alone and with each relevant tag."""
    for entry in [*rulebase.items, *rulebase.exclusions]:
        category = getattr(entry, "goes_to", None) or entry.category
        yield category, entry.name_ko, ()
        for tag in sorted(relevant_tags(category, entry, rulebase)):
            yield category, entry.name_ko, (tag,)


def test_no_answer_of_the_rule_base_contradicts_its_own_bin(rulebase):
    rules_of = current_rulebase()
    names = bin_names(rules_of.categories)
    provider = OfflineAnswerProvider()
    contradictions, changed, checked = [], [], 0
    for category, item, tags in every_item_with_its_tags(rules_of):
        classification = {
            "outcome": "classified",
            "category_code": category.code,
            "minor_category": item,
            "situation_tags": list(tags),
        }
        rules = match_rules(classification)
        for language in ("ko", "en"):
            # the answer as the rules word it, before the provider's own check could drop a line
            answer = rule_answer(classification, rules, language)
            lines = [answer["user_answer"], *answer["disposal_steps"], *answer["insufficiencies"]]
            for line in lines:
                other = directed_bins(line, names) - {rules["category_code"]}
                if other:
                    contradictions.append(
                        f"{category.code}/{item} {list(tags)} [{language}] → {sorted(other)}: {line}"
                    )
            shown = provider.compose(AnswerRequest(classification, rules, language=language))
            if shown.checks:  # what a user would have seen changed by the check
                changed.append((item, tags, language, shown.checks))
            checked += 1
    assert checked > 1500, "every item, with its tags, in both languages"
    assert not contradictions, "\n".join(contradictions)
    assert not changed


@pytest.mark.parametrize(
    ("text", "bins"),
    [
        # the item is sent there
        ("일반 종량제 봉투에 버려 주세요.", {"general"}),
        ("Put it in general waste.", {"general"}),
        ("떼기 어려운 코팅 종이는 일반 종량제 봉투에 넣어 주세요.", {"general"}),
        # a condition
        ("씻어도 오염이 지워지지 않으면 일반 종량제 봉투에 버려 주세요.", set()),
        ("If the dirt will not wash off, put it in a general-waste bag instead.", set()),
        ("봉투에 들어가지 않는 경우에는 대형폐기물로 신고해요.", set()),
        # negated
        ("유리병 수거함이 아니라 불연성 종량제 마대에 담아 주세요.", {"noncombustible"}),
        ("Put it with general plastics, not in the clear-PET bin.", {"plastic"}),
        ("생분해성 제품은 플라스틱류가 아니라 일반 종량제 봉투로 버려 주세요.", {"general"}),
        # a part taken off
        ("빨대와 빨대 비닐은 떼어 일반 종량제 봉투에 버려 주세요.", set()),
        ("Remove the pump head and bin it as general waste; rinse the bottle.", set()),
        # a noun ending in 면 is no condition
        ("라면 봉지는 일반 종량제 봉투에 넣어요.", {"general"}),
    ],
)
def test_which_mentions_of_a_bin_send_the_item_there(rulebase, text, bins):
    assert directed_bins(text, bin_names(current_rulebase().categories)) == bins

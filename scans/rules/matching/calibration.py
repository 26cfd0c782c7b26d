"""The matcher's calibrated confidence: the share of results of the same kind that were right."""

from __future__ import annotations

import math

# ``confidence`` is the share of results of the same kind that were right on the evaluation
# set's dev split (bench/data/guidance_cases.yaml, split dev; never the holdout). Refit with
# `python bench/guidance_eval.py --split dev --calibrate`, which prints, per bucket, how often
# the matcher's first choice was an acceptable bin, and the logistic fit of the fuzzy scores.
#
# Discrete decisions: the Wilson lower bound (z = 1) of the bucket's precision on dev, so a
# bucket seen a few times is not trusted more than its evidence; a bucket seen fewer than
# CALIBRATION_MIN_CASES times is pooled with its parent (CALIBRATION_POOL). Buckets that always
# ask (two items, vague words, a bare head word, an unknown head) have no entry: confidence 0;
# so has exact_unknown_bin (unknown words before a bin's or a material's own name, 커피컵 종이:
# n 1 on dev, too few to answer).
# Refitted 2026-12-05 on the dev split (455 cases; n and right in the comments) with the rule
# base grown by colloquial, dialect and English families (348 items, 6,835 names) and the merged
# vowels, framed bin names and state nouns. Refit whenever the rule base grows: new names move
# readings between buckets.
CALIBRATION: dict[str, float] = {
    # the alias covers the head noun, nothing else in the hint names an item (n 333, 333 right)
    "exact": 0.997,
    "exact_rerouted": 0.997,  # … and a state re-routed it (n 1: pooled with exact)
    "exact_multi_same": 0.997,  # several items, all of one bin (n 4: pooled with exact)
    "exact_other_modifier": 0.997,  # … another bin's item before it, 우유팩 빨대 (n 8: pooled)
    # … written with a merged vowel in a word the analyser does not know, 쓰래기 (n 2: pooled)
    "exact_vowel": 0.997,
    # … with words before it that name no item, brands mostly (n 31, 31 right)
    "exact_unknown_modifier": 0.969,
    # a compound split by a description, 참기름 남은 병 (n 19, 19 right)
    "exact_split": 0.95,
    # a brand known by a name ending in the head word: 삼다수 병 (n 3, 3 right: pooled)
    "family_modifier": 0.971,
    # readings that guess, each below the threshold: head word of several bins, one picked
    # fuzzily (with embeddings n 1, 1 right; with n-grams only n 2, 1 right); one edit from one
    # bin's alias, 형굉등 (n 6, 5 right: real words are one edit apart too, 포장재 and 포장지);
    # pieces of a named item, 시멘트 부스러기 (n 1, 1 right); a head word of one bin with unknown
    # words before it (n 2, 2 right); what a container holds, 곽티슈 상자 (n 2, 1 right)
    "family_fuzzy:hybrid": 0.5,
    "family_fuzzy:ngram": 0.211,
    "typo": 0.637,
    "part_of": 0.5,
    "family_single": 0.667,
    "family_content": 0.211,
    # a material right before the head that may be another bin's (스텐 빨대; none on dev with
    # this rule base, n 4, 3 right with the earlier one)
    "exact_conflict": 0.5,
    # without Kiwi: a normalized alias found as a substring, the longest (fitted with the
    # analyser switched off; n 368, 361 right)
    "substring": 0.972,
}
CALIBRATION_MIN_CASES = 10
# Small buckets borrow the evidence of the reading they are a case of: only readings that
# rest on an alias of the rule base, never the guesses above.
CALIBRATION_POOL = {
    "exact_rerouted": "exact",
    "exact_multi_same": "exact",
    "exact_other_modifier": "exact",
    "exact_vowel": "exact",
    "exact_split": "exact_unknown_modifier",
    "family_modifier": "exact_unknown_modifier",
}
# Fuzzy matches: logistic regression of "right" on the blended score and the gap to the
# runner-up, per method (hybrid: n-grams + embeddings; ngram: n-grams only), fitted on the
# fuzzy results of the dev split, weak ones included (those below SCAN_MATCH_MIN_SCORE or
# closer than SCAN_MATCH_MIN_GAP always ask): hybrid n 7, 4 right (refitted with the grown rule
# base); ngram (fitted with SCAN_TEXT_MATCHER=ngram on the earlier rule base) n 13. Few cases: with this rule base a hint rarely falls through
# to fuzzy scoring, and no fuzzy reading reaches 0.9. confidence = 1 / (1 + exp(-(a·score +
# b·gap + c))).
FUZZY_LOGISTIC: dict[str, tuple[float, float, float]] = {
    "hybrid": (1.16, 0.11, -0.59),
    "ngram": (1.41, 0.43, -1.1),
}


def calibrated(bucket: str, score: float = 0.0, gap: float = 0.0, method: str = "") -> float:
    if bucket in ("fuzzy", "fuzzy_weak"):
        a, b, c = FUZZY_LOGISTIC.get(method, FUZZY_LOGISTIC["ngram"])
        return 1.0 / (1.0 + math.exp(-(a * score + b * gap + c)))
    return CALIBRATION.get(f"{bucket}:{method}", CALIBRATION.get(bucket, 0.0))

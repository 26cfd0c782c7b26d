"""The benchmarks' harnesses, in smoke mode: they run, measure and report (timing is not
judged here; see docs/benchmarks.md for the figures)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scans.rules import read_rulebase
from tests.fakes.model import FakeModel, start_fake_openai

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, env: dict | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    result_line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(result_line.removeprefix("RESULT "))


def test_api_latency_harness_measures_saturation_one_client_and_offered_loads():
    result = run_bench("api_latency.py")
    endpoints = ("bare", "bare_upload", "floor_parse", "floor_store", "floor_publish", "scans")
    for name in endpoints:
        assert result[name]["requests"] > 0 and result[name]["errors"] == 0, name
        assert 0 < result[name]["p50_ms"] <= result[name]["p99_ms"]
        assert result[name]["of_bare"] > 0
    assert result["ratio"] == result["scans"]["of_bare"] > 0
    one = result["one_client"]
    assert one["requests"] > 0 and one["errors"] == 0 and 0 < one["p50_ms"] <= one["p99_ms"]
    # the open loop offers 25, 50 and 75 % of the upload's saturation, each sent on time
    saturation = result["saturation"]
    assert saturation["scans"] == result["scans"]["req_per_s"] > 0
    assert saturation["floor"] == result["floor_publish"]["req_per_s"] > 0
    assert saturation["of_floor"] == saturation["scans"] / saturation["floor"]
    assert set(result["open_loop"]) == {"25", "50", "75"}
    for level, row in result["open_loop"].items():
        assert row["offered_per_s"] == pytest.approx(int(level) / 100 * saturation["scans"])
        assert row["requests"] > 0 and row["errors"] == 0, level
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["start_lag_p99_ms"] >= 0
    floor_open = result["floor_open_50"]
    assert floor_open["requests"] > 0 and floor_open["errors"] == 0
    assert floor_open["offered_per_s"] == result["open_loop"]["50"]["offered_per_s"]
    targets = result["targets"]
    assert set(targets) == {"p99_one_client", "p99_half_load", "saturation_of_floor"}
    assert targets["p99_one_client"]["value"] == one["p99_ms"]
    assert targets["p99_half_load"]["value"] == result["open_loop"]["50"]["p99_ms"]
    assert targets["saturation_of_floor"]["value"] == saturation["of_floor"]
    for verdict in targets.values():
        assert verdict["pass"] == (
            verdict["value"] >= verdict["target"]
            if verdict is targets["saturation_of_floor"]
            else verdict["value"] <= verdict["target"]
        )
    # what the run accepted is gone again: every upload's scan, every floor message
    cleaned = result["cleaned_up"]
    uploads = result["scans"]["requests"] + one["requests"]
    uploads += sum(row["requests"] for row in result["open_loop"].values())
    assert cleaned["scans_deleted"] >= uploads
    assert cleaned["purged_bench.floor"] >= result["floor_publish"]["requests"]


def test_pipeline_overhead_harness_alternates_scans_and_raw_celery_chains_in_rounds():
    result = run_bench("pipeline_overhead.py")
    postgres = result["postgres"]
    assert len(result["rounds"]) == 2  # pipeline, raw, pipeline, raw
    for figures in result["rounds"]:
        for name in ("scans", "raw"):
            phase = figures[name]
            assert phase["completed"] == phase["count"] > 0, phase
            assert phase["failed"] == 0 and not phase["timed_out"] and phase["per_s"] > 0
        assert figures["ratio"] == figures["scans"]["per_s"] / figures["raw"]["per_s"]
        # distinct photos: every scan made both provider calls, none was a vision-cache hit
        calls = figures["provider_calls"]
        assert calls["vision"] == calls["answer"] == figures["scans"]["count"]
        # CPU from /proc: the workers ran the tasks, this process created the scans
        per_scan, per_chain = figures["scans"]["per_scan"], figures["raw"]["per_chain"]
        assert per_scan["workers_cpu_ms"] > 0 and per_scan["intake_cpu_ms"] > 0
        assert per_chain["workers_cpu_ms"] > 0 and per_chain["postgres_cpu_ms"] is None
        if postgres:  # pg_stat: every scan's steps commit and write rows on the worker side
            assert per_scan["postgres_cpu_ms"] > 0
            assert per_scan["worker_transactions"] >= 4 and per_scan["worker_rows"] >= 4
        else:
            assert per_scan["postgres_cpu_ms"] is None and per_scan["worker_rows"] is None
        for side in ("scans", "raw"):
            one = figures["latency"][side]
            assert len(one["ms"]) == one["count"] > 0
            assert 0 < one["p50_ms"] <= one["p99_ms"]
        one_scan = figures["latency"]["scans"]
        # the upload's own INSERT at least, in a transaction of its own
        assert one_scan["intake_transactions_per_scan"] >= 1 <= one_scan["intake_rows_per_scan"]
        assert any(leg.endswith(" run") for leg in one_scan["hops_ms"]), one_scan["hops_ms"]
    medians = result["medians"]
    assert result["ratio"] == medians["ratio"] > 0
    assert medians["raw_p50_ms"] > 0 and medians["scans_p50_ms"] > 0
    assert set(result["targets"]) == {
        "worker_transactions_per_scan", "worker_rows_per_scan", "cpu_ms_per_scan", "ratio",
        "p50_ms", "p99_ms",
    }  # fmt: skip
    judged = {name for name, target in result["targets"].items() if target["met"] is not None}
    pg_only = {"worker_transactions_per_scan", "worker_rows_per_scan", "cpu_ms_per_scan"}
    assert judged == (set(result["targets"]) - (set() if postgres else pg_only))


def test_io_concurrency_harness_measures_each_pool():
    result = run_bench("io_concurrency.py")
    for pool in ("prefork", "threads", "gevent"):
        figures = result["pools"][pool]
        if pool == "gevent" and "skipped" in figures:
            continue  # gevent is optional; the harness says so instead of failing
        assert "error" not in figures, figures
        assert figures["completed"] > 0 and figures["failed"] == 0 and figures["drained"]
        assert 1 <= figures["in_flight"] <= figures["concurrency"]
        assert figures["theoretical_scans_per_s"] > 0 and figures["worker_rss_mb"] > 0
        # the theory's two slow calls a scan: no answer from the cache
        calls = figures["provider_calls"]
        assert calls["vision"] == calls["answer"] == figures["created"], calls
        assert figures["calls_per_scan"] == 2
    # the raw-Celery anchor on the threads pool's slots, and the scans measured against it
    raw = result["raw"]["threads"]
    assert raw["concurrency"] == result["pools"]["threads"]["concurrency"]
    assert raw["completed"] > 0 and raw["failed"] == 0 and raw["drained"]
    assert raw["chains_per_s"] > 0 and raw["theoretical_chains_per_s"] > 0
    threads = result["pools"]["threads"]
    assert threads["of_raw"] == threads["scans_per_s"] / raw["chains_per_s"]
    assert threads["of_slot_theory"] > 0


def test_cost_harness_counts_calls_at_the_fake_and_cost_in_the_db():
    result = run_bench("cost.py")
    assert result["completed"] == result["scans"] and result["failed"] == 0
    assert result["vision_calls"] == result["photos"], "the vision cache cuts calls per photo"
    assert result["cache_hits"] == result["scans"] - result["photos"] and result["pass"]
    # the answer cache: one paid answer per category (the fake sets no tags), the rest hits
    assert result["answer_calls"] == result["scans"] - result["answer_cache_hits"]
    assert 0 < result["answer_calls"] <= result["categories"] < result["scans"]
    assert result["tokens"]["input_tokens"] > 0 and result["cost_usd"] > 0
    assert result["paid_calls_in_db"] == {
        "vision": result["photos"],
        "answer": result["answer_calls"],
    }


GUIDANCE_FIGURES = {"n", "correct", "asked", "wrong", "errors", "correct_pct", "asked_pct",
                    "wrong_pct", "fix", "choices"}  # fmt: skip


def check_guidance_figures(figures: dict) -> None:
    assert set(figures) == GUIDANCE_FIGURES, figures
    assert figures["correct"] + figures["wrong"] + figures["errors"] <= figures["n"]
    assert figures["asked"] + figures["wrong"] + figures["errors"] <= figures["n"]
    for part, hit in (("fix", "named"), ("choices", "right")):
        assert set(figures[part]) == {"n", hit, "pct"} and figures[part][hit] <= figures[part]["n"]


def check_guidance_result(result: dict, provider: str) -> None:
    assert result["provider"] == provider and result["smoke"] is True
    assert result["cases_in_file"] >= 400 and 0 < result["cases"] == result["totals"]["n"]
    check_guidance_figures(result["totals"])
    assert result["totals"]["errors"] == 0
    categories = [c["code"] for c in read_rulebase()["categories"]]
    # the smoke subset covers every category and the not-sure cases
    assert list(result["by_category"]) == [*categories, "(not sure)"]
    for table in ("by_category", "by_lang", "by_style", "by_split"):
        assert sum(g["n"] for g in result[table].values()) == result["cases"], table
        for figures in result[table].values():
            check_guidance_figures(figures)
    assert set(result["by_split"]) <= {"dev", "holdout"}
    buckets = result["calibration"]["buckets"]
    assert len(buckets) == 4 and all(b["right"] <= b["n"] for b in buckets)
    assert result["calibration"]["confident"]["threshold"] == 0.8
    assert set(result["targets"]) == {"correct", "wrong", "choices_right"}
    assert all(set(t) == {"target", "value", "pass"} for t in result["targets"].values())
    assert result["pass"] == all(t["pass"] for t in result["targets"].values())


def test_guidance_eval_harness_scores_the_offline_provider_per_category_language_and_style():
    result = run_bench("guidance_eval.py")
    check_guidance_result(result, "offline")
    assert result["cost"] is None  # the offline provider costs nothing


def test_guidance_eval_harness_runs_the_openai_provider_and_reports_its_cost():
    categories = [
        {"code": c["code"], "major_ko": c["major_ko"], "middle_ko": c["middle_ko"], "item": None}
        for c in read_rulebase()["categories"]
    ]
    fake = start_fake_openai(FakeModel(categories))
    try:
        env = {**os.environ, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake.base_url}
        result = run_bench("guidance_eval.py", "--provider", "openai", env=env)
    finally:
        fake.stop()
    check_guidance_result(result, "openai")
    cost = result["cost"]
    # every case made one vision call; the fake classifies every hint, so each got an answer:
    # paid, or from the answer cache (the fake puts every case in one category, without tags)
    assert cost["calls"]["vision"] == result["cases"]
    assert cost["calls"]["answer"] + cost["answer_cache_hits"] == result["cases"]
    assert cost["answer_cache_hits"] > 0
    assert cost["tokens"]["input_tokens"] > 0 and cost["cost_per_scan_usd"] > 0


def test_growth_harness_times_each_operation_at_two_sizes_and_judges_the_ratio():
    result = run_bench("growth.py")
    small, large = (str(size) for size in result["sizes"])
    assert result["runs"][small]["counts"]["scans"] == 200
    assert result["runs"][large]["counts"]["scans"] == 2_000
    assert result["runs"][large]["counts"]["attempts"] == 4_000  # two a scan
    operations = set(result["runs"][small]["ms"])
    assert operations == set(result["verdicts"]) and "stream_poll" in operations
    assert all(ms > 0 for run in result["runs"].values() for ms in run["ms"].values())
    for verdict in result["verdicts"].values():
        assert verdict["pass"] == (verdict["ratio"] <= 1.5)


def test_list_growth_harness_times_a_short_and_a_long_history_first_and_last_page():
    result = run_bench("list_growth.py")
    assert result["sizes"] == [100, 2_000] and result["scans_removed"] == 2_100
    for size in ("100", "2000"):
        assert set(result["ms"][size]) == {
            "api_first", "api_last", "html_first", "html_last", "api_by_number", "sql_offset_last"
        }  # fmt: skip
        assert all(ms > 0 for ms in result["ms"][size].values())
    judged = {name: v for name, v in result["verdicts"].items() if v["pass"] is not None}
    assert set(judged) == {"api_first", "api_last", "html_first", "html_last"}
    for verdict in judged.values():
        assert verdict["pass"] == (verdict["ratio"] <= 1.5)
    assert result["pass"] == all(v["pass"] for v in judged.values())

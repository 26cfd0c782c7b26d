"""The benchmarks' harnesses, in smoke mode: they run, measure and report (timing is not
judged here; see docs/benchmarks.md for the figures)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str) -> dict:
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result_line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(result_line.removeprefix("RESULT "))


def test_api_latency_harness_measures_both_endpoints():
    result = run_bench("api_latency.py")
    for name in ("bare", "scans"):
        assert result[name]["requests"] > 0 and result[name]["errors"] == 0
        assert 0 < result[name]["p50_ms"] <= result[name]["p99_ms"]
    assert result["ratio"] > 0

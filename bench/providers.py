"""Zero-latency fake providers for bench/pipeline_overhead.py (``--providers fake``, the default).

They answer inside the worker at once, as the issue's "zero-latency fake providers" asks:
what a scan costs beyond Celery's chain is then the pipeline's own work (photo preparation,
state writes, the ledger, rule matching, cost accounting, the event), not an HTTP client and a
fake server sharing the same two cores. The answers have the shape of FakeModel's (a
category picked by a hash of the photo, guidance from the matched rules) and carry usage, so
the cost accounting runs as for a paid call. ``--providers http`` measures the real OpenAI
client against the fake OpenAI server instead.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

from scans.providers.base import (
    Answer,
    AnswerRequest,
    Classification,
    Usage,
    VisionRequest,
)

MODEL = "bench-zero-latency"


@cache
def _categories() -> list[dict[str, Any]]:
    from tests.fakes.model import rule_categories

    return rule_categories()


def _usage(input_tokens: int, output_tokens: int) -> Usage:
    return Usage(model=MODEL, input_tokens=input_tokens, output_tokens=output_tokens)


class ZeroLatencyVisionProvider:
    name = "bench-fake"

    def classify(self, request: VisionRequest) -> Classification:
        categories = _categories()
        digest = hashlib.sha256(request.image).digest()
        category = categories[int.from_bytes(digest[:4], "big") % len(categories)]
        return Classification(
            outcome="classified",
            major_category=category["major_ko"],
            middle_category=category["middle_ko"],
            minor_category=category["item"],
            category_code=category["code"],
            confidence=0.9,
            user_input=request.hint,
            provider=self.name,
            usage=_usage(1200, 60),
        )


class ZeroLatencyAnswerProvider:
    name = "bench-fake"

    def compose(self, request: AnswerRequest) -> Answer:
        rules = request.rules or {}
        steps = [step for step in rules.get("steps") or [] if step] or ["배출 요령을 따라 주세요."]
        return Answer(
            disposal_steps=steps,
            insufficiencies=[fix["fix"] for fix in rules.get("fixes") or [] if fix.get("fix")],
            user_answer=f"{rules.get('middle') or '분리배출'}(으)로 배출해요. {steps[0]}",
            provider=self.name,
            usage=_usage(1400, 160),
        )

"""A fake OpenAI model for the fake server (tests/fakes/openai_server.py): it answers the app's
two structured calls like a model would, counts the calls in flight and imitates usage and
prefix caching. The benchmarks drive the app through it (bench/ imports it; tests never import
bench/)."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from typing import Any

VISION_SCHEMA = "waste_classification"
ANSWER_SCHEMA = "disposal_answer"


class CallStats:
    """Provider calls as the fake sees them: counts, calls in flight (current, maximum) and
    the time-average in flight over a measurement window, per schema and in total."""

    KINDS = ("vision", "answer", "all")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.count = dict.fromkeys(self.KINDS, 0)
            self.current = dict.fromkeys(self.KINDS, 0)
            self.peak = dict.fromkeys(self.KINDS, 0)
            self._area = dict.fromkeys(self.KINDS, 0.0)
            self._last = time.monotonic()
            self._window: list[float | None] = [None, None]

    def _advance(self) -> None:  # under the lock
        now = time.monotonic()
        start, end = self._window
        if start is not None and end is None:
            for kind in self.KINDS:
                self._area[kind] += self.current[kind] * (now - max(self._last, start))
        self._last = now

    def enter(self, kind: str) -> None:
        with self._lock:
            self._advance()
            for key in (kind, "all"):
                self.count[key] += 1
                self.current[key] += 1
                self.peak[key] = max(self.peak[key], self.current[key])

    def leave(self, kind: str) -> None:
        with self._lock:
            self._advance()
            for key in (kind, "all"):
                self.current[key] -= 1

    def open_window(self) -> None:
        with self._lock:
            self._advance()
            self._window = [time.monotonic(), None]
            self._area = dict.fromkeys(self.KINDS, 0.0)

    def close_window(self) -> dict[str, float]:
        """Average calls in flight per kind between open_window and now."""
        with self._lock:
            self._advance()
            start = self._window[0]
            now = time.monotonic()
            self._window[1] = now
            span = (now - start) if start is not None else 0.0
            return {kind: (self._area[kind] / span if span else 0.0) for kind in self.KINDS}


def _tokens(text: str) -> int:
    """A rough token count: ~3 UTF-8 bytes a token (Korean is 3 bytes a syllable, English
    ~4 characters a token; the prompts mix both)."""
    return math.ceil(len(text.encode("utf-8")) / 3)


IMAGE_TOKENS_LOW_DETAIL = 85  # OpenAI's fixed cost of a detail=low image (GPT-4o class)
PREFIX_CACHE_MIN_TOKENS = 1024  # prompts shorter than this are never served from the cache
PREFIX_CACHE_STEP = 128  # cached prefixes grow in 128-token increments


class FakeModel:
    """Answers the app's two structured calls like a model would, through FakeOpenAI.

    - vision: a valid classification; the category is picked from the rule base by a hash of
      the photo, so a given photo always gets the same answer and answers vary across photos;
    - answer: guidance built from the rules the app sent (the disposal steps it asked about).

    Usage is estimated from what was sent (see _tokens; 85 tokens per low-detail image), and
    prefix caching is imitated: the system message of a prompt_cache_key seen before is
    billed as cached, in 128-token steps, once it is at least 1024 tokens long. Each call can
    be delayed (``delay`` seconds) and is counted in ``stats``.
    """

    def __init__(self, categories: list[dict[str, Any]], delay: float = 0.0) -> None:
        self.categories = categories
        self.delay = delay
        self.stats = CallStats()
        self._seen_prefixes: set[str] = set()
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget calls and the prompt cache (a cold start, as for a new deployment)."""
        self.stats.reset()
        with self._lock:
            self._seen_prefixes.clear()

    def install(self, fake) -> None:
        from tests.fakes.openai_server import Reply, ok

        model = self

        class Tracked(Reply):
            """Counted while in flight; waits ``delay``, then answers for its schema."""

            def __init__(self, kind: str) -> None:
                self.kind = kind

            def send(self, handler, body: dict) -> None:
                model.stats.enter(self.kind)
                try:
                    if model.delay:
                        handler.fake.pause(model.delay)
                    build = model._vision if self.kind == "vision" else model._answer
                    content = build(body)
                    ok(content, **model._usage(body, content)).send(handler, body)
                finally:
                    model.stats.leave(self.kind)

        vision, answer = Tracked("vision"), Tracked("answer")
        fake.set_default_for_schema(VISION_SCHEMA, lambda body: vision)
        fake.set_default_for_schema(ANSWER_SCHEMA, lambda body: answer)

    # what the "model" says
    def _vision(self, body: dict) -> dict:
        user = body["messages"][-1]["content"]
        image_url = next(part for part in user if part.get("type") == "image_url")
        digest = hashlib.sha256(image_url["image_url"]["url"].encode()).digest()
        category = self.categories[int.from_bytes(digest[:4], "big") % len(self.categories)]
        return {
            "minor_category": category["item"],
            "minor_category_en": category.get("item_en"),
            "major_category": category["major_ko"],
            "middle_category": category["middle_ko"],
            "category_code": category["code"],
            "situation_tags": [],
            "confidence": 0.9,
            "alternatives": [],
            "user_input": "",
        }

    def _answer(self, body: dict) -> dict:
        """The rules' own steps and fixes, and a headline naming the category's bin."""
        try:
            request = json.loads(body["messages"][-1]["content"])
        except (KeyError, TypeError, ValueError):
            request = {}
        rules = request.get("rules") or {}
        middle = (request.get("category") or {}).get("middle") or "분리배출"
        steps = [step for step in rules.get("steps") or [] if step] or ["배출 요령을 따라 주세요."]
        return {
            "disposal_steps": steps,
            "insufficiencies": [fix["fix"] for fix in rules.get("fixes") or [] if fix.get("fix")],
            "user_answer": f"{middle}(으)로 배출해요. {steps[0]}",
        }

    def _usage(self, body: dict, content: dict) -> dict[str, int]:
        messages = body.get("messages") or []
        system = messages[0].get("content", "") if messages else ""
        prompt = _tokens(system) if isinstance(system, str) else 0
        for message in messages[1:]:
            parts = message.get("content")
            if isinstance(parts, str):
                prompt += _tokens(parts)
            else:
                for part in parts or []:
                    if part.get("type") == "text":
                        prompt += _tokens(part.get("text", ""))
                    elif part.get("type") == "image_url":
                        prompt += IMAGE_TOKENS_LOW_DETAIL
        system_tokens = _tokens(system) if isinstance(system, str) else 0
        key = f"{body.get('prompt_cache_key')}|{hashlib.sha256(str(system).encode()).hexdigest()}"
        with self._lock:
            seen = key in self._seen_prefixes
            self._seen_prefixes.add(key)
        cached = 0
        if seen and system_tokens >= PREFIX_CACHE_MIN_TOKENS:
            cached = system_tokens // PREFIX_CACHE_STEP * PREFIX_CACHE_STEP
        completion = _tokens(json.dumps(content, ensure_ascii=False))
        return {"prompt_tokens": prompt, "cached_tokens": cached, "completion_tokens": completion}


def rule_categories() -> list[dict[str, Any]]:
    """The rule base's categories with one item name each, for FakeModel (after load_rules)."""
    from scans.models import Category, Item

    categories = []
    for category in Category.objects.order_by("code"):
        item = Item.objects.filter(category=category).order_by("id").first()
        categories.append(
            {
                "code": category.code,
                "major_ko": category.major_ko,
                "middle_ko": category.middle_ko,
                "item": item.name_ko if item else None,
                "item_en": item.name_en if item else None,
            }
        )
    return categories


def start_fake_openai(model: FakeModel):
    """The fake OpenAI server of tests/fakes, answering through ``model``."""
    from tests.fakes import openai_server

    # A burst of a hundred new connections must not overflow the listen backlog (default 5),
    # or the kernel drops SYNs and the client waits a second to retry.
    openai_server._Server.request_queue_size = 1024
    fake = openai_server.FakeOpenAI().start()
    model.install(fake)
    return fake

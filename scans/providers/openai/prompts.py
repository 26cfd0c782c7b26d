"""The OpenAI provider's prompts and JSON schemas: prompt files, the rendered vision system
message, prompt cache keys, the strict schemas of both steps and their validation."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from django.core.exceptions import ImproperlyConfigured

UNCLASSIFIED_CODE = "unclassified"
UNCLASSIFIED_NAME = "미분류"
VISION_SCHEMA_NAME = "waste_classification"
ANSWER_SCHEMA_NAME = "disposal_answer"
PROMPTS_DIR = Path(__file__).resolve().parent.parent.parent / "prompts"

# A tag's line in the vision prompt quotes this many of its trigger and negation phrases.
TAG_PHRASES, TAG_NEGATIONS = 4, 2


# --- prompts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """A prompt file: its version (reported as Usage.prompt_version) and its text."""

    version: str
    text: str


_VERSION_LINE = re.compile(r"version:\s*(\S+)")


@functools.cache
def load_prompt(name: str) -> Prompt:
    """Read ``scans/prompts/<name>.txt``; its first line is ``version: <id>``."""
    path = PROMPTS_DIR / f"{name}.txt"
    first, _, body = path.read_text(encoding="utf-8").partition("\n")
    match = _VERSION_LINE.fullmatch(first.strip())
    if match is None:
        raise ImproperlyConfigured(f"{path} must start with a 'version: <id>' line")
    return Prompt(version=match.group(1), text=body.strip() + "\n")


def _quoted(phrases: list[str], at_most: int) -> str:
    return ", ".join(f'"{p}"' for p in phrases[:at_most]) or "-"


def render_vision_prompt(prompt: Prompt, taxonomy: dict[str, Any]) -> str:
    """The vision system message: instructions with the taxonomy, the "not this bin" list and
    the situation tags filled in, all from the rule base at run time.

    One line per entry rather than YAML or JSON: fewer tokens, and the rendering depends only
    on the rule base's content and order, so equal rule bases give equal bytes (cache hits).
    A tag's line says what it means (its names), when to set it (the first few phrases of the
    rule base's triggers) and when not (its negations).
    """
    categories = "\n".join(
        f"- {c['code']} | {c['major_ko']} ({c['major_en']}) > {c['middle_ko']} ({c['middle_en']})"
        f" | {', '.join(c['items'])}"
        for c in taxonomy["categories"]
    )
    exclusions = "\n".join(
        f"- {e['ko']} ({e['en']}) | not in: {e['category']} → goes to: {e['goes_to']}"
        for e in taxonomy["exclusions"]
    )
    tags = "\n".join(
        f"- {t['code']} | {t['ko']} / {t['en']} | {_quoted(t['triggers'], TAG_PHRASES)}"
        f" | {_quoted(t['negations'], TAG_NEGATIONS)}"
        for t in taxonomy["situation_tags"]
    )
    return (
        prompt.text.replace("{{TAXONOMY}}", categories)
        .replace("{{EXCLUSIONS}}", exclusions)
        .replace("{{SITUATION_TAGS}}", tags)
    )


def cache_key(prompt: Prompt, system: str) -> str:
    """Route calls with the same static prefix together; a rule base edit gets a new key."""
    return f"eco2-{prompt.version}-{hashlib.sha256(system.encode()).hexdigest()[:12]}"


def fingerprint(value: Any) -> str:
    """A short hash of a JSON-ready value (a schema, a prompt): what a cache key names."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- schemas --------------------------------------------------------------------------------
def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def vision_schema(taxonomy: dict[str, Any]) -> dict[str, Any]:
    """The strict JSON schema of a classification; enums come from the rule base.

    Properties are generated in this order, so the model names the item before it picks the
    category (as the prompt asks), weighs its confidence and the alternatives after, and the
    echo of the hint comes last. No maxItems (not every server's strict mode has it): the
    alternatives are cut to MAX_CANDIDATES here.
    """
    categories = taxonomy["categories"]
    codes = [c["code"] for c in categories]
    return {
        "type": "object",
        "properties": {
            "minor_category": {"type": ["string", "null"]},
            "minor_category_en": {"type": ["string", "null"]},
            "major_category": {
                "type": "string",
                "enum": [*_unique([c["major_ko"] for c in categories]), UNCLASSIFIED_NAME],
            },
            "middle_category": {
                "type": "string",
                "enum": [*_unique([c["middle_ko"] for c in categories]), UNCLASSIFIED_NAME],
            },
            "category_code": {"type": "string", "enum": [*codes, UNCLASSIFIED_CODE]},
            "situation_tags": {
                "type": "array",
                "items": {
                    "type": "string",
                    "enum": [t["code"] for t in taxonomy["situation_tags"]],
                },
            },
            "confidence": {"type": "number"},
            "alternatives": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "category_code": {"type": "string", "enum": codes},
                        "item": {"type": "string"},
                        "item_en": {"type": "string"},
                        "confidence": {"type": "number"},
                    },
                    "required": ["category_code", "item", "item_en", "confidence"],
                    "additionalProperties": False,
                },
            },
            "user_input": {"type": "string"},
        },
        "required": [
            "minor_category",
            "minor_category_en",
            "major_category",
            "middle_category",
            "category_code",
            "situation_tags",
            "confidence",
            "alternatives",
            "user_input",
        ],
        "additionalProperties": False,
    }


ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "disposal_steps": {"type": "array", "items": {"type": "string"}},
        "insufficiencies": {"type": "array", "items": {"type": "string"}},
        "user_answer": {"type": "string"},
    },
    "required": ["disposal_steps", "insufficiencies", "user_answer"],
    "additionalProperties": False,
}


def schema_problem(schema: dict[str, Any], value: Any) -> str | None:
    """What is wrong with ``value`` under ``schema`` (the first error, with its path), or None."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    return None if error is None else f"{error.json_path}: {error.message}"

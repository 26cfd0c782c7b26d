"""The OpenAI provider: GPT vision with structured output, and guidance written from the rules.

Both steps call ``chat.completions.create`` with a strict JSON schema. The schemas' enums are
generated from the rule base, and every reply is validated again here against the same schema:
the server is not trusted to have enforced it (an OpenAI-compatible server may not).

The static part of each prompt (instructions, taxonomy, exclusions, tag definitions, worked
examples) is the system message and is rendered byte-identically on every call; the variable
part (hint and photo; language, category, tags and rules) comes last. OpenAI caches prompts by
prefix, so the long static part is billed at the cached rate on every call after the first.
Both calls run at temperature 0: their results are cached (services), so a random draw would
be frozen for every later scan.

Vision: below OPENAI_MIN_CONFIDENCE the model's pick is not an answer but a question
(``unclassified``, reason ``low_confidence``, with its candidates). Answer: written from the
matched rules in the scan's language, then checked against them (``grounding``); its cache key
(``answer_cache_key``) is everything it depends on, which is why it sees no hint and no item.

Errors become :class:`ProviderError` (permanent) or :class:`TransientProviderError` (retry
later) with a stable code and a short message a user can read. The SDK's own retries are off:
Celery retries the step, and two retry layers would multiply paid attempts.
"""

from .answer import (
    ANSWER_MAX_OUTPUT_TOKENS,
    UNCLASSIFIED_TEXTS,
    OpenAIAnswerProvider,
    answer_payload,
    language_name,
    unclassified_answer,
)
from .client import OPENAI, TEMPERATURE, build_client, shared_client, translate_error
from .cost import cost_usd
from .prompts import (
    ANSWER_SCHEMA,
    ANSWER_SCHEMA_NAME,
    PROMPTS_DIR,
    TAG_NEGATIONS,
    TAG_PHRASES,
    UNCLASSIFIED_CODE,
    UNCLASSIFIED_NAME,
    VISION_SCHEMA_NAME,
    Prompt,
    cache_key,
    fingerprint,
    load_prompt,
    render_vision_prompt,
    schema_problem,
    vision_schema,
)
from .vision import (
    MAX_CANDIDATES,
    MINOR_MAX_CHARS,
    VISION_MAX_OUTPUT_TOKENS,
    OpenAIVisionProvider,
    candidates_of,
    min_confidence,
)

__all__ = [
    "ANSWER_MAX_OUTPUT_TOKENS",
    "ANSWER_SCHEMA",
    "ANSWER_SCHEMA_NAME",
    "MAX_CANDIDATES",
    "MINOR_MAX_CHARS",
    "OPENAI",
    "PROMPTS_DIR",
    "TAG_NEGATIONS",
    "TAG_PHRASES",
    "TEMPERATURE",
    "UNCLASSIFIED_CODE",
    "UNCLASSIFIED_NAME",
    "UNCLASSIFIED_TEXTS",
    "VISION_MAX_OUTPUT_TOKENS",
    "VISION_SCHEMA_NAME",
    "OpenAIAnswerProvider",
    "OpenAIVisionProvider",
    "Prompt",
    "answer_payload",
    "build_client",
    "cache_key",
    "candidates_of",
    "cost_usd",
    "fingerprint",
    "language_name",
    "load_prompt",
    "min_confidence",
    "render_vision_prompt",
    "schema_problem",
    "shared_client",
    "translate_error",
    "unclassified_answer",
    "vision_schema",
]

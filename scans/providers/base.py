"""The provider interface for the vision and answer steps.

A provider turns plain inputs into plain results: it knows nothing about Celery or the Scan row,
so the same provider serves the worker, the CLI and the tests. Results are JSON-ready
dataclasses; they are stored on the Scan as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..errors import CodedError


class ProviderError(CodedError):
    """A provider could not produce a result."""

    code = "provider_error"
    retryable = False


class TransientProviderError(ProviderError):
    """Worth another attempt later (rate limit, timeout, 5xx)."""

    code = "provider_unavailable"
    retryable = True

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


@dataclass
class Usage:
    """What one provider call cost: tokens as the API reported them, and the price in USD."""

    model: str
    input_tokens: int = 0
    cached_input_tokens: int = 0  # the part of input_tokens served from the prompt cache
    output_tokens: int = 0
    cost_usd: float = 0.0
    prompt_version: str = ""


def rules_language(language: str) -> str:
    """The rule base's texts are Korean and English: other languages get the English ones."""
    return "ko" if (language or "ko").split("-")[0] == "ko" else "en"


@dataclass(frozen=True)
class VisionRequest:
    """The prepared photo (re-encoded JPEG, metadata stripped) and the user's hint."""

    image: bytes
    hint: str = ""
    # the scan's language: what a provider says in words (the offline note) is written in it
    language: str = "ko"


@dataclass
class Classification:
    """What the vision step saw, in the Korean taxonomy.

    ``category_code`` is the provider's claim; the rule step re-validates every field against
    the rule base before anything is looked up.
    """

    outcome: str  # "classified" | "unclassified"
    major_category: str | None = None
    middle_category: str | None = None
    minor_category: str | None = None
    category_code: str | None = None
    situation_tags: list[str] = field(default_factory=list)
    confidence: float = 0.0
    user_input: str = ""
    provider: str = ""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    # When not sure: the items it may be, best first (at most 4), each
    # {"category_code", "item", "item_en", "score"}; what a clarification offers.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None  # None for providers that cost nothing (offline)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AnswerRequest:
    classification: dict[str, Any]
    rules: dict[str, Any] | None
    hint: str = ""
    language: str = "ko"  # the scan's language (Scan.language): the answer is written in it


@dataclass
class Answer:
    disposal_steps: list[str]
    insufficiencies: list[str]
    user_answer: str
    provider: str = ""
    # What a provider's own checks changed, for staff (e.g. OpenAI's grounding check).
    checks: dict[str, Any] = field(default_factory=dict)
    usage: Usage | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VisionProvider(Protocol):
    name: str
    # False for a provider that reads only the hint (offline): the upload page then asks for a
    # hint, and a scan without one says the photo alone cannot be recognised here
    sees_photos: bool

    def classify(self, request: VisionRequest) -> Classification: ...


class AnswerProvider(Protocol):
    name: str

    def compose(self, request: AnswerRequest) -> Answer: ...

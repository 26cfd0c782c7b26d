"""The OpenAI client and its calls: one client per process, one structured call with its reply
validated, usage read, and SDK errors translated to provider errors."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import threading
import time
from typing import Any

import openai
from django.conf import settings

from eco2.db import release_db_connection

from ..base import (
    ProviderError,
    TransientProviderError,
    Usage,
)
from .cost import cost_usd
from .prompts import Prompt, schema_problem

logger = logging.getLogger(__name__)

OPENAI = "openai"
# A classification's draw is cached per photo, and an answer per category: a random one would
# be frozen for every later scan, so both calls are deterministic.
TEMPERATURE = 0


def _usage(completion: Any, requested_model: str, prompt: Prompt) -> Usage:
    # The API echoes the model that actually ran (e.g. a dated snapshot): that is what is billed.
    model = getattr(completion, "model", None) or requested_model
    usage = getattr(completion, "usage", None)
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0)
    return Usage(
        model=model,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output_tokens,
        cost_usd=cost_usd(model, input_tokens, cached, output_tokens),
        prompt_version=prompt.version,
    )


# --- errors ---------------------------------------------------------------------------------
def _invalid(message: str = "The AI provider sent an answer we could not read.") -> ProviderError:
    return ProviderError(message, code="invalid_provider_output")


def _retry_after(response: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            if name != "retry-after":
                continue
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                continue
            seconds = when.timestamp() - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def translate_error(exc: openai.OpenAIError) -> ProviderError:
    """Map an SDK exception to a provider error. Messages never include the SDK's text.

    The SDK's messages may quote the (masked) key or the request; users get a short sentence
    of ours, and the log gets the status and request id.
    """
    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError, its base class
        return TransientProviderError(
            "The AI provider did not answer in time.", code="provider_timeout"
        )
    if isinstance(exc, openai.APIConnectionError):
        return TransientProviderError(
            "The AI provider could not be reached.",
            code="provider_unreachable",
        )
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            # A 429 that waiting does not cure: the account is out of credit.
            return ProviderError(
                "The AI provider's usage quota is used up.",
                code="provider_quota_exceeded",
            )
        return TransientProviderError(
            "The AI provider is busy right now.",
            code="provider_rate_limited",
            retry_after=_retry_after(exc.response),
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500:
            return TransientProviderError(
                "The AI provider is temporarily unavailable.",
                code="provider_unavailable",
            )
        if status in (401, 403):
            return ProviderError("The AI provider rejected our credentials.", code="provider_auth")
        if status == 408:  # the server's own timeout: as retryable as ours
            return TransientProviderError(
                "The AI provider did not answer in time.",
                code="provider_timeout",
            )
        if status == 409:  # a conflict on the provider's side; the SDK retries it too
            return TransientProviderError(
                "The AI provider is temporarily unavailable.",
                code="provider_unavailable",
            )
        return ProviderError(
            f"The AI provider rejected the request (HTTP {status}).", code="provider_rejected"
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return _invalid()
    return ProviderError("The AI provider failed unexpectedly.", code="provider_error")


def _log_error(exc: openai.OpenAIError, step: str) -> None:
    status = getattr(exc, "status_code", None)
    request_id = getattr(exc, "request_id", None)
    if status in (401, 403):
        # OpenAI's 401 text quotes part of the key: log no message at all.
        logger.warning("openai %s: HTTP %s (request %s)", step, status, request_id)
    else:
        logger.warning(
            "openai %s: %s HTTP %s (request %s): %s",
            step,
            type(exc).__name__,
            status,
            request_id,
            getattr(exc, "message", exc),
        )


# --- the client -----------------------------------------------------------------------------
def build_client() -> openai.OpenAI:
    """The shared client factory. ``max_retries=0``: Celery owns retrying (see module doc)."""
    try:
        return openai.OpenAI(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL,
            max_retries=0,
            timeout=settings.OPENAI_TIMEOUT,
        )
    except openai.OpenAIError as exc:  # no key configured: retrying will not add one
        raise ProviderError(
            "The AI provider is not configured (no API key).", code="provider_auth"
        ) from exc


_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()


def shared_client() -> openai.OpenAI:
    """The process's client for the current settings, built on first use.

    One per process, not per provider instance (a step builds its provider): building a
    client costs ~60 ms of CPU (its HTTP client and TLS context), twice per scan, and a new
    client also opens new connections (bench/io_concurrency.py found both). The sync client
    is thread-safe, so a threads pool shares it. Keyed by the settings it is built from (tests
    point it at different fake servers) and by process (a forked child builds its own).
    """
    key = (
        os.getpid(),
        settings.OPENAI_API_KEY,
        settings.OPENAI_BASE_URL,
        settings.OPENAI_TIMEOUT,
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = build_client()
        return client


class _OpenAIProvider:
    name = OPENAI
    refused_message = "The AI model declined this request."

    @property
    def client(self) -> openai.OpenAI:
        # built on first use, not at import: a provider that is never called needs no key
        return shared_client()

    def _complete(
        self,
        *,
        step: str,
        model: str,
        messages: list[dict[str, Any]],
        schema_name: str,
        schema: dict[str, Any],
        prompt: Prompt,
        prompt_cache_key: str,
        max_output_tokens: int,
    ) -> tuple[dict[str, Any], Usage, str | None]:
        """One structured call: the validated reply, its usage and the request id."""
        # the prompt is built (rule base reads done): hold no DB connection during the call
        release_db_connection()
        try:
            completion = self.client.chat.completions.create(
                model=model,
                messages=messages,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "strict": True, "schema": schema},
                },
                max_completion_tokens=max_output_tokens,
                temperature=TEMPERATURE,
                prompt_cache_key=prompt_cache_key,
            )
        except openai.OpenAIError as exc:
            _log_error(exc, step)
            raise translate_error(exc) from exc
        request_id = getattr(completion, "_request_id", None)
        data = self._read_reply(completion, schema, step, request_id)
        usage = _usage(completion, model, prompt)
        logger.info(
            "openai %s: model=%s tokens in=%d (cached %d) out=%d cost=$%.6f request=%s",
            step,
            usage.model,
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            usage.cost_usd,
            request_id,
        )
        return data, usage, request_id

    def _read_reply(
        self, completion: Any, schema: dict[str, Any], step: str, request_id: str | None
    ) -> dict[str, Any]:
        # The SDK builds its models without validation, so any attribute may be missing or
        # of the wrong type: every failure here is the provider's output, never a crash.
        try:
            choice = completion.choices[0]
            message = choice.message
            refusal = getattr(message, "refusal", None)
            finish_reason = getattr(choice, "finish_reason", None)
            content = message.content
        except (AttributeError, IndexError, TypeError, KeyError) as exc:
            raise _invalid("The AI provider sent an empty answer.") from exc
        if refusal or finish_reason == "content_filter":
            logger.info("openai %s refused (request %s): %s", step, request_id, refusal)
            raise ProviderError(self.refused_message, code="provider_refused")
        if finish_reason == "length":
            raise _invalid("The AI provider's answer was cut off.")
        if not isinstance(content, str):
            raise _invalid("The AI provider sent an empty answer.")
        try:
            data = json.loads(content)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            logger.warning("openai %s: reply is not JSON (request %s)", step, request_id)
            raise _invalid() from exc
        if problem := schema_problem(schema, data):
            logger.warning(
                "openai %s: reply breaks the schema (request %s): %s", step, request_id, problem
            )
            raise _invalid()
        return data

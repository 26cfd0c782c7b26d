"""What an OpenAI call costs, from settings.OPENAI_PRICES."""

from __future__ import annotations

import logging
import re
import threading

from django.conf import settings

logger = logging.getLogger(__name__)

# --- cost -----------------------------------------------------------------------------------
# "gpt-4.1-mini-2025-04-14" is priced as "gpt-4.1-mini": the API echoes dated snapshot names.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_unpriced_models: set[str] = set()
_unpriced_lock = threading.Lock()


def cost_usd(model: str, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> float:
    """The price of one call in USD, from ``settings.OPENAI_PRICES`` (USD per 1M tokens).

    Cached input tokens are part of ``input_tokens`` and billed at the cached rate. A model
    without a price costs 0.0 and is logged once per process, so it is noticed, not spammed.
    """
    prices = settings.OPENAI_PRICES or {}
    price = prices.get(model) or prices.get(_SNAPSHOT_SUFFIX.sub("", model))
    try:
        input_price = float(price["input"])
        cached_price = float(price.get("cached_input", input_price))
        output_price = float(price["output"])
    except (KeyError, TypeError, ValueError, AttributeError):
        with _unpriced_lock:
            first = model not in _unpriced_models
            _unpriced_models.add(model)
        if first:
            logger.warning(
                "no usable price for model %r in OPENAI_PRICES: cost counted as 0", model
            )
        return 0.0
    cached = max(0, min(cached_input_tokens, input_tokens))
    uncached = max(0, input_tokens - cached)
    total = uncached * input_price + cached * cached_price + max(0, output_tokens) * output_price
    return round(total / 1_000_000, 10)

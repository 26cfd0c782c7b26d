"""Providers for tests: the real offline provider, plus hints that fail a step on purpose.

Worker subprocesses in the tests run with ``SCAN_VISION_PROVIDER`` pointing here, so ordinary
hints go through the real offline classification and these hints exercise failure paths.
"""

import io
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from scans.providers.base import Classification, ProviderError
from scans.providers.offline import OfflineVisionProvider

CRASH_HINT = "#crash"
REFUSE_HINT = "#refuse"
POISON_HINT = "#poison"  # kills the worker process running it, every time
CRASH_IMAGE_SIZE = (13, 13)  # a photo of exactly this size fails the vision step too
# not sure, whatever the matcher makes of the words after it: a bottle, clear PET or glass
UNSURE_HINT = "#unsure"
UNSURE_CANDIDATES = [
    {"category_code": "pet_clear", "item": "생수병", "item_en": "water bottle", "score": 0.62},
    {"category_code": "glass", "item": "소주병", "item_en": "soju bottle", "score": 0.58},
    {"category_code": "plastic", "item": "유색 페트병", "item_en": "coloured PET bottle",
     "score": 0.41},
]  # fmt: skip


@dataclass
class UnsureClassification(Classification):
    # the contract of a classification that is not sure (issue 19): its candidates, best first
    candidates: list[dict[str, Any]] = field(default_factory=list)


class FailingOnRequestVisionProvider(OfflineVisionProvider):
    def classify(self, request):
        # a visible pause for tests that watch live progress (the browser test)
        time.sleep(float(os.environ.get("FAKE_VISION_DELAY_SECONDS", "0")))
        if Image.open(io.BytesIO(request.image)).size == CRASH_IMAGE_SIZE:
            raise RuntimeError("simulated bug for this photo")
        if request.hint.startswith(CRASH_HINT):
            raise RuntimeError("simulated bug in the vision step")
        if request.hint.startswith(POISON_HINT):
            os.kill(os.getpid(), signal.SIGKILL)
        if request.hint.startswith(REFUSE_HINT):
            raise ProviderError(
                "The vision model refused to describe this photo.", code="provider_refused"
            )
        if request.hint.startswith(UNSURE_HINT):
            return UnsureClassification(
                outcome="unclassified",
                confidence=0.62,
                user_input=request.hint,
                provider=self.name,
                details={"reason": "ambiguous"},
                candidates=[dict(c) for c in UNSURE_CANDIDATES],
            )
        return super().classify(request)

"""Providers for tests: the real offline provider, plus hints that fail a step on purpose.

Worker subprocesses in the tests run with ``SCAN_VISION_PROVIDER`` pointing here, so ordinary
hints go through the real offline classification and these hints exercise failure paths.
"""

import io
import os
import signal
import time

from PIL import Image

from scans.providers.base import ProviderError
from scans.providers.offline import OfflineVisionProvider

CRASH_HINT = "#crash"
REFUSE_HINT = "#refuse"
POISON_HINT = "#poison"  # kills the worker process running it, every time
CRASH_IMAGE_SIZE = (13, 13)  # a photo of exactly this size fails the vision step too


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
        return super().classify(request)

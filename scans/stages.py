"""The pipeline's stages as a scan shows them, defined once: recognition, rules, guidance (the
photo's preparation runs as a task of its own and is shown as the recognition stage)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy

from .models import ScanStep

PIPELINE_STAGES = (ScanStep.VISION, ScanStep.RULE, ScanStep.ANSWER)
# short names of the stages under the progress bar (the step labels say what is happening now)
STAGE_LABELS = {
    ScanStep.VISION: gettext_lazy("Recognition"),
    ScanStep.RULE: gettext_lazy("Rules"),
    ScanStep.ANSWER: gettext_lazy("Guidance"),
}

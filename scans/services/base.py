"""The pipeline's shared terms: step progress, active statuses, outcomes, step task names."""

from __future__ import annotations

from ..errors import CodedError
from ..models import AttemptOutcome, ScanStatus, ScanStep

# Progress per step (start, end), as in the original system's contract.
STEP_PROGRESS = {
    ScanStep.PREPARE: (5, 5),
    ScanStep.VISION: (10, 33),
    ScanStep.RULE: (50, 66),
    ScanStep.ANSWER: (75, 100),
}
ACTIVE_STATUSES = (ScanStatus.QUEUED, ScanStatus.PROCESSING)


class ScanStepError(CodedError):
    """A step cannot go on."""

    code = "scan_step_failed"


SUCCEEDED, SKIPPED = AttemptOutcome.SUCCEEDED.value, AttemptOutcome.SKIPPED.value


# The registered names of the step tasks (scans/tasks.py). The services publish by name: the
# task module imports the services, which therefore do not import it.
STEP_TASK_NAMES = {
    ScanStep.PREPARE: "scans.tasks.prepare_image",
    ScanStep.VISION: "scans.tasks.vision_scan",
    ScanStep.RULE: "scans.tasks.rule_match",
    ScanStep.ANSWER: "scans.tasks.answer_gen",
}

"""Business logic of a scan: create it, run each pipeline step, finish it exactly once.

The modules, each importing only those above it in this list (and never the task module, the
ledger or the task history, which import the services):

- ``base``: the shared terms (step progress, active statuses, outcomes, task names);
- ``batches``: a batch's summary, written once every member has ended;
- ``state``: the conditional writes that keep one terminal state, the running totals they
  count (ScanTotals), and the progress mirror;
- ``dispatch``: publishing a scan's chain or a batch's chord, the relay, the requeue;
- ``intake``: taking a scan or a batch in (backlog guard, rate, row, dispatch after commit);
- ``answering``: resuming a scan that asked, with its owner's choice or a new hint;
- ``photos``: preparing a scan's photo, and rebuilding thumbnails;
- ``caches``: the vision and answer caches, with a lease per key;
- ``steps``: the four pipeline steps;
- ``failures``: what a failure is, failing and cancelling a scan;
- ``recovery``: retrying failed scans, sweeping stalled ones;
- ``dead_letters``: recording, redriving and tidying dead letters;
- ``retention``: pruning the history tables in batches (beat, one job a table).

Callers use the package (``from scans import services; services.create_scan(...)``); a test
that replaces a name patches the module that looks it up.
"""

from __future__ import annotations

from .answering import InvalidAnswer, ScanNotWaiting, choose_category, rerun_with_hint
from .base import (
    ACTIVE_STATUSES,
    SKIPPED,
    STEP_PROGRESS,
    STEP_TASK_NAMES,
    SUCCEEDED,
    ScanStepError,
)
from .batches import finish_batch_of, finish_ended_batches, summarize_batch
from .caches import compose_answer, vision_cache_key
from .dead_letters import (
    PERMANENT_FAILURES,
    RedriveReport,
    record_dead_letter,
    redrive_dead_letters,
    tidy_dead_letter_queue,
)
from .dispatch import (
    DISPATCH_GRACE,
    dispatch_batch,
    dispatch_pipeline,
    pipeline_chain,
    relay_pending_dispatches,
    remaining_steps,
)
from .failures import (
    STEP_LABELS,
    cancel_scan,
    describe_failure,
    fail_scan,
    failure_code,
    failure_spares_scan,
    is_broker_error,
    step_result_stored,
)
from .intake import PipelineBusy, create_batch, create_scan, ensure_capacity, scan_language
from .photos import ensure_prepared_image, regenerate_thumbnail, regenerate_thumbnails
from .recovery import retry_scans, sweep_stalled_scans
from .retention import prune_table
from .state import resolve_dead_letters
from .steps import run_answer_step, run_prepare_step, run_rule_step, run_vision_step

__all__ = [
    "ACTIVE_STATUSES",
    "DISPATCH_GRACE",
    "PERMANENT_FAILURES",
    "SKIPPED",
    "STEP_LABELS",
    "STEP_PROGRESS",
    "STEP_TASK_NAMES",
    "SUCCEEDED",
    "InvalidAnswer",
    "PipelineBusy",
    "RedriveReport",
    "ScanNotWaiting",
    "ScanStepError",
    "cancel_scan",
    "choose_category",
    "compose_answer",
    "create_batch",
    "create_scan",
    "describe_failure",
    "dispatch_batch",
    "dispatch_pipeline",
    "ensure_capacity",
    "ensure_prepared_image",
    "fail_scan",
    "failure_code",
    "failure_spares_scan",
    "finish_batch_of",
    "finish_ended_batches",
    "is_broker_error",
    "pipeline_chain",
    "prune_table",
    "record_dead_letter",
    "redrive_dead_letters",
    "regenerate_thumbnail",
    "regenerate_thumbnails",
    "relay_pending_dispatches",
    "remaining_steps",
    "rerun_with_hint",
    "resolve_dead_letters",
    "retry_scans",
    "run_answer_step",
    "run_prepare_step",
    "run_rule_step",
    "run_vision_step",
    "scan_language",
    "step_result_stored",
    "summarize_batch",
    "sweep_stalled_scans",
    "tidy_dead_letter_queue",
    "vision_cache_key",
]

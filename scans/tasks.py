"""Celery tasks of the scan pipeline. Thin on purpose: load by id, call a service, done.

Every step is idempotent (a redelivered message finds its result stored and does nothing
twice) and returns what it did ("succeeded" or "skipped") for the attempt ledger.

The Python functions end in ``_task``; their registered names (``scans.tasks.vision_scan`` …)
stay as they are, because beat rows and in-flight messages use them. The services publish by
those names (scans.services.base.STEP_TASK_NAMES) and never import this module.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from eco2.broker_queues import QUORUM
from eco2.db import DATABASE_FAILURES
from eco2.periodic import RecordedWhenBusy
from notifications.models import NotificationKind
from notifications.services import notify_staff

from . import reports, services
from .errors import CodedError
from .models import ScanStep
from .outbox import RELAY_GRACE, publish_pending_events
from .providers.base import TransientProviderError
from .rules import one_revision_per_step

logger = logging.getLogger(__name__)

MAX_STEP_RETRIES = 3  # so a step calls its provider at most 4 times


def retry_countdown(retries: int, retry_after: float | None) -> float:
    """Exponential backoff (1, 2, 4 … s) with equal jitter, capped by SCAN_RETRY_BACKOFF_CAP,
    and never sooner than the provider's Retry-After (which the cap does not shorten: see
    ProviderAskedTooLong for a Retry-After beyond SCAN_RETRY_AFTER_MAX).

    Equal jitter (half fixed, half random) rather than full jitter: a draw near 0 s let the
    retry run to success on another worker process before this one stored RETRY in the task
    history, which then stayed at RETRY for a task that had succeeded.
    """
    ceiling = min(settings.SCAN_RETRY_BACKOFF_CAP, 2**retries)
    backoff = random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not a secret)
    countdown = max(backoff, retry_after or 0)
    if settings.CELERY_QUEUE_TYPE == QUORUM:
        # on quorum queues a countdown is Celery's native delayed delivery, which counts whole
        # seconds (truncated) and refuses a countdown under one with a ValueError
        return float(math.ceil(countdown))
    return countdown


class ProviderAskedTooLong(CodedError):
    """The provider's Retry-After is longer than a step waits (SCAN_RETRY_AFTER_MAX).

    A retry waits as an ETA message the worker holds unacknowledged, which must stay far
    below RabbitMQ's consumer timeout (30 min) and below the sweeper's stall threshold; a
    scan is better failed with the time to come back than silently held for an hour.
    """

    code = "provider_rate_limited_long"

    @classmethod
    def after(cls, seconds: float) -> ProviderAskedTooLong:
        """With the time to try again in the technical detail (staff, English); people read
        the code's message (scans.errors)."""
        until = timezone.localtime() + timedelta(seconds=seconds)
        return cls(
            f"The AI provider is rate-limiting Eco² and asked to wait {seconds:.0f} s, longer "
            f"than a scan waits ({settings.SCAN_RETRY_AFTER_MAX:.0f} s). Please try again after "
            f"{until:%H:%M} (in about {max(1, round(seconds / 60))} min)."
        )


class ScanStepTask(Task):
    step: ScanStep
    # Failing for good rejects the message instead of acking it, so RabbitMQ dead-letters it
    # into scan.ai.dlq. A hard time limit is acked instead: rejecting would requeue it.
    acks_on_failure = False
    acks_on_timeout = True
    # A worker process that dies mid-step (SIGKILL, OOM) gets the step sent again like a
    # retry, so max_retries also caps poison messages; then the message is dead-lettered.
    retry_on_worker_lost = True
    default_retry_delay = 2  # seconds before a step whose worker died is tried again
    max_retries = MAX_STEP_RETRIES
    # No STARTED write to the result backend (two queries per step): the attempt ledger
    # (scans.ledger) already records every start, with its worker, queue and attempt number,
    # and the Scan row shows the owner the running step. Other tasks keep task_track_started.
    track_started = False

    def run_step(self, service: Callable[[str], str], scan_id: str) -> dict:
        try:
            with one_revision_per_step():  # the rule base as the step's load found it
                outcome = service(scan_id)
        except TransientProviderError as exc:
            if (exc.retry_after or 0) > settings.SCAN_RETRY_AFTER_MAX:
                raise ProviderAskedTooLong.after(exc.retry_after) from exc
            # after max_retries, retry() re-raises exc: the failure handler gives the reason
            raise self.retry(
                exc=exc, countdown=retry_countdown(self.request.retries, exc.retry_after)
            ) from exc
        except DATABASE_FAILURES as exc:
            # The database, not the scan: PostgreSQL dropped the session (a failover, a
            # restart, a pooler, pg_terminate_backend), chose this transaction as a deadlock's
            # victim or refused it a serializable snapshot; SQLite's "database is locked". The
            # step's transaction rolled back and stored nothing, so it is tried again, as
            # PostgreSQL's documentation asks. A connection that cannot serve any more is
            # closed first: the retry's bookkeeping and the next try open a new one.
            close_old_connections()
            raise self.retry(
                exc=exc, countdown=retry_countdown(self.request.retries, None)
            ) from exc
        return {"scan_id": scan_id, "step": self.step.value, "outcome": outcome}


class PrepareStep(ScanStepTask):
    step = ScanStep.PREPARE


class VisionStep(ScanStepTask):
    step = ScanStep.VISION


class RuleStep(ScanStepTask):
    step = ScanStep.RULE


class AnswerStep(ScanStepTask):
    step = ScanStep.ANSWER


# Soft time limits raise inside the step (the scan fails with a reason); hard limits kill the
# process. Only the prefork pool enforces them (photo preparation; the AI steps under prefork):
# the threads pool of scan.ai.pipeline ignores them, and there the OpenAI client's timeout
# (OPENAI_TIMEOUT) bounds each call (docs/reliability.md, "Time limits"). A step's final
# failure, also when its worker process died, is handled in scans.ledger (task_failure signal).


@shared_task(
    base=PrepareStep,
    bind=True,
    name="scans.tasks.prepare_image",
    soft_time_limit=30,
    time_limit=60,
)
def prepare_image_task(self, scan_id: str) -> dict:
    return self.run_step(services.run_prepare_step, scan_id)


@shared_task(
    base=VisionStep, bind=True, name="scans.tasks.vision_scan", soft_time_limit=60, time_limit=90
)
def vision_scan_task(self, scan_id: str) -> dict:
    return self.run_step(services.run_vision_step, scan_id)


@shared_task(
    base=RuleStep, bind=True, name="scans.tasks.rule_match", soft_time_limit=30, time_limit=60
)
def rule_match_task(self, scan_id: str) -> dict:
    return self.run_step(services.run_rule_step, scan_id)


@shared_task(
    base=AnswerStep, bind=True, name="scans.tasks.answer_gen", soft_time_limit=60, time_limit=90
)
def answer_gen_task(self, scan_id: str) -> dict:
    return self.run_step(services.run_answer_step, scan_id)


STEP_TASKS = {
    ScanStep.PREPARE: prepare_image_task,
    ScanStep.VISION: vision_scan_task,
    ScanStep.RULE: rule_match_task,
    ScanStep.ANSWER: answer_gen_task,
}


@shared_task(base=RecordedWhenBusy, name="scans.tasks.sweep_stalled_scans")
def sweep_stalled_scans_task() -> dict:
    requeued, failed = services.sweep_stalled_scans()
    batches = services.finish_ended_batches()
    return {"requeued": requeued, "failed": failed, "batches_finished": batches}


@shared_task(base=RecordedWhenBusy, name="scans.tasks.relay_pending_dispatches")
def relay_pending_dispatches_task() -> int:
    return services.relay_pending_dispatches()


@shared_task(base=RecordedWhenBusy, name="scans.tasks.publish_events")
def publish_events_task() -> int:
    """The outbox relay for ScanCompleted / ScanFailed events (beat)."""
    return publish_pending_events(min_age=RELAY_GRACE)


@shared_task(name="scans.tasks.prune_history")
def prune_history_task(table: str) -> dict:
    """A history table's retention job (beat, hourly, one row a table): what it deleted is the
    result the task history shows."""
    return services.prune_table(table)


@shared_task(name="scans.tasks.send_daily_digest")
def send_daily_digest_task() -> int:
    day = timezone.localdate() - timedelta(days=1)  # yesterday, midnight to midnight (KST)
    subject, body = reports.daily_digest(day)
    return notify_staff(NotificationKind.DAILY_DIGEST, subject, body, dedupe_key=f"digest:{day}")


@shared_task(base=RecordedWhenBusy, name="scans.tasks.check_dead_letters")
def check_dead_letters_task() -> int:
    """Warn staff when dead letters wait; at most once an hour (the dedupe key). Messages on
    scan.ai.dlq whose scan completed or runs again are taken off first: they wait for nobody."""
    try:
        services.tidy_dead_letter_queue()
    except Exception:  # the broker being away must not hide the DB count
        logger.warning("could not tidy scan.ai.dlq", exc_info=True)
    pending, depth = reports.dead_letter_summary()
    if not pending and not depth:
        return 0
    subject = f"[Eco²] {pending} dead letter(s) waiting for review"
    body = (
        f"{pending} dead letter(s) pending; scan.ai.dlq holds {depth if depth is not None else 'n/a'} "
        "message(s).\nReview them in the admin (Scans → Dead letters) or run `manage.py redrive_dlq`.\n"
    )
    hour = timezone.localtime().strftime("%Y%m%d%H")
    return notify_staff(
        NotificationKind.DEAD_LETTER_ALERT, subject, body, dedupe_key=f"dead-letters:{hour}"
    )


@shared_task(name="scans.tasks.aggregate_results")
def aggregate_results_task(batch_id: str) -> dict | None:
    """The chord callback of a batch: every member pipeline has ended."""
    return services.summarize_batch(batch_id)


@shared_task(name="scans.tasks.aggregate_results_after_error")
def aggregate_results_after_error_task(batch_id: str) -> dict | None:
    """The chord's errback: a member failed, which is an outcome, not a reason to hang."""
    return services.summarize_batch(batch_id)


@shared_task(name="scans.tasks.regenerate_thumbnail")
def regenerate_thumbnail_task(scan_id: str) -> bool:
    return services.regenerate_thumbnail(scan_id)

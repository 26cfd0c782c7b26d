"""Celery tasks of the scan pipeline. Thin on purpose: load by id, call a service, done.

Every step is idempotent (a redelivered message finds its result stored and does nothing
twice), and the last failure of any step gives the scan its terminal ``failed`` state through
``ScanStepTask.on_failure``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from celery import Task, shared_task
from django.conf import settings

from . import services
from .models import ScanStep
from .providers.base import TransientProviderError

MAX_STEP_RETRIES = 3  # so a step calls its provider at most 4 times


def retry_countdown(retries: int, retry_after: float | None) -> float:
    """Exponential backoff (1, 2, 4 … s) with full jitter, never sooner than the provider's
    Retry-After, capped by SCAN_RETRY_BACKOFF_CAP: a retry waits as an ETA message held by the
    worker, which must stay far below RabbitMQ's consumer timeout."""
    cap = settings.SCAN_RETRY_BACKOFF_CAP
    backoff = random.uniform(0, min(cap, 2**retries))
    return min(cap, max(backoff, retry_after or 0))


class ScanStepTask(Task):
    step: ScanStep

    def run_step(self, service: Callable[[str], None], scan_id: str) -> str:
        try:
            service(scan_id)
        except TransientProviderError as exc:
            # after max_retries, retry() re-raises exc and on_failure gives the reason
            raise self.retry(
                exc=exc, countdown=retry_countdown(self.request.retries, exc.retry_after)
            ) from exc
        return scan_id

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        scan_id = args[0] if args else kwargs.get("scan_id")
        code, message = services.describe_failure(exc, self.step)
        services.fail_scan(scan_id, code=code, message=message)


class VisionStep(ScanStepTask):
    step = ScanStep.VISION


class RuleStep(ScanStepTask):
    step = ScanStep.RULE


class AnswerStep(ScanStepTask):
    step = ScanStep.ANSWER


# Soft time limits raise inside the step (the scan fails with a reason); hard limits kill the
# process. Both sit far below RabbitMQ's 30-minute consumer timeout, and the OpenAI client's
# own timeout (OPENAI_TIMEOUT) sits below the soft limit.
STEP_OPTIONS = {"bind": True, "max_retries": MAX_STEP_RETRIES}


@shared_task(
    base=VisionStep,
    name="scans.tasks.vision_scan",
    soft_time_limit=60,
    time_limit=90,
    **STEP_OPTIONS,
)
def vision_scan(self, scan_id: str) -> str:
    return self.run_step(services.run_vision_step, scan_id)


@shared_task(
    base=RuleStep, name="scans.tasks.rule_match", soft_time_limit=30, time_limit=60, **STEP_OPTIONS
)
def rule_match(self, scan_id: str) -> str:
    return self.run_step(services.run_rule_step, scan_id)


@shared_task(
    base=AnswerStep,
    name="scans.tasks.answer_gen",
    soft_time_limit=60,
    time_limit=90,
    **STEP_OPTIONS,
)
def answer_gen(self, scan_id: str) -> str:
    return self.run_step(services.run_answer_step, scan_id)


@shared_task(name="scans.tasks.sweep_stalled_scans")
def sweep_stalled_scans() -> int:
    return services.sweep_stalled_scans()

"""Celery tasks of the scan pipeline. Thin on purpose: load by id, call a service, done.

Every step is idempotent (a redelivered message finds its result stored and does nothing
twice), and the last failure of any step gives the scan its terminal ``failed`` state through
``ScanStepTask.on_failure``.
"""

from __future__ import annotations

from celery import Task, shared_task

from . import services
from .models import ScanStep
from .providers.base import TransientProviderError

# Celery time limits per step: soft raises inside the task (the scan fails with a reason),
# hard kills the process. Both are far below RabbitMQ's 30 min consumer timeout.
STEP_OPTIONS = {
    "bind": True,
    "autoretry_for": (TransientProviderError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 3,
}


class ScanStepTask(Task):
    step: ScanStep

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


@shared_task(
    base=VisionStep,
    name="scans.tasks.vision_scan",
    soft_time_limit=60,
    time_limit=90,
    **STEP_OPTIONS,
)
def vision_scan(self, scan_id: str) -> str:
    services.run_vision_step(scan_id)
    return scan_id


@shared_task(
    base=RuleStep, name="scans.tasks.rule_match", soft_time_limit=30, time_limit=60, **STEP_OPTIONS
)
def rule_match(self, scan_id: str) -> str:
    services.run_rule_step(scan_id)
    return scan_id


@shared_task(
    base=AnswerStep,
    name="scans.tasks.answer_gen",
    soft_time_limit=60,
    time_limit=90,
    **STEP_OPTIONS,
)
def answer_gen(self, scan_id: str) -> str:
    services.run_answer_step(scan_id)
    return scan_id


@shared_task(name="scans.tasks.sweep_stalled_scans")
def sweep_stalled_scans() -> int:
    return services.sweep_stalled_scans()

"""A failed step: its code and description, whether it is the scan's; failing, cancelling."""

from __future__ import annotations

import logging

from amqp.exceptions import AMQPError, MessageNacked
from billiard.exceptions import WorkerLostError
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from eco2.db import DATABASE_FAILURES

from ..errors import CodedError
from ..models import Scan, ScanEventType, ScanStatus, ScanStep
from .dispatch import remaining_steps
from .state import _finish

logger = logging.getLogger(__name__)

STEP_LABELS = {
    ScanStep.PREPARE: "photo preparation",
    ScanStep.VISION: "recognition",
    ScanStep.RULE: "rule matching",
    ScanStep.ANSWER: "answer",
}


def failure_code(exc: BaseException) -> str:
    """The stable code of an exception (scans.errors.ERROR_CODES says what users read)."""
    if isinstance(exc, CodedError):
        return exc.code
    if isinstance(exc, WorkerLostError):
        return "worker_lost"
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        return "step_timeout"
    return "internal_error"


def describe_failure(exc: BaseException, step: str) -> tuple[str, str]:
    """The code of an exception in ``step`` and its technical detail (English, for staff).

    Users never read the detail: they get ``error_message(code)`` in their language.
    """
    code = failure_code(exc)
    label = STEP_LABELS.get(step, step)
    if isinstance(exc, CodedError):
        return code, exc.message
    if code == "worker_lost":
        return code, f"The worker running the {label} step stopped repeatedly."
    if code == "step_timeout":
        return code, f"The {label} step took too long and was stopped."
    if isinstance(exc, DATABASE_FAILURES):  # retried first (scans.tasks)
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        return code, (
            f"The database failed during the {label} step on every try "
            f"({type(exc).__name__}: {reason})."
        )
    return code, f"An unexpected error stopped the {label} step ({type(exc).__name__})."


def is_broker_error(exc: BaseException) -> bool:
    """An error of the broker connection, raised by Celery passing a scan on (publishing the
    next step of its chain, or a step's retry), never by a step's own work."""
    return isinstance(exc, KombuOperationalError | AMQPError | MessageNacked | ConnectionError)


def step_result_stored(scan_id: str | None, step: str) -> bool:
    """Whether ``step`` of the scan has stored its result (the answer: the scan completed)."""
    scan = Scan.objects.filter(pk=scan_id).first() if scan_id else None
    if scan is None:
        return False
    if step == ScanStep.ANSWER:
        return scan.answer is not None or scan.status == ScanStatus.COMPLETED
    return step not in remaining_steps(scan)


def failure_spares_scan(scan_id: str | None, step: str, exc: BaseException) -> bool:
    """A task failure that is not the scan's: its step's result is stored (what failed came
    after the step, e.g. publishing the next step while the broker restarted), or the broker
    refused a publish. The step's message was not acked: RabbitMQ delivers it again when the
    connection dropped, and the idempotent step skips its work and passes the scan on;
    otherwise the sweeper resumes the scan from its stored state. Failing the scan here would
    end a scan that is about to complete."""
    return is_broker_error(exc) or step_result_stored(scan_id, step)


def fail_scan(scan_id: str, *, code: str, message: str) -> bool:
    """Mark an active scan failed with a reason. False if it had already ended."""
    scan = Scan.objects.filter(pk=scan_id).first()
    if scan is None:
        return False
    failed = _finish(
        scan,
        ScanEventType.FAILED,
        status=ScanStatus.FAILED,
        error_code=code,
        error_message=message,
        finished_at=timezone.now(),
    )
    if failed:
        logger.warning("scan %s failed at %s: %s (%s)", scan_id, scan.step, code, message)
    return failed


CANCEL_MESSAGES = {
    "revoked": "The scan was cancelled: an operator revoked its {label} step before it ran.",
    "terminated": "The scan was cancelled: an operator stopped its {label} step while it ran.",
    "expired": "The scan was cancelled: its {label} step expired before a worker took it.",
}


def cancel_scan(scan_id, step: str, how: str = "revoked") -> bool:
    """End an active scan whose pipeline an operator stopped (a revoked or terminated task).

    A revoked step never runs, and neither do the steps after it, so the scan would otherwise
    stay queued or processing until the sweeper quietly runs it again. It fails like any
    failure (code ``cancelled``, a ScanFailed event), and *Retry* resumes it. False if the
    scan had already ended.
    """
    label = STEP_LABELS.get(step, step)
    message = CANCEL_MESSAGES.get(how, CANCEL_MESSAGES["revoked"]).format(label=label)
    return fail_scan(scan_id, code="cancelled", message=message)

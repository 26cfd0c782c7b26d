"""Running scans again: a person's retry of failed scans, and the sweeper of stalled ones."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..models import DeadLetter, Scan, ScanStatus
from .base import ACTIVE_STATUSES
from .dispatch import _requeue
from .failures import fail_scan

logger = logging.getLogger(__name__)


def retry_scans(scan_ids, *, actor: str = "") -> int:
    """Resume failed scans from the step that failed; return how many were re-enqueued.

    Steps that succeeded keep their results and are not paid for again.
    """
    count = 0
    for scan_id in scan_ids:
        with transaction.atomic():
            retried = _requeue(
                scan_id,
                extra_filter={"status": ScanStatus.FAILED},
                error_code="",
                error_message="",
                finished_at=None,
                retry_count=F("retry_count") + 1,
            )
            if retried:  # with the requeue: a letter is marked only when its scan runs again
                DeadLetter.objects.pending().filter(scan_id=scan_id).update(
                    redriven_at=timezone.now(), redriven_by=actor or "system"
                )
        if retried:
            logger.info("scan %s retried by %s", scan_id, actor or "system")
        count += retried
    return count


def sweep_stalled_scans(now=None) -> tuple[int, int]:
    """Scans with no progress for SCAN_STALLED_AFTER_SECONDS: re-enqueued from their current
    step up to SCAN_MAX_REQUEUES times, then failed with a reason. Returns (requeued, failed).
    """
    now = now or timezone.now()
    threshold = timedelta(seconds=settings.SCAN_STALLED_AFTER_SECONDS)
    stalled = Scan.objects.filter(status__in=ACTIVE_STATUSES, updated_at__lt=now - threshold)
    minutes = max(1, int(threshold.total_seconds() // 60))
    requeued = failed = 0
    for scan_id, requeues in stalled.values_list("id", "requeue_count"):
        if requeues < settings.SCAN_MAX_REQUEUES:
            with transaction.atomic():
                requeued += _requeue(
                    scan_id,
                    extra_filter={"status__in": ACTIVE_STATUSES, "updated_at__lt": now - threshold},
                    requeue_count=F("requeue_count") + 1,
                )
        else:
            failed += fail_scan(
                scan_id,
                code="stalled",
                message=f"No progress for {minutes} minutes, even after {requeues} restarts; "
                "the pipeline was interrupted.",
            )
    return requeued, failed

"""A batch's summary, written once every member has ended (by the last to end, or the sweeper)."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from ..models import TERMINAL_STATUSES, BatchStatus, Scan, ScanBatch, ScanStatus
from .base import ACTIVE_STATUSES


def summarize_batch(batch_id) -> dict | None:
    """Write the batch summary (per category, failures, total cost) once every member ended;
    None while a member is still active.

    Idempotent, and safe when called at once from several places (the chord callback, its
    errback, each member that ends, the sweeper): the batch row is locked while its members
    are read, so the last caller reads every member's committed state, and a summary already
    written is left as it is.
    """
    with transaction.atomic():
        batch = ScanBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None:
            return None
        scans = list(batch.scans.select_related("category"))
        if any(scan.status not in TERMINAL_STATUSES for scan in scans):
            return None  # the member that ends last (or the sweeper) writes it
        summary = _batch_summary(scans)
        if batch.status == BatchStatus.COMPLETED and batch.summary == summary:
            return summary
        ScanBatch.objects.filter(pk=batch.pk).update(
            status=BatchStatus.COMPLETED,
            summary=summary,
            completed_at=batch.completed_at or timezone.now(),
        )
    return summary


def _batch_summary(scans: list[Scan]) -> dict:
    by_category: dict[str, int] = {}
    for scan in scans:
        if scan.status == ScanStatus.COMPLETED:
            key = scan.category.code if scan.category else "unclassified"
            by_category[key] = by_category.get(key, 0) + 1
    return {
        "count": len(scans),
        "completed": sum(scan.status == ScanStatus.COMPLETED for scan in scans),
        "failed": sum(scan.status == ScanStatus.FAILED for scan in scans),
        # ended with a question (needs_input): the owner's answer resumes the member, and the
        # summary is written again when it ends
        "asked": sum(scan.status == ScanStatus.NEEDS_INPUT for scan in scans),
        "by_category": by_category,
        "failures": [
            {"task_id": str(scan.id), "code": scan.error_code, "message": scan.error_message}
            for scan in scans
            if scan.status == ScanStatus.FAILED
        ],
        "total_cost_usd": str(sum((scan.cost_usd for scan in scans), Decimal(0))),
    }


def finish_batch_of(scan: Scan) -> None:
    """After a batch member's final state is committed: write the batch's summary if every
    member has ended. Run after the commit, never inside it: two members ending at once in
    two transactions would each see the other still active, and neither would write."""
    if scan.batch_id is not None:
        summarize_batch(scan.batch_id)


def finish_ended_batches() -> int:
    """Summarize batches whose members have all ended but that were left unfinished (a
    worker died between a member's end and the summary); return how many (the sweeper)."""
    ended = ScanBatch.objects.filter(status=BatchStatus.PROCESSING).exclude(
        scans__status__in=ACTIVE_STATUSES
    )
    return sum(
        summarize_batch(batch_id) is not None for batch_id in ended.values_list("id", flat=True)
    )

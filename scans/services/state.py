"""A scan's bookkeeping: the conditional writes that keep one terminal state; progress mirror."""

from __future__ import annotations

import logging
import random
import uuid
from decimal import Decimal
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from eco2.db import get_precompiled
from notifications.services import notify_scan_completed, notify_scan_needs_input

from ..models import (
    TERMINAL_STATUSES,
    DeadLetter,
    Scan,
    ScanEventType,
    ScanStatus,
    ScanStep,
    ScanTotals,
)
from ..outbox import append_event
from ..progress import mirror_progress
from ..rules import note_rulebase_token, token_subquery
from ..step_end import step_end_expected, write_step_end
from .base import ACTIVE_STATUSES, STEP_PROGRESS, ScanStepError
from .batches import finish_batch_of

logger = logging.getLogger(__name__)


def _mirror(scan: Scan) -> None:
    mirror_progress(
        str(scan.id),
        status=scan.status,
        step=scan.step,
        progress=scan.progress,
        updated_at=(scan.updated_at or timezone.now()).isoformat(),
    )


def _save_if_active(
    scan: Scan,
    *,
    unless_stored: dict | None = None,
    billed: dict | None = None,
    ends_step: bool = False,
    **fields,
) -> bool:
    """Write ``fields`` only while the scan is still active; False if it already ended.

    The conditional UPDATE is what makes "exactly one terminal state" hold when a step, a
    failure handler and the sweeper race each other. ``unless_stored`` adds the condition that
    a step's result is still absent, so of two copies of one step running at once (a
    redelivery beside a cancelled run after a broker connection loss) only one stores it.

    The running totals (ScanTotals) count in the same transaction what this write records:
    ``billed``, the provider usage of the step being stored, and the end of the run when
    ``fields`` give a terminal status. Only the write that happened counts, so a redelivery or
    the loser of a race adds nothing.

    ``ends_step``: the final write of a running pipeline step, which also records the step's
    end (its attempt, the next step's queued history row: scans.step_end) in this transaction.
    """
    fields["updated_at"] = timezone.now()
    rows = Scan.objects.filter(pk=scan.pk, status__in=ACTIVE_STATUSES, **(unless_stored or {}))
    increments = _increments(billed, fields.get("status"))
    if increments or (ends_step and step_end_expected()):
        with transaction.atomic(savepoint=False):
            updated = rows.update(**fields)
            if updated:
                if ends_step:
                    write_step_end()
                if increments:
                    add_to_totals(increments)  # last: its row is held until the commit
    else:
        updated = rows.update(**fields)  # one statement, no transaction of its own
    if not updated:
        return False
    for name, value in fields.items():
        setattr(scan, name, value)
    _mirror(scan)
    return True


ENDED_TOTALS = {
    ScanStatus.COMPLETED: "ended_completed",
    ScanStatus.FAILED: "ended_failed",
    ScanStatus.NEEDS_INPUT: "ended_needs_input",
}
USAGE_TOTALS = ("input_tokens", "cached_input_tokens", "output_tokens")


def _increments(billed: dict | None, status: str | None) -> dict[str, int | Decimal]:
    """What a write adds to the running totals: the step's usage, and one ended run."""
    usage = billed or {}
    increments: dict[str, int | Decimal] = {
        name: int(usage[name]) for name in USAGE_TOTALS if usage.get(name)
    }
    if usage.get("cost_usd"):
        increments["cost_usd"] = Decimal(str(usage["cost_usd"]))
    if status in ENDED_TOTALS:
        increments[ENDED_TOTALS[ScanStatus(status)]] = 1
    return increments


def add_to_totals(increments: dict[str, int | Decimal]) -> None:
    """Add to one of the running totals' rows, picked at random so that concurrent writes
    rarely wait for each other (ScanTotals); it is created if it is missing."""
    shard = random.randint(1, ScanTotals.SHARDS)  # noqa: S311 (spreads load; not a secret)
    updates = {name: F(name) + value for name, value in increments.items()}
    if not ScanTotals.objects.filter(pk=shard).update(**updates):
        ScanTotals.objects.get_or_create(pk=shard)
        ScanTotals.objects.filter(pk=shard).update(**updates)


def _finish(scan: Scan, event_type: ScanEventType, **fields) -> bool:
    """Give the scan its final state (the end of a run: completed, failed or needs_input), its
    event and (completed, needs_input) the owner's opted-in notification, in one transaction:
    each exists exactly when the state does. False if the scan had already ended."""
    with transaction.atomic():
        if not _save_if_active(scan, **fields):
            return False
        append_event(scan, event_type)
        if event_type in (ScanEventType.NEEDS_INPUT, ScanEventType.COMPLETED):
            _load_owner(scan)  # whom the notification is for, read in this transaction
        if event_type == ScanEventType.NEEDS_INPUT:
            notify_scan_needs_input(scan)  # "which one is it?": one mail per scan
        if event_type == ScanEventType.COMPLETED:
            notify_scan_completed(scan)  # one mail per (scan, kind), sent after commit
            # only a scan that ran again can have dead letters: no query for all the others
            if scan.retry_count or scan.requeue_count:
                resolve_dead_letters(scan.pk)
        # robust: an error there is logged; the scan's end stands and the sweeper finishes
        # the batch
        transaction.on_commit(partial(finish_batch_of, scan), robust=True)
    return True


def resolve_dead_letters(scan_id) -> int:
    """The scan completed: its dead letters need nobody any more (the alert, the metric and
    the admin stop counting them). Their copies on scan.ai.dlq go with the next dead-letter
    check (tasks.check_dead_letters) or redrive."""
    return DeadLetter.objects.filter(scan_id=scan_id, resolved_at=None).update(
        resolved_at=timezone.now(), resolved_by="scan completed"
    )


def _load_active(scan_id: str) -> Scan | None:
    """The scan a step works on; None when it has ended (a redelivery: nothing to do).

    A message naming no scan is not skipped in silence: it fails, so its message is
    dead-lettered and recorded (a producer's bug, or a scan deleted while queued).
    """
    try:
        uuid.UUID(str(scan_id))
    except ValueError:
        raise ScanStepError(f"{scan_id!r} is not a scan id.", code="malformed_message") from None
    # the rule base's revision comes with the row: the step's uses of the rules take it.
    # Compiled once per process (four loads a scan; the ORM's compile cost more than the query)
    scan = get_precompiled("scans.step_load", _step_rows, scan_id)
    if scan is None:
        raise ScanStepError(
            f"No scan {scan_id}: it was deleted, or the message did not come from Eco².",
            code="unknown_scan",
        )
    if scan.status in TERMINAL_STATUSES:
        logger.info("scan %s is already %s; step skipped", scan_id, scan.status)
        return None
    note_rulebase_token(getattr(scan, "rulebase_token", None) or "")
    return scan


def _load_owner(scan: Scan) -> None:
    """The scan's owner (a step's load, precompiled, fills no relation), by a precompiled
    query too; nothing when it is loaded already."""
    if scan.owner_id is None or Scan.owner.is_cached(scan):
        return
    owner = get_precompiled(
        "scans.step_load.owner", lambda pk: get_user_model().objects.filter(pk=pk), scan.owner_id
    )
    if owner is not None:
        scan.owner = owner


def _step_rows(scan_id: Any) -> QuerySet[Scan]:
    return Scan.objects.filter(pk=scan_id).annotate(rulebase_token=token_subquery())


def _begin(scan: Scan, step: ScanStep) -> bool:
    """Show the owner that ``step`` runs; False if the scan ended meanwhile. No write when the
    scan shows it already: the step before it ends by naming this one (prepare names vision,
    rule names answer), so a scan's run writes once a step; a resumed scan writes here."""
    if (
        scan.status == ScanStatus.PROCESSING
        and scan.step == step
        and scan.progress >= STEP_PROGRESS[step][0]
        and scan.started_at is not None
    ):
        return True
    fields: dict[str, Any] = {
        "status": ScanStatus.PROCESSING,
        "step": step,
        "progress": STEP_PROGRESS[step][0],
    }
    if scan.started_at is None:
        fields["started_at"] = timezone.now()
    return _save_if_active(scan, **fields)

"""Retention: the history tables pruned by beat, one job a table, in batches of bounded size.

Each batch selects at most ``RETENTION_BATCH_SIZE`` primary keys of expired rows and deletes
those in a transaction of its own, so no lock is held for long and a large backlog is worked
off over several runs (a run stops after ``RETENTION_RUN_SECONDS``). A table's rows expire
after the days of its own setting (the README's *Scheduled jobs* lists them); 0 keeps them for
ever. The photos of old scans are forgotten the same way: the files go, the scan stays. Each
run returns what it deleted, which the task history (admin) shows as its result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from eco2.db import delete_in_batches, in_batches

from ..models import (
    TERMINAL_STATUSES,
    AnswerCacheEntry,
    DeadLetter,
    IdempotencyKey,
    Scan,
    ScanEvent,
    TaskAttempt,
    TaskRerun,
    VisionCacheEntry,
)


def forget_photos(rows: QuerySet, *, batch_size: int, max_seconds: float) -> tuple[int, int]:
    """The photo and thumbnail files of the scans ``rows``: each row forgets them first (a
    batch in a short transaction), then the files are deleted from the storage; the scan
    stays, with its result. Returns (scans, batches)."""
    storage = Scan._meta.get_field("image").storage

    def forget(batch: list[tuple[Any, ...]]) -> int:
        with transaction.atomic():
            Scan.objects.filter(pk__in=[pk for pk, _, _ in batch]).update(image="", thumbnail="")
        for _, *names in batch:
            for name in filter(None, names):
                storage.delete(name)  # a file already gone is no error
        return len(batch)

    return in_batches(
        rows,
        forget,
        fields=("pk", "image", "thumbnail"),
        batch_size=batch_size,
        max_seconds=max_seconds,
    )


@dataclass(frozen=True)
class Table:
    """A history table: its expired rows given the cutoff, the setting of how long its rows
    are kept (in ``unit``; 0 keeps them for ever), and how a batch of them goes."""

    setting: str
    expired: Callable[[datetime], QuerySet]
    unit: str = "days"
    remove: Callable[..., tuple[int, int]] = delete_in_batches


def _unused_cache_entries(
    model: type[VisionCacheEntry] | type[AnswerCacheEntry],
) -> Callable[[datetime], QuerySet]:
    def expired(cutoff: datetime) -> QuerySet:
        return model.objects.filter(
            Q(last_hit_at__lt=cutoff) | Q(last_hit_at__isnull=True, created_at__lt=cutoff)
        )

    return expired


TABLES: dict[str, Table] = {
    "task_attempts": Table(
        "RETENTION_TASK_ATTEMPTS_DAYS",
        lambda cutoff: TaskAttempt.objects.filter(started_at__lt=cutoff),
    ),
    # only events the relay has published: an unpublished one is still owed to the broker
    "scan_events": Table(
        "RETENTION_SCAN_EVENTS_DAYS",
        lambda cutoff: ScanEvent.objects.filter(published_at__lt=cutoff),
    ),
    # dead letters a person dealt with (redriven or resolved); pending ones wait for review
    "dead_letters": Table(
        "RETENTION_DEAD_LETTERS_DAYS",
        lambda cutoff: DeadLetter.objects.filter(
            Q(resolved_at__lt=cutoff) | Q(redriven_at__lt=cutoff, resolved_at__isnull=True)
        ),
    ),
    "task_reruns": Table(
        "RETENTION_TASK_RERUNS_DAYS",
        lambda cutoff: TaskRerun.objects.filter(requested_at__lt=cutoff),
    ),
    # a cache entry unused for that long: a later scan of the same photo pays once more
    "vision_cache": Table("RETENTION_CACHE_DAYS", _unused_cache_entries(VisionCacheEntry)),
    "answer_cache": Table("RETENTION_CACHE_DAYS", _unused_cache_entries(AnswerCacheEntry)),
    # keys past their TTL: a reuse would replace them anyway
    "idempotency_keys": Table(
        "SCAN_IDEMPOTENCY_TTL_HOURS",
        lambda cutoff: IdempotencyKey.objects.filter(created_at__lt=cutoff),
        unit="hours",
    ),
    # the files of ended scans go; the scan stays, with its result (0 by default: kept)
    "photos": Table(
        "RETENTION_PHOTOS_DAYS",
        lambda cutoff: Scan.objects.filter(
            created_at__lt=cutoff, status__in=TERMINAL_STATUSES
        ).exclude(image=""),
        remove=forget_photos,
    ),
}


def prune_table(name: str, now: datetime | None = None) -> dict[str, object]:
    """One run of a table's retention job: what it deleted, for the task history."""
    table = TABLES[name]
    keep = getattr(settings, table.setting)
    if not keep:
        return {"table": name, "deleted": 0, "batches": 0, "kept_for": "ever"}
    cutoff = (now or timezone.now()) - timedelta(**{table.unit: keep})
    deleted, batches = table.remove(
        table.expired(cutoff),
        batch_size=settings.RETENTION_BATCH_SIZE,
        max_seconds=settings.RETENTION_RUN_SECONDS,
    )
    return {
        "table": name,
        "deleted": deleted,
        "batches": batches,
        "kept_for": f"{keep} {table.unit[0]}",
    }

"""Taking a scan or a batch in: backlog guard, owner's rate, the row, dispatch after commit."""

from __future__ import annotations

import threading
import time
from functools import partial

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils.translation import get_supported_language_variant

from eco2.after_response import run_after_response

from ..creation_rate import ensure_within_rate
from ..errors import CodedError, error_message
from ..metrics import count_refused_scans
from ..models import Scan, ScanBatch, ScanStatus
from .dispatch import dispatch_batch, dispatch_pipeline
from .state import _mirror


class PipelineBusy(CodedError):
    """More scans wait for a worker than SCAN_BACKLOG_LIMIT allows: a new one is refused.

    Load shedding at the door: a person told "busy, try again in 30 s" at once is better off
    than one whose accepted scan waits minutes behind thousands of others.
    """

    code = "pipeline_busy"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


BACKLOG_READ_EVERY = 1.0  # seconds: one COUNT per process a second, not one per upload
_backlog_read: tuple[float, int] = (float("-inf"), 0)  # (monotonic time, waiting scans)
_backlog_reading = threading.Lock()


def waiting_scans(at_most: int) -> int:
    """Scans accepted and not yet started by a worker (up to ``at_most``), as read at most a
    second ago.

    One request of the process reads; the others go on with the last figure meanwhile (every
    request of a busy second would otherwise find it stale at once and count too). Counting
    stops at ``at_most`` rows, so a long backlog costs no more than a full one.
    """
    global _backlog_read
    read_at, waiting = _backlog_read
    if time.monotonic() - read_at >= BACKLOG_READ_EVERY and _backlog_reading.acquire(
        blocking=False
    ):
        try:
            waiting = Scan.objects.filter(status=ScanStatus.QUEUED)[:at_most].count()
            _backlog_read = (time.monotonic(), waiting)
        finally:
            _backlog_reading.release()
    return waiting


def ensure_capacity(new_scans: int = 1) -> None:
    """Refuse ``new_scans`` (PipelineBusy) if they would put the backlog over its limit."""
    limit = settings.SCAN_BACKLOG_LIMIT
    if limit and waiting_scans(at_most=limit + 1) + new_scans > limit:
        count_refused_scans("backlog", new_scans)
        retry_after = settings.SCAN_BACKLOG_RETRY_AFTER
        raise PipelineBusy(
            error_message(PipelineBusy.code, seconds=retry_after), retry_after=retry_after
        )


def scan_language(language: str | None) -> str:
    """The supported language closest to ``language`` (a request's, a command's option);
    settings.LANGUAGE_CODE when none is given or none fits."""
    if language:
        try:
            return get_supported_language_variant(language)
        except LookupError:
            pass
    return settings.LANGUAGE_CODE


def create_scan(
    *,
    owner,
    image: UploadedFile | None = None,
    hint: str = "",
    image_url: str = "",
    language: str | None = None,
) -> Scan:
    """Store the scan and dispatch its pipeline once the row is committed.

    Exactly one of ``image`` (an upload) and ``image_url`` (fetched by the worker at the start
    of the vision step, see ensure_prepared_image) is given. ``language``: the uploader's (the
    request's), what the guidance is written in. Raises, before anything is stored,
    PipelineBusy when the backlog is full (SCAN_BACKLOG_LIMIT) and ScanRateLimited when the
    owner is over SCAN_CREATE_RATE.
    """
    if (image is None) == (not image_url):
        raise ValueError("create_scan needs exactly one of image and image_url")
    ensure_capacity()
    ensure_within_rate(owner)
    scan = Scan(
        owner=owner, hint=hint.strip(), image_url=image_url or "", language=scan_language(language)
    )
    # the first run's chain root is the scan id itself, so Celery's root_id is the task_id
    scan.celery_root_id = str(scan.id)
    if image is not None:
        scan.image.save(image.name or "upload", image, save=False)
    # One INSERT is atomic by itself: no BEGIN/COMMIT round trips around it. Inside a caller's
    # transaction (an Idempotency-Key claim) on_commit waits for that one's commit; in
    # autocommit the row is committed here and on_commit runs at once.
    scan.save(force_insert=True)
    # the 202 does not wait for the broker: the row is committed, the relay is the net
    dispatch = partial(dispatch_pipeline, scan.id, created=scan)
    transaction.on_commit(partial(run_after_response, dispatch))
    _mirror(scan)
    return scan


def create_batch(
    *, owner, images: list[UploadedFile], hint: str = "", language: str | None = None
) -> ScanBatch:
    """One scan per photo and one chord over their pipelines, dispatched after commit.

    Raises PipelineBusy or ScanRateLimited (each photo counts), before anything is stored."""
    ensure_capacity(len(images))
    ensure_within_rate(owner, len(images))
    batch = ScanBatch(owner=owner)
    scans = []
    language = scan_language(language)
    for image in images:
        scan = Scan(owner=owner, hint=hint.strip(), batch=batch, language=language)
        scan.celery_root_id = str(scan.id)
        scan.image.save(image.name or "upload", image, save=False)
        scans.append(scan)
    with transaction.atomic():
        batch.save(force_insert=True)
        for scan in scans:
            scan.save(force_insert=True)
        transaction.on_commit(partial(run_after_response, partial(dispatch_batch, batch.id)))
    return batch

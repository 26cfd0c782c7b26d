"""A scan's photo: prepared once (upload or fetched URL, metadata stripped); thumbnails rebuilt."""

from __future__ import annotations

import io

from celery import chunks
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from eco2.celery import app

from ..fetch import FetchError, fetch_image
from ..images import UnusablePhoto, check_photo, prepare_image
from ..models import Scan
from .base import ScanStepError
from .state import _save_if_active

REGENERATE_THUMBNAIL = "scans.tasks.regenerate_thumbnail"  # the task's registered name


def _prepared_names(scan: Scan) -> tuple[str, str]:
    return f"scans/prepared/{scan.id}.jpg", f"scans/prepared/{scan.id}-thumb.jpg"


def _replace_file(name: str, content: bytes) -> str:
    # a redelivered step rewrites the same names (deleting a missing file is no error, and
    # costs a bucket one request where asking first would cost two)
    default_storage.delete(name)
    return default_storage.save(name, ContentFile(content))


def ensure_prepared_image(scan: Scan, *, ends_step: bool = False, **fields) -> bytes:
    """The scan's prepared JPEG; prepared (and the original upload deleted) on first use,
    stored together with ``fields`` (more of the scan's state); ``ends_step``: that write ends
    the running step (the prepare step's, see _save_if_active).

    The original may carry GPS coordinates and camera serials; only the prepared copy, with no
    metadata, is kept, shown or sent to a provider.
    """
    if scan.image_prepared_at:
        with scan.image.open("rb") as handle:
            return handle.read()
    try:
        if scan.image_url and not scan.image:
            # image_url scans: fetched here, on the worker, with SSRF protection (scans.fetch)
            prepared = prepare_image(_fetch_photo(scan.image_url))
        else:
            with scan.image.open("rb") as source:
                prepared = prepare_image(source)
    except FileNotFoundError as exc:
        raise ScanStepError(
            "The uploaded photo is no longer available.", code="image_missing"
        ) from exc
    except UnusablePhoto as exc:
        raise ScanStepError(exc.message, code=exc.code) from exc
    original = scan.image.name
    image_name, thumb_name = _prepared_names(scan)
    image_name = _replace_file(image_name, prepared.jpeg)
    thumb_name = _replace_file(thumb_name, prepared.thumbnail)
    saved = _save_if_active(
        scan,
        image=image_name,
        thumbnail=thumb_name,
        image_sha256=prepared.sha256,
        image_prepared_at=timezone.now(),
        ends_step=ends_step,
        **fields,
    )
    if saved and original and original != image_name:
        default_storage.delete(original)
    return prepared.jpeg


def _fetch_photo(url: str) -> io.BytesIO:
    """The photo at ``url``, fetched safely and checked like an upload; ScanStepError if not."""
    try:
        fetched = fetch_image(url)
    except FetchError as exc:
        raise ScanStepError(exc.message, code=exc.code) from exc
    source = io.BytesIO(fetched.content)
    check_photo(source)  # the upload's check: allow-listed format, not a bomb, readable
    return source


def regenerate_thumbnail(scan_id) -> bool:
    """Rebuild a prepared scan's thumbnail (after a change of SCAN_THUMBNAIL_EDGE)."""
    scan = Scan.objects.filter(pk=scan_id).exclude(image_prepared_at=None).first()
    if scan is None:
        return False
    with scan.image.open("rb") as source:
        prepared = prepare_image(source)
    name = _replace_file(_prepared_names(scan)[1], prepared.thumbnail)
    Scan.objects.filter(pk=scan.pk).update(thumbnail=name)
    return True


def regenerate_thumbnails(scan_ids) -> str:
    """Fan the work out in chunks: a group of starmap tasks, 20 scans each."""
    result = (
        chunks(  # what Task.chunks builds; the stubs want a Task where Celery passes a signature
            app.signature(REGENERATE_THUMBNAIL),  # type: ignore[arg-type]
            ((str(scan_id),) for scan_id in scan_ids),
            20,
            app=app,
        )
        .group()
        .apply_async()
    )
    return result.id

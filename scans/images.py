"""Checking an uploaded photo before a scan is accepted."""

from __future__ import annotations

import warnings

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from PIL import Image, UnidentifiedImageError

# Formats are sniffed from the content, never from the file name; everything else (EPS, PSD,
# TIFF, PDF …) never reaches a Pillow decoder.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")


def _has_allowed_signature(head: bytes) -> bool:
    """True if the first bytes claim an allowed format (so a failure means a damaged file)."""
    return (
        head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head[:6] in (b"GIF87a", b"GIF89a")
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    )


def validate_scan_image(upload) -> None:
    """Raise ValidationError with a readable message unless ``upload`` is a usable photo."""
    max_bytes = settings.SCAN_IMAGE_MAX_BYTES
    if upload.size == 0:
        raise ValidationError(_("The file is empty."), code="empty")
    if upload.size > max_bytes:
        raise ValidationError(
            _("The photo is %(size)s; the limit is %(limit)s.")
            % {"size": filesizeformat(upload.size), "limit": filesizeformat(max_bytes)},
            code="too_large",
        )
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload, formats=ALLOWED_FORMATS) as image:
                image.verify()
    except UnidentifiedImageError as exc:
        if _has_allowed_signature(head):
            raise ValidationError(
                _("The photo is damaged or truncated and cannot be read."), code="corrupt"
            ) from exc
        raise ValidationError(
            _("This is not a JPEG, PNG, WebP or GIF photo."), code="unsupported_format"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValidationError(_("The photo has too many pixels."), code="too_many_pixels") from exc
    except Exception as exc:  # Pillow raises many types for truncated or corrupt data
        raise ValidationError(
            _("The photo is damaged or truncated and cannot be read."), code="corrupt"
        ) from exc
    finally:
        upload.seek(0)

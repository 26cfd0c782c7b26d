"""Uploaded photos: checked before a scan is accepted, re-encoded before anything uses them."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from PIL import Image, ImageOps, UnidentifiedImageError

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


@dataclass(frozen=True)
class PreparedImage:
    """A photo as Eco² keeps, shows and sends it: upright, metadata-free JPEG, bounded size."""

    jpeg: bytes
    thumbnail: bytes
    width: int
    height: int
    sha256: str


class ImagePreparationError(ValueError):
    """The stored upload cannot be turned into a usable photo; the message is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG; transparent pixels land on white rather than black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    # No exif= and no icc_profile= arguments: the output carries no metadata at all (GPS,
    # camera serials, timestamps), whatever the upload had.
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def prepare_image(source) -> PreparedImage:
    """Re-encode an upload: EXIF orientation applied, metadata stripped, longest edge capped.

    Runs on a worker (decoding a large photo costs tens of milliseconds, too much for the
    upload request). Only allow-listed formats are decoded, with Pillow's decompression-bomb
    limit in force; an animated GIF contributes its first frame.
    """
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=ALLOWED_FORMATS) as original:
                original.seek(0)  # first frame of an animation
                upright = ImageOps.exif_transpose(original)
                image = _flatten(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImagePreparationError("too_many_pixels", "The photo has too many pixels.") from exc
    except UnidentifiedImageError as exc:
        raise ImagePreparationError(
            "unsupported_format", "The stored photo is not a JPEG, PNG, WebP or GIF."
        ) from exc
    except Exception as exc:  # truncated or corrupt data raises many types inside Pillow
        raise ImagePreparationError("corrupt", "The photo is damaged and cannot be read.") from exc

    max_edge = settings.SCAN_IMAGE_MAX_EDGE
    if max(image.size) > max_edge:
        image.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    jpeg = _encode_jpeg(image, settings.SCAN_IMAGE_JPEG_QUALITY)
    thumb = image.copy()
    thumb.thumbnail(
        (settings.SCAN_THUMBNAIL_EDGE, settings.SCAN_THUMBNAIL_EDGE), Image.Resampling.LANCZOS
    )
    return PreparedImage(
        jpeg=jpeg,
        thumbnail=_encode_jpeg(thumb, 80),
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(jpeg).hexdigest(),
    )

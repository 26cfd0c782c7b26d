"""Uploaded photos: checked before a scan is accepted, re-encoded before anything uses them."""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import CodedError

# Formats are sniffed from the content, never from the file name; everything else (EPS, PSD,
# TIFF, PDF …) never reaches a Pillow decoder.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")


class UnusablePhoto(CodedError, ValueError):
    """The file cannot be used as a photo."""

    code = "corrupt"


def _has_allowed_signature(head: bytes) -> bool:
    """True if the first bytes claim an allowed format (so a failure means a damaged file)."""
    return (
        head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head[:6] in (b"GIF87a", b"GIF89a")
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    )


@contextmanager
def open_photo(source) -> Iterator[Image.Image]:
    """Open an allow-listed photo; any decoding problem inside the block is an UnusablePhoto.

    Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both are refused.
    """
    source.seek(0)
    head = source.read(16)
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=ALLOWED_FORMATS) as image:
                yield image
    except UnusablePhoto:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnusablePhoto(_("The photo has too many pixels."), code="too_many_pixels") from exc
    except UnidentifiedImageError as exc:
        if not _has_allowed_signature(head):
            raise UnusablePhoto(
                _("This is not a JPEG, PNG, WebP or GIF photo."), code="unsupported_format"
            ) from exc
        raise UnusablePhoto(
            _("The photo is damaged or truncated and cannot be read."), code="corrupt"
        ) from exc
    except Exception as exc:  # Pillow raises many types for truncated or corrupt data
        raise UnusablePhoto(
            _("The photo is damaged or truncated and cannot be read."), code="corrupt"
        ) from exc
    finally:
        source.seek(0)


def check_photo(source) -> None:
    """Raise UnusablePhoto unless ``source`` (a binary file object) is an allowed, readable
    photo: the same check for an upload and for a photo fetched from ``image_url``."""
    with open_photo(source) as image:
        image.verify()
    # verify() reads PNG and WebP to their end but not the scan data of JPEG and GIF: decode
    # those too, so a truncated file is a 400 now rather than a failed scan later. A JPEG that
    # ends with its end-of-image marker was not cut short, so it skips the decode: even at
    # 1/8 scale (draft) that is ~10 ms of the upload request for 1 MB (bench/api_latency.py).
    # Photos with data after the marker (motion photos) or without it are decoded. Damage
    # inside a complete file shows when the worker prepares the photo: the scan fails, saying so.
    with open_photo(source) as image:
        if image.format == "JPEG" and not _ends_with_jpeg_eoi(source):
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        elif image.format == "GIF":
            image.load()


def _ends_with_jpeg_eoi(source) -> bool:
    position = source.tell()
    try:
        source.seek(0, io.SEEK_END)
        size = source.tell()
        source.seek(max(0, size - 2))
        return source.read(2) == b"\xff\xd9"
    finally:
        source.seek(position)


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
    try:
        check_photo(upload)
    except UnusablePhoto as exc:
        raise ValidationError(exc.message, code=exc.code) from exc


@dataclass(frozen=True)
class PreparedImage:
    """A photo as Eco² keeps, shows and sends it: upright sRGB pixels in a JPEG, bounded size,
    and nothing else (no EXIF, GPS, XMP, IPTC, ICC profile or comment)."""

    jpeg: bytes
    thumbnail: bytes
    width: int
    height: int
    sha256: str


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG; transparent pixels land on white rather than black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# the ICC colour space a profile describes → the image mode it applies to
_PROFILE_MODES = {"RGB ": "RGB", "CMYK": "CMYK", "GRAY": "L"}


@functools.lru_cache(maxsize=16)  # phones embed the same few profiles (Display P3, sRGB)
def _srgb_transform(icc_profile: bytes) -> ImageCms.ImageCmsTransform | None:
    """A transform from the photo's ICC profile to sRGB pixels; None for a profile that
    cannot be used (damaged, or for a colour space photos are not in)."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        mode = _PROFILE_MODES.get(profile.profile.xcolor_space)
        if mode is None:
            return None
        return ImageCms.buildTransform(profile, _SRGB, mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """``image``'s colours in sRGB, when an ICC profile says they are in another space.

    The profile is not kept (it can carry text, and device profiles identify the device), so
    the pixels are converted: an untagged JPEG is read as sRGB by browsers and vision models,
    and a Display P3 photo left unconverted would look washed out. A profile that cannot be
    used, or does not fit the image's mode, is ignored: the pixels are kept as they are.
    """
    transform = _srgb_transform(icc_profile) if icc_profile else None
    if transform is None or transform.input_mode != image.mode:
        return image
    return transform.apply(image)


def _pixels_only(image: Image.Image) -> Image.Image:
    """A new image with ``image``'s pixels and nothing else.

    Image.info travels through convert, resize and copy, and encoders read it: Pillow's JPEG
    writer takes ``info["comment"]`` (a JPEG COM segment or a GIF comment, which also made a
    comment over 65,533 bytes fail the encode). What reaches the encoder has no info at all.
    """
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    return clean


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    # an image from _pixels_only and no exif=, icc_profile=, xmp=, comment= or extra=
    # arguments: the output carries no metadata at all, whatever the upload had
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def prepare_image(source) -> PreparedImage:
    """Re-encode an upload: EXIF orientation applied, colours in sRGB, metadata stripped,
    longest edge capped.

    Runs on a worker (decoding a large photo costs tens of milliseconds, too much for the
    upload request). An animated GIF contributes its first frame. Raises UnusablePhoto.
    """
    with open_photo(source) as original:
        original.seek(0)
        icc_profile = original.info.get("icc_profile") or None
        image = ImageOps.exif_transpose(original)
        if image.mode in ("CMYK", "L"):
            # CMYK and grey profiles need the photo's own channels; RGB ones are applied below
            image = _to_srgb(image, icc_profile)
        image = _flatten(image)
    max_edge = settings.SCAN_IMAGE_MAX_EDGE
    if max(image.size) > max_edge:
        image.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    # after the resize: ~10 ms for 1024 px instead of ~200 ms for a 12-megapixel photo
    image = _pixels_only(_to_srgb(image, icc_profile))
    jpeg = _encode_jpeg(image, settings.SCAN_IMAGE_JPEG_QUALITY)
    thumb = image.copy()
    edge = settings.SCAN_THUMBNAIL_EDGE
    thumb.thumbnail((edge, edge), Image.Resampling.LANCZOS)
    return PreparedImage(
        jpeg=jpeg,
        thumbnail=_encode_jpeg(thumb, 80),
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(jpeg).hexdigest(),
    )

"""Uploaded photos: checked before a scan is accepted, re-encoded before anything uses them."""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from .errors import CodedError

# HEIC/HEIF (iPhones, macOS Safari, many Android phones) through pillow-heif; AVIF is Pillow's
# own. Depth maps, auxiliary images and embedded thumbnails are never used, so never parsed.
register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

# Formats are sniffed from the content, never from the file name; everything else (EPS, PSD,
# TIFF, PDF …) never reaches a Pillow decoder.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "AVIF", "HEIF")

# What browsers and servers call those formats (Content-Type, a file's type in JavaScript): the
# Accept header of image_url fetches and the upload page's early check. The content decides.
PHOTO_CONTENT_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/avif",
    "image/heic",
    "image/heif",
    "image/heic-sequence",
    "image/heif-sequence",
)

# ISO base media files (HEIC/HEIF, AVIF) say what they are in their first box: `ftyp` and a brand
ISOBMFF_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
    | {b"mif1", b"msf1", b"avif", b"avis"}
)


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
        or _is_heif_or_avif(head)
    )


def _is_heif_or_avif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in ISOBMFF_IMAGE_BRANDS


def _top_level_boxes(source, max_boxes: int = 100) -> tuple[list[tuple[bytes, int, int]], int]:
    """The (type, offset, declared size) of a HEIF/AVIF file's top-level boxes, and the file's
    size. A declared size may run past the end of the file: the file was cut short."""
    source.seek(0, io.SEEK_END)
    file_size = source.tell()
    boxes: list[tuple[bytes, int, int]] = []
    offset = 0
    while offset + 8 <= file_size and len(boxes) < max_boxes:
        source.seek(offset)
        header = source.read(16)
        size, kind = struct.unpack(">I4s", header[:8])
        if size == 1 and len(header) == 16:  # a 64-bit size follows the type
            size = struct.unpack(">Q", header[8:16])[0]
        elif size == 0:  # the last box, to the end of the file
            size = file_size - offset
        if size < 8:
            break  # not a box: a trailer some phones append
        boxes.append((kind, offset, size))
        offset += size
    return boxes, file_size


def _child_boxes(data: bytes, start: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of the boxes in ``data[start:]``."""
    offset = start
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size < 8:
            return
        yield kind, data[offset + 8 : offset + size]
        offset += size


def _declared_heif_pixels(source) -> int:
    """The largest image a HEIF/AVIF file declares (the `ispe` properties), without decoding.

    What Pillow is told is the displayed size, after a clean-aperture crop (`clap`): a huge
    coded image cropped to a few pixels would pass its check and be decoded whole. And libavif
    refuses files above its own limit before Pillow sees their size: this names them a bomb.
    """
    boxes, _file_size = _top_level_boxes(source)
    meta = next(((offset, size) for kind, offset, size in boxes if kind == b"meta"), None)
    if meta is None:
        return 0
    source.seek(meta[0])
    data = source.read(min(meta[1], 1024 * 1024))  # a camera's is a few kilobytes
    header = 16 if data[:4] == b"\x00\x00\x00\x01" else 8  # a 64-bit size, or not
    largest = 0
    # meta is a full box: its version and flags come before its children
    for kind, iprp in _child_boxes(data, header + 4):
        if kind != b"iprp":
            continue
        for kind, ipco in _child_boxes(iprp):
            if kind != b"ipco":
                continue
            for kind, ispe in _child_boxes(ipco):
                if kind == b"ispe" and len(ispe) >= 12:
                    width, height = struct.unpack(">II", ispe[4:12])  # after version and flags
                    largest = max(largest, width * height)
    return largest


def _check_declared_size(source) -> None:
    if _declared_heif_pixels(source) > Image.MAX_IMAGE_PIXELS:
        raise UnusablePhoto(_("The photo has too many pixels."), code="too_many_pixels")


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
                if image.format in ("AVIF", "HEIF"):
                    _check_declared_size(source)  # the decoders have read the whole file
                yield image
    except UnusablePhoto:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnusablePhoto(_("The photo has too many pixels."), code="too_many_pixels") from exc
    except UnidentifiedImageError as exc:
        if not _has_allowed_signature(head):
            raise UnusablePhoto(
                _("This is not a JPEG, PNG, WebP, GIF, HEIC or AVIF photo."),
                code="unsupported_format",
            ) from exc
        if _is_heif_or_avif(head):
            _check_declared_size(source)
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
    # Photos with data after the marker (motion photos) or without it are decoded. HEIC and AVIF
    # are checked as far as their headers (a decode costs hundreds of milliseconds for a phone's
    # photo). Damage inside a file that passes shows when the worker prepares the photo: the scan
    # fails, saying so (`corrupt`).
    with open_photo(source) as image:
        if image.format == "JPEG" and not _ends_with_jpeg_eoi(source):
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        elif image.format == "GIF":
            image.load()
        elif image.format in ("AVIF", "HEIF") and not _boxes_complete(source):
            raise UnusablePhoto(
                _("The photo is damaged or truncated and cannot be read."), code="corrupt"
            )


def _boxes_complete(source) -> bool:
    """False if a HEIF/AVIF file's metadata or image data runs past its end (an upload cut
    short): libheif notices a cut `meta` box when opening the file, libavif only when decoding.
    """
    boxes, file_size = _top_level_boxes(source)
    return all(
        offset + size <= file_size for kind, offset, size in boxes if kind in (b"meta", b"mdat")
    )


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

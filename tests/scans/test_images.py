"""What counts as a usable photo: checked by content, never by file name."""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from scans.images import validate_scan_image
from tests.conftest import make_photo_bytes
from tests.photos import declaring_size, photo_bytes, textured_photo_bytes


def upload(data: bytes, name: str = "photo.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "AVIF", "HEIF"])
def test_allowed_formats_pass(fmt):
    validate_scan_image(upload(photo_bytes(fmt), name="any-name.bin"))


def test_heif_files_whose_main_brand_is_the_generic_one_pass():
    """Android phones write HEIC with the major brand `mif1` (as AVIF's may be): each goes to
    the decoder that can read it."""
    for fmt in ("HEIF", "AVIF"):
        data = photo_bytes(fmt)
        validate_scan_image(upload(data[:8] + b"mif1" + data[12:]))


def other_format(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"hello, I am text", "unsupported_format"),
        (other_format("TIFF"), "unsupported_format"),
        (other_format("BMP"), "unsupported_format"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n", "unsupported_format"),
        (make_photo_bytes("PNG")[:40], "corrupt"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100), "corrupt"),
        (textured_photo_bytes("HEIF")[:-100], "corrupt"),
        (textured_photo_bytes("AVIF")[:-100], "corrupt"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(100), "unsupported_format"),
    ],
    ids=[
        "empty",
        "text",
        "tiff-named-jpg",
        "bmp",
        "eps",
        "truncated-png",
        "heic-header-then-garbage",
        "truncated-heic",
        "truncated-avif",
        "mp4-video",
    ],
)
def test_unusable_files_are_refused_with_a_code(data, code):
    with pytest.raises(ValidationError) as error:
        validate_scan_image(upload(data))
    assert error.value.code == code


def test_too_large_files_are_refused_before_decoding(settings):
    from django.utils import translation

    settings.SCAN_IMAGE_MAX_BYTES = 100
    with translation.override("en"), pytest.raises(ValidationError) as error:
        validate_scan_image(upload(make_photo_bytes(size=(200, 200))))
    assert error.value.code == "too_large"
    assert "limit is 100" in error.value.messages[0]


def test_decompression_bombs_are_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValidationError) as error:
        validate_scan_image(upload(make_photo_bytes("PNG", size=(40, 40))))
    assert error.value.code == "too_many_pixels"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("side", [15_000, 50_000])
def test_heic_and_avif_bombs_are_refused(fmt, side):
    """A small file declaring side × side coded pixels: above Pillow's limit (15,000²) and
    above libavif's own (50,000², refused by libavif before Pillow sees the size). The HEIC
    (64 × 48, coded as 64 × 64) has a clean-aperture crop: libheif tells Pillow the cropped
    size, so Pillow's own check alone would let it through to be decoded whole."""
    data = photo_bytes(fmt, size=(64, 48))
    assert fmt == "AVIF" or b"clap" in data
    with pytest.raises(ValidationError) as error:
        validate_scan_image(upload(declaring_size(data, side, side)))
    assert error.value.code == "too_many_pixels"


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_over_the_configured_pixel_limit_are_refused(fmt, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValidationError) as error:
        validate_scan_image(upload(photo_bytes(fmt, size=(40, 40))))
    assert error.value.code == "too_many_pixels"


def test_a_jpeg_cut_short_is_refused_and_one_with_data_after_its_end_marker_is_not():
    """A complete JPEG (ending with its end-of-image marker) skips the scan-data decode; one
    without the marker is decoded, so a cut upload is a 400 and a motion photo (a video
    appended after the JPEG) is still accepted."""
    photo = make_photo_bytes("JPEG", size=(64, 48))
    assert photo.endswith(b"\xff\xd9")
    validate_scan_image(upload(photo))
    validate_scan_image(upload(photo + b"\x00\x00\x00\x18ftypmp42" + bytes(200)))
    for cut in (photo[: len(photo) // 2], photo[:-2]):
        with pytest.raises(ValidationError) as error:
            validate_scan_image(upload(cut))
        assert error.value.code == "corrupt"

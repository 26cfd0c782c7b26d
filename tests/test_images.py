"""What counts as a usable photo: checked by content, never by file name."""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from scans.images import validate_scan_image

from .conftest import make_photo_bytes


def upload(data: bytes, name: str = "photo.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_allowed_formats_pass(fmt):
    validate_scan_image(upload(make_photo_bytes(fmt), name="any-name.bin"))


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
    ],
    ids=["empty", "text", "tiff-named-jpg", "bmp", "eps", "truncated-png"],
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

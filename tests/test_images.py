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

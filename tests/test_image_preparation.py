"""What is kept, shown and sent of a photo: upright, no metadata, bounded size."""

import io

import pytest
from PIL import ExifTags, Image

from scans.images import UnusablePhoto, prepare_image


def jpeg_with_exif(size=(40, 20), orientation=6) -> bytes:
    """A camera-like JPEG: rotated by its EXIF orientation, with GPS and a camera make."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "SecretCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (37.0, 33.0, 59.0)
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def encode(image: Image.Image, fmt: str, **kwargs) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    buffer.seek(0)
    return buffer


def test_orientation_is_applied_and_every_metadata_tag_is_gone():
    original = jpeg_with_exif()
    assert b"SecretCam" in original

    prepared = prepare_image(io.BytesIO(original))

    out = Image.open(io.BytesIO(prepared.jpeg))
    assert out.format == "JPEG"
    assert out.size == (20, 40), "rotated upright, as the camera meant"
    assert dict(out.getexif()) == {}
    assert b"SecretCam" not in prepared.jpeg and b"Exif" not in prepared.jpeg
    assert "icc_profile" not in out.info


def test_large_photos_are_capped_at_the_max_edge(settings):
    settings.SCAN_IMAGE_MAX_EDGE = 1024
    settings.SCAN_THUMBNAIL_EDGE = 320
    prepared = prepare_image(encode(Image.new("RGB", (3000, 1000), "blue"), "PNG"))

    assert (prepared.width, prepared.height) == (1024, 341)
    assert Image.open(io.BytesIO(prepared.jpeg)).size == (1024, 341)
    assert max(Image.open(io.BytesIO(prepared.thumbnail)).size) == 320


def test_small_photos_are_not_upscaled():
    prepared = prepare_image(encode(Image.new("RGB", (50, 30), "blue"), "PNG"))
    assert (prepared.width, prepared.height) == (50, 30)


def test_transparency_becomes_white_not_black():
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    prepared = prepare_image(encode(image, "PNG"))
    assert Image.open(io.BytesIO(prepared.jpeg)).getpixel((5, 5)) >= (250, 250, 250)


def test_an_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (10, 10), color) for color in ((0, 200, 0), (200, 0, 0))]
    buffer = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, green, _blue = Image.open(io.BytesIO(prepare_image(buffer).jpeg)).getpixel((5, 5))
    assert green > 150 and red < 60


def test_the_hash_identifies_the_prepared_bytes():
    first = prepare_image(io.BytesIO(jpeg_with_exif()))
    again = prepare_image(io.BytesIO(jpeg_with_exif()))
    other = prepare_image(io.BytesIO(jpeg_with_exif(size=(41, 20))))
    assert first.sha256 == again.sha256 != other.sha256


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (jpeg_with_exif()[:200], "corrupt"),
        (b"GIF89a-not-really", "corrupt"),
        (b"plain text", "unsupported_format"),
    ],
    ids=["truncated-jpeg", "broken-gif", "text"],
)
def test_unreadable_uploads_fail_with_a_reason(data, code):
    with pytest.raises(UnusablePhoto) as error:
        prepare_image(io.BytesIO(data))
    assert error.value.code == code


def test_bombs_are_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UnusablePhoto) as error:
        prepare_image(encode(Image.new("RGB", (40, 40)), "PNG"))
    assert error.value.code == "too_many_pixels"

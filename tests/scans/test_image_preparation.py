"""What is kept, shown and sent of a photo: upright, no metadata, bounded size."""

import io

import pytest
from PIL import ExifTags, Image

from scans.images import UnusablePhoto, prepare_image
from tests.photos import (
    METADATA_CASES,
    assert_pixels_only,
    carries,
    icc_profile,
    marker,
    photo_bytes,
    photo_with_metadata,
    textured_photo_bytes,
    to_bytes,
    with_damaged_pixels,
)


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


# --- pixels only: every metadata container of every format ---------------------------------
@pytest.mark.parametrize(
    ("fmt", "container"), METADATA_CASES, ids=[f"{f}-{c}" for f, c in METADATA_CASES]
)
def test_the_prepared_photo_and_its_thumbnail_carry_pixels_only(fmt, container):
    """Whatever the upload carried (EXIF, GPS, XMP, IPTC, ICC, comments, text chunks, GIF
    extensions), the stored photo, the thumbnail and what a provider is sent have none of it."""
    text = marker(container)
    original = photo_with_metadata(fmt, container, text)
    assert carries(original, text), "the test photo holds the marker"

    prepared = prepare_image(io.BytesIO(original))

    assert_pixels_only(prepared.jpeg, text)
    assert_pixels_only(prepared.thumbnail, text)


@pytest.mark.parametrize("length", [2_000, 65_534, 300_000])
def test_a_gif_with_a_long_comment_is_prepared_without_it(length):
    """A GIF comment has no length limit; it used to be copied into the JPEG's COM segment,
    whose limit is 65,533 bytes (so longer ones failed the scan with internal_error)."""
    comment = (marker("comment") + b" ") * (length // 24 + 1)
    original = photo_bytes("GIF", size=(120, 80), comment=comment[:length])
    assert len(Image.open(io.BytesIO(original)).info["comment"]) == length

    prepared = prepare_image(io.BytesIO(original))

    assert_pixels_only(prepared.jpeg, marker("comment"))
    assert_pixels_only(prepared.thumbnail, marker("comment"))
    assert (prepared.width, prepared.height) == (120, 80)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF", "HEIF"])
def test_colours_in_another_icc_profile_are_converted_to_srgb_not_dropped(fmt):
    """The profile is not kept, so its colours are: (200, 30, 30) in a profile whose red and
    blue primaries are swapped is a blue, and the prepared (untagged, sRGB) photo shows blue."""
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    original = to_bytes(image, fmt, icc_profile=icc_profile(swap_red_and_blue=True))

    prepared = prepare_image(io.BytesIO(original))

    red, _green, blue = Image.open(io.BytesIO(prepared.jpeg)).getpixel((16, 16))
    assert blue > 150 and red < 90, (red, blue)
    assert "icc_profile" not in Image.open(io.BytesIO(prepared.jpeg)).info
    # an sRGB profile changes nothing
    plain = prepare_image(io.BytesIO(to_bytes(image, fmt, icc_profile=icc_profile())))
    red, _green, blue = Image.open(io.BytesIO(plain.jpeg)).getpixel((16, 16))
    assert red > 170 and blue < 60, (red, blue)


def test_a_damaged_icc_profile_is_ignored_not_fatal():
    original = to_bytes(Image.new("RGB", (32, 32), (200, 30, 30)), "JPEG", icc_profile=b"junk" * 40)
    prepared = prepare_image(io.BytesIO(original))
    assert Image.open(io.BytesIO(prepared.jpeg)).getpixel((16, 16))[0] > 170


# --- HEIC/HEIF and AVIF ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_heic_and_avif_photos_are_prepared_upright(fmt):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "SecretCam"
    # as cameras write them: the rotation in the container (irot), the same in EXIF
    original = to_bytes(Image.new("RGB", (40, 20), (200, 30, 30)), fmt, exif=exif.tobytes())

    prepared = prepare_image(io.BytesIO(original))

    assert (prepared.width, prepared.height) == (20, 40), "rotated upright, as the camera meant"
    assert_pixels_only(prepared.jpeg, b"SecretCam")


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_heic_and_avif_with_damaged_pixels_fail_as_corrupt(fmt):
    original = with_damaged_pixels(textured_photo_bytes(fmt))
    with pytest.raises(UnusablePhoto) as error:
        prepare_image(io.BytesIO(original))
    assert error.value.code == "corrupt"

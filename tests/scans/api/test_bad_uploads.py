"""The bad-upload corpus and the size limits: every malformed, hostile or oversize upload is a
clear 4xx that stores nothing; HEIC and AVIF photos are taken. (SSRF and image_url:
tests/scans/test_fetch.py; schemathesis: tests/scans/api/test_schema.py.)"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from django.test import Client
from PIL import Image

from scans import services
from scans.models import Scan
from tests.conftest import make_photo_bytes
from tests.photos import CONTENT_TYPES, declaring_size, photo_bytes, textured_photo_bytes
from tests.scans.api.helpers import BATCH_URL, EN, SCANS_URL, upload
from tests.support.translations import ensure_compiled_messages


# --- the bad-upload corpus ----------------------------------------------------------------------
def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A 100-byte PNG that declares 2.5 billion pixels (Pillow refuses above ~179 M)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def pillow_bytes(fmt: str, size=(64, 48), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, format=fmt)
    return buffer.getvalue()


def truncated(fmt: str) -> bytes:
    data = make_photo_bytes(fmt, size=(200, 150))
    return data[: int(len(data) * 0.7)]


def wrong_magic_jpeg() -> bytes:
    data = bytearray(make_photo_bytes("JPEG"))
    data[:3] = b"\x00\x00\x00"
    return bytes(data)


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "eco2boundary") -> bytes:
    """A hand-written multipart body: (field name, file name or None, raw bytes)."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def post_file(name, content, content_type="image/jpeg", **fields):
    return lambda client: client.post(
        SCANS_URL,
        {"image": upload(name, content, content_type), **fields},
        format="multipart",
        **EN,
    )


def post_raw(body: bytes, content_type: str, **extra):
    return lambda client: client.generic(
        "POST", SCANS_URL, body, content_type=content_type, **EN, **extra
    )


BOUNDARY = "multipart/form-data; boundary=eco2boundary"

# (id, request, expected status, field the message is under or None)
BAD_UPLOADS = [
    ("zero-byte file", post_file("empty.jpg", b""), 400, "image"),
    ("whitespace-only file", post_file("blank.jpg", b"   \n"), 400, "image"),
    ("plain text", post_file("note.jpg", b"this is not a photo at all"), 400, "image"),
    ("html", post_file("page.png", b"<!doctype html><script>alert(1)</script>"), 400, "image"),
    ("pdf", post_file("doc.jpg", b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"), 400, "image"),
    (
        "svg",
        post_file(
            "vector.png",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml",
        ),
        400,
        "image",
    ),
    (
        "eps",
        post_file("art.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),
        400,
        "image",
    ),
    ("tiff", post_file("scan.jpg", pillow_bytes("TIFF"), "image/tiff"), 400, "image"),
    ("bmp", post_file("paint.jpg", pillow_bytes("BMP"), "image/bmp"), 400, "image"),
    ("ico", post_file("favicon.png", pillow_bytes("ICO", (32, 32))), 400, "image"),
    (
        "psd header",
        post_file("layers.jpg", b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + b"\x00" * 40),
        400,
        "image",
    ),
    ("truncated jpeg", post_file("cut.jpg", truncated("JPEG")), 400, "image"),
    ("truncated png", post_file("cut.png", truncated("PNG"), "image/png"), 400, "image"),
    ("truncated gif", post_file("cut.gif", truncated("GIF"), "image/gif"), 400, "image"),
    ("truncated webp", post_file("cut.webp", truncated("WEBP"), "image/webp"), 400, "image"),
    ("jpeg with wrong magic", post_file("magic.jpg", wrong_magic_jpeg()), 400, "image"),
    (
        "gif header then html",
        post_file("poly.gif", b"GIF89a<html><script>x</script>"),
        400,
        "image",
    ),
    ("decompression bomb png", post_file("bomb.png", png_bomb(), "image/png"), 400, "image"),
    (
        "decompression bomb heic",
        post_file("bomb.heic", declaring_size(photo_bytes("HEIF"), 20_000, 20_000), "image/heic"),
        400,
        "image",
    ),
    (
        "decompression bomb avif",
        post_file("bomb.avif", declaring_size(photo_bytes("AVIF"), 50_000, 50_000), "image/avif"),
        400,
        "image",
    ),
    (
        "text named heic",
        post_file("photo.heic", b"an iPhone photo, honest", "image/heic"),
        400,
        "image",
    ),
    (
        "heic header then html",
        post_file("poly.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic<html>"),
        400,
        "image",
    ),
    (
        "truncated heic",
        post_file("cut.heic", textured_photo_bytes("HEIF")[:-100], "image/heic"),
        400,
        "image",
    ),
    (
        "truncated avif",
        post_file("cut.avif", textured_photo_bytes("AVIF")[:-100], "image/avif"),
        400,
        "image",
    ),
    (
        "two images on the single endpoint",
        lambda client: client.post(
            SCANS_URL,
            {"image": [upload("a.jpg", make_photo_bytes()), upload("b.jpg", make_photo_bytes())]},
            format="multipart",
            **EN,
        ),
        400,
        "image",
    ),
    (
        "image and image_url both",
        post_file("a.jpg", make_photo_bytes(), image_url="https://example.com/a.jpg"),
        400,
        "non_field_errors",
    ),
    (
        "neither image nor image_url",
        lambda client: client.post(SCANS_URL, {"hint": "캔"}, format="multipart", **EN),
        400,
        "image",
    ),
    ("hint too long", post_file("a.jpg", make_photo_bytes(), hint="가" * 201), 400, "hint"),
    (
        "non-UTF-8 hint bytes",
        post_raw(
            multipart(("image", "a.jpg", make_photo_bytes()), ("hint", None, b"\xff\xfe\xc0")),
            BOUNDARY,
        ),
        400,
        "hint",
    ),
    (
        "NUL in the hint",
        post_raw(
            multipart(("image", "a.jpg", make_photo_bytes()), ("hint", None, b"a\x00b")), BOUNDARY
        ),
        400,
        "hint",
    ),
    (
        "multipart without a boundary",
        post_raw(multipart(("image", "a.jpg", make_photo_bytes())), "multipart/form-data"),
        400,
        None,
    ),
    (
        "multipart with another boundary than declared",
        post_raw(
            multipart(("image", "a.jpg", make_photo_bytes())), "multipart/form-data; boundary=x"
        ),
        400,
        "image",
    ),
    (
        "multipart cut before its end",
        post_raw(multipart(("image", "a.jpg", make_photo_bytes()))[:-40], BOUNDARY),
        400,
        "image",
    ),
    (
        "image part without a file name (a plain field)",
        post_raw(multipart(("image", None, b"abc")), BOUNDARY),
        400,
        "image",
    ),
    (
        "json with a base64 string as image",
        lambda client: client.post(
            SCANS_URL, {"image": "/9j/4AAQSkZJRgABAQ=="}, format="json", **EN
        ),
        400,
        "image",
    ),
    ("malformed json", post_raw(b'{"image": ', "application/json"), 400, None),
    ("json that is not utf-8", post_raw(b'\xff\xfe{"hint": 1}', "application/json"), 400, None),
    (
        "json list instead of object",
        post_raw(b"[1, 2]", "application/json"),
        400,
        "non_field_errors",
    ),
    ("wrong content type", post_raw(b"image bytes", "text/plain"), 415, None),
    (
        "more files than Django accepts in one request",
        post_raw(multipart(*[("image", f"{n}.jpg", b"x") for n in range(12)]), BOUNDARY),
        400,
        None,
    ),
    (
        "more form fields than Django accepts",
        post_raw(b"&".join(b"f%d=1" % n for n in range(1100)), "application/x-www-form-urlencoded"),
        400,
        None,
    ),
    (
        "3 MB of form fields (not files)",
        post_raw(multipart(("hint", None, b"a" * 3_000_000)), BOUNDARY),
        400,
        None,
    ),
    ("empty body", post_raw(b"", "multipart/form-data; boundary=eco2boundary"), 400, "image"),
    (
        "invalid Content-Length",
        post_raw(b"x", "application/json", CONTENT_LENGTH="12abc"),
        400,
        None,
    ),
    (
        "Content-Length of 1 GB (413 before the body is read)",
        post_raw(b"x", BOUNDARY, CONTENT_LENGTH=str(10**9)),
        413,
        None,
    ),
    (
        "image_url with a file scheme",
        lambda client: client.post(SCANS_URL, {"image_url": "file:///etc/passwd"}, format="json"),
        400,
        "image_url",
    ),
    (
        "image_url too long",
        lambda client: client.post(
            SCANS_URL, {"image_url": "https://example.com/" + "a" * 3000}, format="json"
        ),
        400,
        "image_url",
    ),
    (
        "Idempotency-Key too long",
        lambda client: client.post(
            SCANS_URL,
            {"image": upload("a.jpg", make_photo_bytes())},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="k" * 300,
        ),
        400,
        None,
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("send", "expected", "field"),
    [pytest.param(send, expected, field, id=name) for name, send, expected, field in BAD_UPLOADS],
)
def test_every_bad_upload_is_a_clear_4xx_and_creates_nothing(api_client, send, expected, field):
    response = send(api_client)

    assert response.status_code == expected, response.content[:300]
    body = response.json()
    if field:
        assert field in body, body
        assert all(isinstance(message, str) and message for message in body[field])
    else:
        assert body.get("detail"), body
    assert Scan.objects.count() == 0


def test_the_corpus_is_large_enough():
    assert len(BAD_UPLOADS) >= 20


@pytest.mark.django_db
def test_messages_are_readable(api_client):
    response = post_file("bomb.png", png_bomb(), "image/png")(api_client)
    assert response.json()["image"] == ["The photo has too many pixels."]
    response = post_file("cut.jpg", truncated("JPEG"))(api_client)
    assert "damaged" in response.json()["image"][0]
    response = post_file("doc.jpg", b"%PDF-1.7")(api_client)
    assert response.json()["image"] == ["This is not a JPEG, PNG, WebP, GIF, HEIC or AVIF photo."]
    bomb = declaring_size(photo_bytes("HEIF"), 20_000, 20_000)
    response = post_file("bomb.heic", bomb, "image/heic")(api_client)
    assert response.json()["image"] == ["The photo has too many pixels."]
    ensure_compiled_messages()
    response = api_client.post(
        SCANS_URL,
        {"image": upload("doc.heic", b"%PDF-1.7", "image/heic")},
        format="multipart",
        HTTP_ACCEPT_LANGUAGE="ko",
    )
    assert response.json()["image"] == ["JPEG, PNG, WebP, GIF, HEIC, AVIF 사진이 아니에요."]


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_heic_and_avif_photos_are_accepted_alone_and_in_a_batch(api_client, fmt):
    """What iPhones, macOS Safari and Android phones send: 202, like a JPEG."""
    name, content_type = f"photo.{fmt.lower()}", CONTENT_TYPES[fmt]

    response = api_client.post(
        SCANS_URL, {"image": upload(name, photo_bytes(fmt), content_type)}, format="multipart"
    )
    assert response.status_code == 202, response.content

    images = [upload(name, photo_bytes(fmt, color=(i, 90, 40)), content_type) for i in (1, 2)]
    response = api_client.post(BATCH_URL, {"images": images}, format="multipart")
    assert response.status_code == 202, response.content
    assert Scan.objects.count() == 3


@pytest.mark.django_db
def test_oversize_request_is_413_and_a_big_file_in_a_small_request_is_400(api_client, settings):
    settings.SCAN_IMAGE_MAX_BYTES = 100_000
    big = upload("big.jpg", b"\xff\xd8\xff" + b"\x00" * 300_000)
    response = api_client.post(SCANS_URL, {"image": big}, format="multipart", **EN)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]

    slightly = upload("slightly.jpg", b"\xff\xd8\xff" + b"\x00" * 120_000)
    response = api_client.post(SCANS_URL, {"image": slightly}, format="multipart", **EN)
    assert response.status_code == 400
    assert "limit" in response.json()["image"][0]

    many = [upload(f"{n}.jpg", b"\xff\xd8\xff" + b"\x00" * 95_000) for n in range(12)]
    settings.SCAN_BATCH_MAX_IMAGES = 10
    assert api_client.post(BATCH_URL, {"images": many}, format="multipart").status_code == 413
    assert Scan.objects.count() == 0


@pytest.mark.django_db
def test_the_size_limit_applies_before_authentication(anon_client):
    response = anon_client.generic(
        "POST", SCANS_URL, b"x", content_type=BOUNDARY, CONTENT_LENGTH=str(10**10)
    )
    assert response.status_code == 413


@pytest.mark.django_db
def test_a_session_upload_over_the_limit_is_413_before_the_csrf_check_reads_it(user, settings):
    settings.SCAN_IMAGE_MAX_BYTES = 50_000
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    body = multipart(("image", "a.jpg", b"\xff\xd8\xff" + b"\x00" * 200_000))
    assert client.generic("POST", SCANS_URL, body, content_type=BOUNDARY).status_code == 413


@pytest.mark.django_db
def test_stored_file_names_never_carry_the_clients_name(api_client):
    name = "../../etc/" + "x" * 150 + ".jpeg%00.php"
    response = api_client.post(
        SCANS_URL, {"image": upload(name, make_photo_bytes())}, format="multipart"
    )
    assert response.status_code == 202
    stored = Scan.objects.get().image.name
    assert stored.endswith(".img") and ".." not in stored and len(stored) <= 100


@pytest.mark.django_db
def test_image_url_alone_is_accepted_as_json(api_client):
    response = api_client.post(
        SCANS_URL, {"image_url": "https://example.com/bottle.jpg", "hint": "병"}, format="json"
    )
    assert response.status_code == 202, response.content
    scan = Scan.objects.get(pk=response.json()["task_id"])
    assert scan.image_url == "https://example.com/bottle.jpg" and not scan.image


def test_create_scan_needs_exactly_one_source(user):
    with pytest.raises(ValueError):
        services.create_scan(owner=user)
    with pytest.raises(ValueError):
        services.create_scan(
            owner=user, image=upload("a.jpg", make_photo_bytes()), image_url="https://x.test/"
        )

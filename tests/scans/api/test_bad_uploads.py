"""API safety: bad uploads, size limits, who may see what, throttling, idempotent creation and
the production settings. (SSRF and image_url: test_api_safety_ssrf.py; schemathesis:
test_api_safety_schema.py.)"""

from __future__ import annotations

import io
import os
import secrets
import struct
import subprocess
import sys
import threading
import uuid
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from scans import creation_rate, services
from scans.models import IdempotencyKey, Scan, ScanBatch, ScanStatus
from tests.conftest import BASE_DIR, make_photo_bytes
from tests.photos import CONTENT_TYPES, declaring_size, photo_bytes, textured_photo_bytes
from tests.support.translations import ensure_compiled_messages

SCANS_URL = "/api/v1/scans"
BATCH_URL = "/api/v1/scans/batch"
EN = {"HTTP_ACCEPT_LANGUAGE": "en"}


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


def upload(name: str, content: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


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


# --- who may see what (IDOR) ----------------------------------------------------------------------
def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def owned(api_client, user, photo):
    """A scan uploaded by ``user`` (a real stored photo) and a batch of theirs."""
    task_id = api_client.post(SCANS_URL, {"image": photo()}, format="multipart").json()["task_id"]
    batch = ScanBatch.objects.create(owner=user)
    Scan.objects.create(owner=user, image="x.jpg", batch=batch)
    return {"scan": task_id, "batch": str(batch.id)}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "route",
    [
        "/api/v1/scans/{scan}",
        "/api/v1/scans/{scan}/events",
        "/api/v1/batches/{batch}",
    ],
)
def test_another_user_gets_404_on_every_api_route(owned, other_user, route):
    response = client_for(other_user).get(route.format(**owned))
    assert response.status_code == 404
    assert owned["scan"] not in response.content.decode(errors="replace")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "route",
    [
        "/api/v1/scans",
        "/api/v1/scans/{scan}",
        "/api/v1/scans/{scan}/events",
        "/api/v1/batches/{batch}",
    ],
)
def test_without_login_every_route_refuses(owned, anon_client, route):
    assert anon_client.get(route.format(**owned)).status_code in (401, 403)


@pytest.mark.django_db
def test_the_photo_route_is_owner_and_staff_only(owned, user, other_user, staff_user):
    url = f"/scans/{owned['scan']}/image"
    browser = Client()
    assert browser.get(url).status_code == 302  # to the login page
    browser.force_login(other_user)
    assert browser.get(url).status_code == 404
    browser.force_login(user)
    assert browser.get(url).status_code == 200
    browser.force_login(staff_user)
    assert browser.get(url).status_code == 200


@pytest.mark.django_db
def test_list_is_own_scans_only_even_with_all_for_non_staff(owned, other_user, user):
    intruder = client_for(other_user)
    assert intruder.get(SCANS_URL).json()["count"] == 0
    assert intruder.get(SCANS_URL + "?all=1").json()["count"] == 0
    assert client_for(user).get(SCANS_URL + "?all=1").json()["count"] == 2


@pytest.mark.django_db
def test_staff_see_all_with_all_1_and_any_detail(owned, staff_user):
    staff = client_for(staff_user)
    assert staff.get(SCANS_URL).json()["count"] == 0  # their own by default
    assert staff.get(SCANS_URL + "?all=1").json()["count"] == 2
    assert staff.get(f"{SCANS_URL}/{owned['scan']}").status_code == 200
    assert staff.get(f"/api/v1/batches/{owned['batch']}").status_code == 200


@pytest.mark.django_db
def test_token_auth_reaches_only_own_scans(owned, other_user, anon_client):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=other_user)
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert anon_client.get(SCANS_URL).status_code == 200
    assert anon_client.get(f"{SCANS_URL}/{owned['scan']}").status_code == 404
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anon_client.get(SCANS_URL).status_code in (401, 403)


# --- the scan-creation rate (SCAN_CREATE_RATE, scans/creation_rate.py) -------------------------
@pytest.fixture
def low_rate(settings, user, other_user, monkeypatch):
    settings.SCAN_CREATE_RATE = "2/min"
    monkeypatch.setattr(creation_rate, "_redis_down_until", 0.0)
    for someone in (user, other_user):
        creation_rate.forget(someone)
    yield
    for someone in (user, other_user):
        creation_rate.forget(someone)


@pytest.mark.django_db
def test_scan_creation_is_throttled_per_user_with_retry_after(
    low_rate, api_client, photo, other_user
):
    for _ in range(2):
        assert api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 202

    refused = api_client.post(SCANS_URL, {"image": photo()}, format="multipart", **EN)
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "Too many scans" in refused.json()["detail"]
    # batches share the budget; reading is not throttled; another user has their own budget
    batch = api_client.post(BATCH_URL, {"images": [photo()]}, format="multipart")
    assert batch.status_code == 429
    assert api_client.get(SCANS_URL).status_code == 200
    other = client_for(other_user)
    assert other.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 202
    assert Scan.objects.count() == 3


@pytest.mark.django_db
def test_the_upload_page_keeps_the_same_rate(low_rate, user, photo):
    client = Client()
    client.force_login(user)
    for _ in range(2):
        assert client.post("/", {"image": photo(), "hint": "캔"}).status_code == 302

    refused = client.post("/", {"image": photo(), "hint": "캔"})

    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "짧은 시간에 스캔이 너무 많아요 (사용자당 최대 2/min)." in refused.content.decode()
    assert Scan.objects.filter(owner=user).count() == 2, "nothing stored"


@pytest.mark.django_db
def test_each_photo_of_a_batch_counts(low_rate, settings, api_client, user, photo):
    settings.SCAN_CREATE_RATE = "3/min"
    assert (
        api_client.post(BATCH_URL, {"images": [photo(), photo()]}, format="multipart").status_code
        == 202
    )

    over = api_client.post(BATCH_URL, {"images": [photo(), photo()]}, format="multipart")

    assert over.status_code == 429, "2 + 2 photos are over 3 a minute"
    assert ScanBatch.objects.count() == 1 and Scan.objects.count() == 2, "refused whole"
    assert api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 202
    assert api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 429


@pytest.mark.django_db
def test_the_command_line_keeps_the_same_rate(low_rate, user, photo, tmp_path):
    from django.core.management import CommandError, call_command

    for _ in range(2):
        services.create_scan(owner=user, image=photo())
    path = tmp_path / "bottle.jpg"
    path.write_bytes(make_photo_bytes())

    with pytest.raises(CommandError, match="2/min"):
        call_command("scan", str(path), user=user.username, timeout=0.1)
    assert Scan.objects.filter(owner=user).count() == 2


@pytest.mark.django_db
def test_an_unavailable_redis_still_enforces_the_rate(low_rate, settings, api_client, photo):
    """Redis refusing connections (a closed port): the scans of the last minute are counted in
    the database instead; the guard does not fail open."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = f"redis://127.0.0.1:{port}/0"
    settings.REDIS_URL = down
    settings.CACHES = {  # Django's cache too: Redis is down for everybody
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": down,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }

    statuses = [
        api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code
        for _ in range(3)
    ]

    assert statuses == [202, 202, 429]
    assert Scan.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.skipif(not settings.REDIS_URL, reason="counts in Redis: the real-services pass")
def test_with_redis_the_rate_costs_no_query(low_rate, api_client, photo):
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 202
    assert not [q for q in queries if "COUNT(" in q["sql"] and "owner_id" in q["sql"]]


@pytest.mark.django_db
def test_without_redis_the_rate_costs_one_query_per_upload(low_rate, settings, api_client, photo):
    from django.test.utils import CaptureQueriesContext

    settings.REDIS_URL = ""
    with CaptureQueriesContext(connection) as queries:
        assert api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 202
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"] and "scans_scan" in q["sql"]]
    assert len(counts) == 1 and "LIMIT 2" in counts[0], counts


# --- load shedding (SCAN_BACKLOG_LIMIT) ----------------------------------------------------------
@pytest.fixture
def backlog_of_two(backlog_limit):
    backlog_limit(2)


def stored_files() -> set[Path]:
    return {path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()}


@pytest.mark.django_db
def test_a_full_backlog_refuses_uploads_with_503_and_stores_nothing(
    backlog_of_two, api_client, photo
):
    first, second = (
        api_client.post(SCANS_URL, {"image": photo()}, format="multipart") for _ in range(2)
    )
    assert (first.status_code, second.status_code) == (202, 202)
    files = stored_files()

    refused = api_client.post(SCANS_URL, {"image": photo()}, format="multipart", **EN)

    assert refused.status_code == 503
    assert refused["Retry-After"] == "30"
    assert refused.json() == {
        "detail": "Eco² has more scans waiting than it can take right now. Try again in 30 s.",
        "code": "pipeline_busy",
    }
    assert Scan.objects.count() == 2 and stored_files() == files, "nothing of it was stored"
    korean = api_client.post(SCANS_URL, {"image": photo()}, format="multipart")
    assert korean.status_code == 503 and "다시" in korean.json()["detail"], "Korean by default"

    # a worker starts one of the waiting scans: there is room again
    Scan.objects.filter(pk=first.json()["task_id"]).update(status=ScanStatus.PROCESSING)
    assert api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 202


@pytest.mark.django_db
def test_a_batch_is_refused_whole_when_it_would_overfill_the_backlog(
    backlog_of_two, api_client, photo
):
    assert api_client.post(SCANS_URL, {"image": photo()}, format="multipart").status_code == 202

    two = api_client.post(BATCH_URL, {"images": [photo(), photo()]}, format="multipart")
    assert two.status_code == 503 and two["Retry-After"] == "30"
    assert not ScanBatch.objects.exists() and Scan.objects.count() == 1

    one = api_client.post(BATCH_URL, {"images": [photo()]}, format="multipart")
    assert one.status_code == 202


@pytest.mark.django_db
def test_the_upload_page_says_the_pipeline_is_busy(backlog_of_two, user, photo):
    client = Client()
    client.force_login(user)
    for _ in range(2):
        assert client.post("/", {"image": photo(), "hint": "캔"}).status_code == 302

    page = client.post("/", {"image": photo(), "hint": "캔"}, **EN)

    assert page.status_code == 503 and page["Retry-After"] == "30"
    assert "more scans waiting than it can take right now" in page.content.decode()
    assert Scan.objects.count() == 2


@pytest.mark.django_db
def test_the_scan_command_says_the_pipeline_is_busy(backlog_limit, user, tmp_path):
    from django.core.management import CommandError, call_command

    backlog_limit(1)
    Scan.objects.create(owner=user, image="scans/x.jpg")
    path = tmp_path / "can.jpg"
    path.write_bytes(make_photo_bytes())

    with pytest.raises(CommandError, match="more scans waiting than it can take"):
        call_command("scan", str(path), user=user.username, stdout=io.StringIO())
    assert Scan.objects.count() == 1


@pytest.mark.django_db
def test_the_backlog_is_counted_at_most_once_a_second_and_not_at_all_when_off(
    settings, api_client, photo
):
    from django.test.utils import CaptureQueriesContext

    def backlog_counts() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            for _ in range(3):
                api_client.post(SCANS_URL, {"image": photo()}, format="multipart")
        return [
            q["sql"]
            for q in queries
            if "COUNT(" in q["sql"] and "scans_scan" in q["sql"] and '"status"' in q["sql"]
        ]

    settings.SCAN_BACKLOG_LIMIT = 0
    assert backlog_counts() == []
    settings.SCAN_BACKLOG_LIMIT = 1000
    services._backlog_read = (float("-inf"), 0)
    [count] = backlog_counts()
    assert "LIMIT 1001" in count, "a backlog longer than the limit is not counted to its end"

    # while one request of the process counts, the others go on with the last figure
    services._backlog_read = (float("-inf"), 0)
    with services._backlog_reading:
        assert backlog_counts() == []


def test_redis_url_switches_the_cache_to_redis():
    code = "from django.conf import settings;print(settings.CACHES['default']['BACKEND'])"
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:6379/15", "PYTHONPATH": str(BASE_DIR)}
    env["DJANGO_SETTINGS_MODULE"] = "eco2.settings"
    out = subprocess.run(
        [sys.executable, "-c", f"import django;django.setup();{code}"],
        env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "django.core.cache.backends.redis.RedisCache"


# --- Idempotency-Key --------------------------------------------------------------------------------
def keyed_post(client, key: str, content: bytes, hint: str = ""):
    return client.post(
        SCANS_URL,
        {"image": upload("a.jpg", content), "hint": hint},
        format="multipart",
        HTTP_IDEMPOTENCY_KEY=key,
        **EN,
    )


@pytest.mark.django_db
def test_a_replay_returns_the_original_response_and_creates_no_scan(api_client, user):
    photo_bytes = make_photo_bytes()
    first = keyed_post(api_client, "order-42", photo_bytes, "캔")
    second = keyed_post(api_client, "order-42", photo_bytes, "캔")

    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert first["Location"] == second["Location"]
    assert second["Idempotent-Replayed"] == "true"
    assert Scan.objects.filter(owner=user).count() == 1
    assert IdempotencyKey.objects.get().scan_id == uuid.UUID(first.json()["task_id"])


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422(api_client, user):
    assert keyed_post(api_client, "k1", make_photo_bytes(), "캔").status_code == 202
    other_photo = keyed_post(api_client, "k1", make_photo_bytes(color=(1, 2, 3)), "캔")
    other_hint = keyed_post(api_client, "k1", make_photo_bytes(), "병")

    assert other_photo.status_code == other_hint.status_code == 422
    assert "different request" in other_photo.json()["detail"]
    assert Scan.objects.count() == 1


@pytest.mark.django_db
def test_keys_are_scoped_per_user(api_client, other_user):
    photo_bytes = make_photo_bytes()
    mine = keyed_post(api_client, "shared-key", photo_bytes)
    theirs = keyed_post(client_for(other_user), "shared-key", photo_bytes)
    assert mine.json()["task_id"] != theirs.json()["task_id"]
    assert Scan.objects.count() == 2


@pytest.mark.django_db
def test_keys_expire_after_24_hours(api_client):
    photo_bytes = make_photo_bytes()
    first = keyed_post(api_client, "old", photo_bytes).json()["task_id"]
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))

    again = keyed_post(api_client, "old", photo_bytes)

    assert again.status_code == 202 and again.json()["task_id"] != first
    assert "Idempotent-Replayed" not in again
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "   ", "ключ", "a b", "x" * 256])
def test_invalid_keys_are_400(api_client, key):
    assert keyed_post(api_client, key, make_photo_bytes()).status_code == 400
    assert Scan.objects.count() == 0


@pytest.mark.django_db
def test_image_url_replays_too(api_client):
    def send(url):
        return api_client.post(
            SCANS_URL, {"image_url": url}, format="json", HTTP_IDEMPOTENCY_KEY='"url-key"'
        )

    first = send("https://example.com/a.jpg")
    assert send("https://example.com/a.jpg").json() == first.json()
    assert send("https://example.com/b.jpg").status_code == 422
    assert Scan.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_create_one_scan(user, monkeypatch):
    dispatched = []
    monkeypatch.setattr(
        services, "dispatch_pipeline", lambda scan_id, **kw: dispatched.append(scan_id)
    )
    photo_bytes = make_photo_bytes()
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results: list = [None] * threads_count

    def replay(index: int) -> None:
        try:
            client = client_for(user)
            barrier.wait(timeout=10)
            results[index] = keyed_post(client, "same-moment", photo_bytes, "캔")
        except Exception as exc:  # reported below
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=replay, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert all(not isinstance(r, Exception) for r in results), results
    assert [r.status_code for r in results] == [202] * threads_count
    assert len({r.json()["task_id"] for r in results}) == 1
    assert Scan.objects.filter(owner=user).count() == 1
    assert IdempotencyKey.objects.count() == 1
    assert len(dispatched) == 1
    assert sum(r.has_header("Idempotent-Replayed") for r in results) == threads_count - 1


# --- production settings ----------------------------------------------------------------------------
def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DJANGO_ENV")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**base, "PYTHONPATH": str(BASE_DIR), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {"DJANGO_ENV": "production", "ALLOWED_HOSTS": "eco2.example.com"}


def test_check_deploy_passes_without_warnings_in_production():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        SECRET_KEY=secrets.token_urlsafe(64), **PRODUCTION,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "secret",
    [None, "eco2-insecure-development-key-set-SECRET_KEY-in-prod", "short-but-random-0123456789"],
    ids=["unset", "development key", "shorter than 50"],
)
def test_production_refuses_to_start_with_a_weak_secret_key(secret):
    env = {**PRODUCTION, **({"SECRET_KEY": secret} if secret else {})}
    result = run_manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SECRET_KEY" in result.stderr


def test_production_settings_values():
    code = (
        "from django.conf import settings as s;"
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD,"
        " s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.SECURE_PROXY_SSL_HEADER, s.X_FRAME_OPTIONS, s.SECURE_CONTENT_TYPE_NOSNIFF,"
        " s.SECURE_REFERRER_POLICY)"
    )
    env = {
        **os.environ,
        **PRODUCTION,
        "SECRET_KEY": secrets.token_urlsafe(64),
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO=https",
        "DJANGO_SETTINGS_MODULE": "eco2.settings",
        "PYTHONPATH": str(BASE_DIR),
    }
    out = subprocess.run(
        [sys.executable, "-c", f"import django;django.setup();{code}"],
        env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "31536000", "True", "True", "True", "True", "True",
        "('HTTP_X_FORWARDED_PROTO',", "'https')", "DENY", "True", "same-origin",
    ]  # fmt: skip


def test_development_defaults_stay_usable():
    assert settings.SCAN_FETCH_ALLOW_LOOPBACK is False
    assert not getattr(settings, "SECURE_SSL_REDIRECT", False)

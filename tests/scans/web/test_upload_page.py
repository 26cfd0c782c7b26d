"""The upload page without JavaScript (a plain multipart form): what it asks for, what it
refuses and why, in Korean by default. No worker: nothing is committed, no pipeline runs."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from scans.models import (
    Scan,
    ScanStatus,
)
from tests.photos import CONTENT_TYPES, photo_bytes
from tests.scans.web.helpers import english, logged_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("translations")]


# --- the upload page, without JavaScript -----------------------------------------------------
def test_the_upload_page_is_a_plain_multipart_form(user):
    page = logged_in(user).get("/").content.decode()

    form = re.search(r"<form[^>]*id=\"upload-form\"[^>]*>", page, re.S).group(0)
    assert 'method="post"' in form and 'enctype="multipart/form-data"' in form
    file_input = re.search(r'<input type="file" name="image"[^>]*>', page).group(0)
    assert 'accept="image/*,.heic,.heif,.avif"' in file_input
    assert 'capture="environment"' in file_input
    assert "required" in file_input
    assert 'name="hint"' in page and 'placeholder="투명 페트병, 라벨 있음"' in page
    assert 'name="csrfmiddlewaretoken"' in page and 'type="submit"' in page
    assert 'id="dropzone"' in page and 'id="preview"' in page  # enhanced by static/upload.js
    assert "무엇을 버리시나요?" in page, "Korean by default"


def test_on_the_offline_provider_the_page_says_photos_are_not_seen_and_asks_for_a_hint(user, photo):
    """The default install reads only the hint: the page says so before the upload, and a
    photo alone is refused with the reason instead of becoming a scan that cannot be answered."""
    client = logged_in(user)
    page = client.get("/").content.decode()

    assert "이 서버는 사진을 볼 수 없어요(오프라인 모드)." in page
    assert "OPENAI_API_KEY" in page and "OPENAI_BASE_URL" in page
    hint_input = re.search(r'<input type="text" name="hint"[^>]*>', page).group(0)
    assert "required" in hint_input
    assert "힌트 (필수)" in page and "깨진 유리컵" in page, "examples of a hint"

    photo_only = client.post("/", {"image": photo()})

    assert photo_only.status_code == 400
    assert "힌트에 물건을 적어 주세요. 이 서버는 사진을 볼 수 없어요" in photo_only.content.decode()
    assert not Scan.objects.exists()


def test_with_a_provider_that_sees_photos_the_hint_stays_optional(user, photo, settings):
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = "scans.providers.openai.OpenAIVisionProvider"
    _build.cache_clear()
    try:
        client = logged_in(user)
        page = client.get("/").content.decode()
        assert "오프라인 모드" not in page and "힌트 (선택)" in page
        assert client.post("/", {"image": photo()}).status_code == 302
    finally:
        _build.cache_clear()


def test_the_plain_form_uploads_and_redirects_to_the_scan_page(user, photo):
    client = logged_in(user)

    response = client.post("/", {"image": photo(), "hint": "투명 페트병, 라벨 있음"})

    assert response.status_code == 302
    scan = Scan.objects.get(owner=user)
    assert response["Location"] == f"/scans/{scan.id}/"
    assert scan.hint == "투명 페트병, 라벨 있음" and scan.status == ScanStatus.QUEUED
    page = client.get(response["Location"]).content.decode()
    assert f'data-events-url="/api/v1/scans/{scan.id}/events"' in page
    assert f'data-status-url="/api/v1/scans/{scan.id}"' in page
    assert 'role="progressbar"' in page and "<noscript>" in page


def test_a_missing_photo_is_explained_in_korean(user):
    response = logged_in(user).post("/", {"hint": "캔"})

    assert response.status_code == 400
    assert "물건 사진을 찍거나 골라 주세요." in response.content.decode()
    assert not Scan.objects.exists()


def test_a_file_that_is_not_a_photo_is_refused(user):
    fake = SimpleUploadedFile("x.jpg", b"not a photo", content_type="image/jpeg")
    response = english(logged_in(user)).post("/", {"image": fake})

    assert response.status_code == 400
    assert "This is not a JPEG, PNG, WebP, GIF, HEIC or AVIF photo." in response.content.decode()


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_photos_go_through_the_upload_form(user, fmt):
    """The gallery button and the page's early type check let them through, and the server
    takes them: a photo from an iPhone or macOS Safari is not refused before it is looked at."""
    client = logged_in(user)
    page = client.get("/").content.decode()
    gallery = re.search(r'<input type="file"[^>]*id="gallery-input"[^>]*>', page).group(0)
    assert 'accept="image/*,.heic,.heif,.avif"' in gallery
    types = re.search(r'data-types="([^"]*)"', page).group(1).split()
    assert {"image/heic", "image/heif", "image/avif", "image/jpeg"} <= set(types)
    assert "HEIC" in re.search(r'data-msg-type="([^"]*)"', page).group(1)

    upload = SimpleUploadedFile(f"IMG_0001.{fmt.lower()}", photo_bytes(fmt), CONTENT_TYPES[fmt])
    response = client.post("/", {"image": upload, "hint": "유리병"})

    assert response.status_code == 302, response.content.decode()[-500:]
    assert Scan.objects.get(owner=user).status == ScanStatus.QUEUED


def test_the_upload_needs_the_csrf_token(user, photo):
    client = logged_in(user, enforce_csrf_checks=True)
    assert client.post("/", {"image": photo()}).status_code == 403
    assert not Scan.objects.exists()


def test_pages_need_a_login(client, user):
    for url in ("/", "/scans/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/")

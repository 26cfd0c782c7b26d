"""Photos as people send them, through a real Celery worker: HEIC and AVIF, comments and other
metadata, and a photo that cannot be decoded. Embedded broker and SQLite by default; RabbitMQ,
PostgreSQL and Redis in the real-services pass."""

from __future__ import annotations

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from scans.models import ScanStatus
from tests.conftest import wait_for_scan
from tests.fakes.openai_server import ok
from tests.integration.pipeline.test_pipeline_openai import ANSWER, GUIDANCE, PET_BOTTLE, VISION
from tests.photos import (
    CONTENT_TYPES,
    EXTENSIONS,
    assert_pixels_only,
    marker,
    photo_bytes,
    textured_photo_bytes,
    with_damaged_pixels,
)

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

HINT = "투명 페트병, 라벨 있음"
COMMENT = marker("comment")


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def upload(client: APIClient, fmt: str, content: bytes, hint: str = HINT) -> str:
    image = SimpleUploadedFile(f"IMG_0001.{EXTENSIONS[fmt]}", content, CONTENT_TYPES[fmt])
    response = client.post("/api/v1/scans", {"image": image, "hint": hint}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def long_comment_gif() -> bytes:
    """A valid GIF with a 100 kB comment (GIF comments have no limit; a JPEG COM segment
    holds 65,533 bytes, and copying it there failed the scan with internal_error)."""
    comment = (COMMENT + b" ") * 4_000
    return photo_bytes("GIF", size=(120, 90), comment=comment)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_heic_or_avif_photo_completes(celery_worker, rulebase, user, fmt):
    scan = wait_for_scan(upload(api(user), fmt, textured_photo_bytes(fmt, size=(480, 360))))

    assert scan.status == ScanStatus.COMPLETED, (scan.error_code, scan.error_message)
    assert scan.category.code == "pet_clear"
    assert (scan.image.width, scan.image.height) == (480, 360)
    assert scan.image.name.endswith(".jpg") and scan.thumbnail


def test_a_gif_with_a_long_comment_completes_and_the_comment_is_not_kept(
    celery_worker, rulebase, user
):
    scan = wait_for_scan(upload(api(user), "GIF", long_comment_gif()))

    assert scan.status == ScanStatus.COMPLETED, (scan.error_code, scan.error_message)
    assert scan.category.code == "pet_clear"
    with scan.image.open("rb") as stored:
        assert_pixels_only(stored.read(), COMMENT)
    with scan.thumbnail.open("rb") as thumbnail:
        assert_pixels_only(thumbnail.read(), COMMENT)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_photo_that_cannot_be_decoded_fails_saying_why(celery_worker, rulebase, user, fmt):
    """Intact headers (so the upload is taken) and garbage pixels: the worker finds out, and
    the scan says the photo is damaged, not that something went wrong inside."""
    damaged = with_damaged_pixels(textured_photo_bytes(fmt))
    client = api(user)

    task_id = upload(client, fmt, damaged)
    scan = wait_for_scan(task_id)

    assert scan.status == ScanStatus.FAILED
    error = client.get(f"/api/v1/scans/{task_id}").json()["error"]
    assert error["code"] == "corrupt", error
    assert error["message"]
    (attempt,) = scan.attempts.filter(step="prepare")
    assert attempt.outcome == "failed" and attempt.exception_class == "ScanStepError"


@pytest.fixture
def replies(fake_openai):
    fake_openai.set_default_for_schema(VISION, lambda body: ok(PET_BOTTLE))
    fake_openai.set_default_for_schema(ANSWER, lambda body: ok(GUIDANCE))
    return fake_openai


@pytest.mark.parametrize(
    ("fmt", "content"),
    [("GIF", long_comment_gif()), ("JPEG", photo_bytes("JPEG", size=(120, 90), comment=COMMENT))],
    ids=["gif-comment", "jpeg-com-segment"],
)
def test_a_photos_comment_is_not_sent_to_the_provider(
    openai_worker, rulebase, user, replies, fmt, content
):
    scan = wait_for_scan(upload(api(user), fmt, content))

    assert scan.status == ScanStatus.COMPLETED, (scan.error_code, scan.error_message)
    (request,) = replies.requests_for_schema(VISION)
    url = request.body["messages"][-1]["content"][1]["image_url"]["url"]
    assert_pixels_only(base64.b64decode(url.split(",", 1)[1]), COMMENT)
    assert COMMENT not in request.raw

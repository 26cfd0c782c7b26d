"""Photos in a private S3-compatible bucket (MEDIA_STORAGE=s3, django-storages), against moto
on loopback: the settings, the photo view redirecting only the owner and staff to a signed URL
(the bucket refuses an unsigned one), and a real worker preparing uploaded and fetched photos
from and into the bucket. Retention on a bucket: tests/scans/services/test_retention.py;
several hosts sharing only the bucket: tests/integration/multihost/."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from scans.models import Scan, ScanStatus
from tests.conftest import BASE_DIR, make_photo_bytes, wait_for_scan
from tests.support.object_storage import BUCKET, EXPIRE_SECONDS, serve_photo

SCANS_URL = "/api/v1/scans"
HINT = "투명 페트병, 라벨 있음"


# --- settings ---------------------------------------------------------------------------------
def storages_with(**env: str) -> subprocess.CompletedProcess:
    """STORAGES["default"] as a fresh interpreter builds it from exactly this storage env."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "MEDIA_STORAGE"))
    }
    code = "from django.conf import settings; print(json.dumps(settings.STORAGES['default']))"
    return subprocess.run(
        [sys.executable, "-c", f"import json; {code}"],
        cwd=BASE_DIR,
        env={**base, "DJANGO_SETTINGS_MODULE": "eco2.settings", "PYTHONPATH": str(BASE_DIR), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_file_system_stays_the_default(settings):
    assert settings.MEDIA_STORAGE == "filesystem"
    assert settings.STORAGES["default"] == {
        "BACKEND": "django.core.files.storage.FileSystemStorage"
    }


def test_s3_settings_make_a_private_bucket_with_short_signed_urls():
    result = storages_with(
        MEDIA_STORAGE="s3",
        AWS_STORAGE_BUCKET_NAME="eco2-photos",
        AWS_S3_ENDPOINT_URL="https://minio.internal:9000",
        AWS_S3_ADDRESSING_STYLE="path",
    )

    assert result.returncode == 0, result.stderr
    storage = json.loads(result.stdout)
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    options = storage["OPTIONS"]
    assert options["bucket_name"] == "eco2-photos"
    assert options["endpoint_url"] == "https://minio.internal:9000"
    assert options["addressing_style"] == "path"
    assert options["default_acl"] is None, "no public-read object"
    assert options["querystring_auth"] is True and options["custom_domain"] is None
    assert options["querystring_expire"] == 300


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MEDIA_STORAGE": "s3"}, "AWS_STORAGE_BUCKET_NAME"),
        ({"MEDIA_STORAGE": "nfs"}, "MEDIA_STORAGE must be filesystem or s3"),
        (
            {"MEDIA_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "b", "AWS_QUERYSTRING_EXPIRE": "0"},
            "AWS_QUERYSTRING_EXPIRE",
        ),
    ],
    ids=["no bucket", "unknown storage", "expiry"],
)
def test_an_incomplete_storage_configuration_refuses_to_start(env, message):
    result = storages_with(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


# --- the photo view -----------------------------------------------------------------------------
def signed_redirect(browser: Client, url: str, s3) -> str:
    response = browser.get(url)
    assert response.status_code == 302, response
    location = response["Location"]
    assert location.startswith(f"{s3.endpoint_url}/{BUCKET}/scans/"), location
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == [str(EXPIRE_SECONDS)] and query["X-Amz-Signature"]
    assert response["Cache-Control"] == f"private, max-age={EXPIRE_SECONDS // 2}"
    return location


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.mark.django_db
def test_an_upload_is_kept_in_the_private_bucket_and_only_owner_and_staff_get_a_signed_url(
    s3_media, settings, api_client, user, other_user, staff_user
):
    content = make_photo_bytes("JPEG", size=(96, 64))
    image = SimpleUploadedFile("IMG_0001.jpg", content, content_type="image/jpeg")
    response = api_client.post(SCANS_URL, {"image": image}, format="multipart")
    assert response.status_code == 202, response.content
    scan = Scan.objects.get(pk=response.json()["task_id"])

    assert scan.image.name in s3_media.keys("scans/")
    assert s3_media.object_bytes(scan.image.name) == content
    assert not (Path(settings.MEDIA_ROOT) / scan.image.name).exists(), "not on the local disk"
    assert s3_media.unsigned_get(scan.image.name) == 403, "the bucket is private"

    url = f"/scans/{scan.id}/image"
    browser = Client()
    assert browser.get(url)["Location"].startswith("/accounts/login/")
    browser.force_login(other_user)
    assert browser.get(url).status_code == 404
    for viewer in (user, staff_user):
        browser.force_login(viewer)
        assert fetch(signed_redirect(browser, url, s3_media)) == content


@pytest.mark.django_db
def test_a_photo_forgotten_by_retention_is_404_not_a_redirect(s3_media, api_client):
    image = SimpleUploadedFile("a.jpg", make_photo_bytes(), content_type="image/jpeg")
    task_id = api_client.post(SCANS_URL, {"image": image}, format="multipart").json()["task_id"]
    Scan.objects.filter(pk=task_id).update(image="", thumbnail="")
    browser = Client()
    browser.force_login(Scan.objects.get(pk=task_id).owner)

    assert browser.get(f"/scans/{task_id}/image?size=thumb").status_code == 404


# --- a real worker on the bucket ------------------------------------------------------------------
@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_worker_prepares_uploaded_and_fetched_photos_in_the_bucket(
    s3_media, worker_manager, rulebase, api_client, user, settings
):
    settings.SCAN_FETCH_ALLOW_LOOPBACK = True  # the request-time check, in this process
    worker_manager.ensure(SCAN_FETCH_ALLOW_LOOPBACK="1", **s3_media.env())
    upload = SimpleUploadedFile(
        "IMG_0002.jpg", make_photo_bytes("JPEG", size=(640, 480)), content_type="image/jpeg"
    )
    with serve_photo(make_photo_bytes("JPEG", size=(480, 640))) as photo_url:
        uploaded = api_client.post(SCANS_URL, {"image": upload, "hint": HINT}, format="multipart")
        by_url = api_client.post(SCANS_URL, {"image_url": photo_url, "hint": HINT}, format="json")
        assert uploaded.status_code == by_url.status_code == 202, (uploaded.data, by_url.data)
        scans = [wait_for_scan(r.json()["task_id"], timeout=60) for r in (uploaded, by_url)]

    keys = s3_media.keys("scans/")
    browser = Client()
    browser.force_login(user)
    for scan in scans:
        assert scan.status == ScanStatus.COMPLETED, (scan.error_code, scan.error_message)
        assert scan.category.code == "pet_clear"
        assert scan.image.name == f"scans/prepared/{scan.id}.jpg"
        assert {scan.image.name, scan.thumbnail.name} <= keys
        assert [key for key in keys if str(scan.id) in key and "/prepared/" not in key] == [], (
            "the original upload, with its metadata, is deleted from the bucket"
        )
        thumbnail = fetch(signed_redirect(browser, f"/scans/{scan.id}/image?size=thumb", s3_media))
        with Image.open(io.BytesIO(thumbnail)) as image:
            assert image.format == "JPEG"
            assert max(image.size) <= settings.SCAN_THUMBNAIL_EDGE < 480
        assert not list(Path(settings.MEDIA_ROOT).rglob(f"{scan.id}*")), "nothing on the disk"

"""Several hosts, no shared disk: the web (uvicorn) and a worker run as separate processes, each
with its own local folder (ECO2_VAR_DIR, so its own MEDIA_ROOT), and share only PostgreSQL,
RabbitMQ, Redis and the S3 bucket (moto on loopback). An upload and an image_url scan
complete, their thumbnails are served through the web, and retention on the worker deletes the
objects; neither host's folder ever holds a photo. (Both read the alias embeddings from
SCAN_EMBEDDING_CACHE, a read-only file every host's image carries, not shared state.)

The real-services pass only: the embedded SQLite file and broker folders are one host's disk."""

from __future__ import annotations

import io
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image
from rest_framework.authtoken.models import Token

from eco2.celery import app
from scans.models import Scan, ScanStatus
from tests.conftest import SERVICES_MODE, make_photo_bytes, wait_for_scan
from tests.support.live_web import WebClient, serve_web
from tests.support.object_storage import serve_photo

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not SERVICES_MODE,
        reason="hosts share PostgreSQL and RabbitMQ; the embedded SQLite file and broker "
        "folders live on one host's disk (the real-services pass runs this)",
    ),
]

HINT = "투명 페트병, 라벨 있음"
PASSWORD = "correct-horse-battery"


def host(folder: Path) -> dict[str, str]:
    """A host's own local folder: everything it writes (uploads included, if it wrote any)."""
    folder.mkdir()
    return {"ECO2_VAR_DIR": str(folder), "MEDIA_ROOT": str(folder / "media")}


def photo_files(folder: Path, scans: list[Scan]) -> list[Path]:
    return [path for scan in scans for path in folder.rglob(f"*{scan.id}*")]


def test_web_and_worker_on_separate_hosts_share_only_services_and_the_bucket(
    s3_media, worker_manager, rulebase, user, settings, tmp_path
):
    web_host, worker_host = tmp_path / "web-host", tmp_path / "worker-host"
    shared = {**s3_media.env(), "SCAN_FETCH_ALLOW_LOOPBACK": "1"}
    worker_manager.ensure(**host(worker_host), **shared, RETENTION_PHOTOS_DAYS="1")
    # the server checks passwords with its own hashers, not the tests' fast MD5
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "eco2salt", iterations=1000)
    user.save(update_fields=["password"])
    token = Token.objects.create(user=user)
    upload = SimpleUploadedFile(
        "IMG_0003.jpg", make_photo_bytes("JPEG", size=(640, 480)), content_type="image/jpeg"
    )

    with (
        serve_web(tmp_path / "web.log", **host(web_host), **shared) as url,
        serve_photo(make_photo_bytes("JPEG", size=(480, 640), color=(200, 40, 40))) as photo_url,
    ):
        api = WebClient(url, headers={"Authorization": f"Token {token.key}"})
        uploaded = api.post("/api/v1/scans", files={"image": upload}, data={"hint": HINT})
        by_url = api.post("/api/v1/scans", data={"image_url": photo_url, "hint": HINT})
        assert uploaded.status_code == by_url.status_code == 202, (uploaded.text, by_url.text)
        task_ids = [response.json()["task_id"] for response in (uploaded, by_url)]
        scans = [wait_for_scan(task_id, timeout=30) for task_id in task_ids]
        statuses = [api.get(f"/api/v1/scans/{task_id}").json()["status"] for task_id in task_ids]

        browser = WebClient(url)
        browser.get("/accounts/login/")
        signed_in = browser.post(
            "/accounts/login/",
            data={
                "username": user.username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{url}/accounts/login/"},
        )
        assert signed_in.status_code == 302, signed_in.text
        redirects = [browser.get(f"/scans/{scan.id}/image?size=thumb") for scan in scans]
        api.close()
        browser.close()

    assert all(scan.status == ScanStatus.COMPLETED for scan in scans), [
        (scan.error_code, scan.error_message) for scan in scans
    ]
    assert statuses == ["completed", "completed"]
    keys = s3_media.keys("scans/prepared/")
    for scan, redirect in zip(scans, redirects, strict=True):
        assert {scan.image.name, scan.thumbnail.name} <= keys
        assert redirect.status_code == 302, redirect.text
        with urllib.request.urlopen(redirect.headers["Location"], timeout=10) as response:
            thumbnail = response.read()
        with Image.open(io.BytesIO(thumbnail)) as image:
            assert max(image.size) <= settings.SCAN_THUMBNAIL_EDGE

    # retention, on the worker host: the photos of scans ended two days ago go
    Scan.objects.filter(pk__in=task_ids).update(created_at=timezone.now() - timedelta(days=2))
    app.send_task("scans.tasks.prune_history", kwargs={"table": "photos"})
    deadline = time.monotonic() + 15
    while kept := [key for key in s3_media.keys("scans/") for t in task_ids if t in key]:
        assert time.monotonic() < deadline, f"retention left {kept} in the bucket"
        time.sleep(0.2)
    assert Scan.objects.filter(pk__in=task_ids, status=ScanStatus.COMPLETED, image="").count() == 2

    assert photo_files(web_host, scans) == [] and photo_files(worker_host, scans) == []
    assert not (web_host / "media").exists() and not (worker_host / "media").exists()

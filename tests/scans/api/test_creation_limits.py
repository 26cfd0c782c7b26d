"""What limits scan creation: the per-user rate (SCAN_CREATE_RATE, on every way in, with or
without Redis) and load shedding when the backlog is full (SCAN_BACKLOG_LIMIT, 503)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from scans import creation_rate, services
from scans.models import Scan, ScanBatch, ScanStatus
from scans.services import intake
from tests.conftest import BASE_DIR, make_photo_bytes
from tests.scans.api.helpers import BATCH_URL, EN, SCANS_URL, client_for


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
    intake._backlog_read = (float("-inf"), 0)
    [count] = backlog_counts()
    assert "LIMIT 1001" in count, "a backlog longer than the limit is not counted to its end"

    # while one request of the process counts, the others go on with the last figure
    intake._backlog_read = (float("-inf"), 0)
    with intake._backlog_reading:
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

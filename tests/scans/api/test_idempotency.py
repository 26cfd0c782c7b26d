"""Idempotent scan creation (Idempotency-Key): a replay returns the original response and
creates nothing, per user, for 24 hours, also under concurrent replays."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scans.models import IdempotencyKey, Scan
from scans.services import intake
from tests.conftest import make_photo_bytes
from tests.scans.api.helpers import EN, SCANS_URL, client_for, upload


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
        intake, "dispatch_pipeline", lambda scan_id, **kw: dispatched.append(scan_id)
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

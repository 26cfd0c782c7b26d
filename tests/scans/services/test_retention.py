"""Retention: each history table pruned by its own beat job, in batches of bounded size, only
rows past their table's days (or TTL), and what a run deleted visible in the task history.
Runs on SQLite and, in the real-services pass, on PostgreSQL."""

import json
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from scans.models import (
    DeadLetter,
    IdempotencyKey,
    Scan,
    ScanEvent,
    ScanEventType,
    ScanStatus,
    TaskAttempt,
    TaskRerun,
    VisionCacheEntry,
)
from scans.schedules import RETENTION_TABLES, ensure_schedules
from scans.services import prune_table
from scans.services.retention import TABLES
from tests.factories import UserFactory
from tests.scans.web.helpers import make_scan

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def attempts(n: int, age: timedelta) -> None:
    started = timezone.now() - age
    TaskAttempt.objects.bulk_create(
        TaskAttempt(
            task_id=f"t-{age.days}-{i}",
            task_name="scans.tasks.rule_match",
            attempt=1,
            started_at=started,
        )
        for i in range(n)
    )


def test_old_attempts_go_in_several_bounded_batches_and_recent_ones_stay(settings):
    settings.RETENTION_TASK_ATTEMPTS_DAYS = 30
    settings.RETENTION_BATCH_SIZE = 50
    attempts(175, age=40 * DAY)
    attempts(10, age=29 * DAY)

    run = prune_table("task_attempts")

    assert run == {"table": "task_attempts", "deleted": 175, "batches": 4, "kept_for": "30 d"}
    assert TaskAttempt.objects.count() == 10


def test_a_run_stops_after_its_time_and_the_next_run_goes_on(settings):
    settings.RETENTION_BATCH_SIZE = 20
    settings.RETENTION_RUN_SECONDS = 0  # one batch, then the time is up
    attempts(50, age=60 * DAY)

    assert prune_table("task_attempts")["deleted"] == 20
    assert prune_table("task_attempts")["deleted"] == 20
    assert TaskAttempt.objects.count() == 10


def test_zero_days_keeps_a_table_for_ever(settings):
    settings.RETENTION_TASK_ATTEMPTS_DAYS = 0
    attempts(5, age=3650 * DAY)

    assert prune_table("task_attempts")["kept_for"] == "ever"
    assert TaskAttempt.objects.count() == 5


def test_only_published_events_expire(settings):
    settings.RETENTION_SCAN_EVENTS_DAYS = 30
    scan = make_scan(UserFactory())
    old = timezone.now() - 40 * DAY

    def event(published_at):
        return ScanEvent.objects.create(
            type=ScanEventType.COMPLETED, scan=scan, payload={}, published_at=published_at
        )

    published_long_ago, owed, published_lately = event(old), event(None), event(timezone.now())
    ScanEvent.objects.filter(pk=owed.pk).update(occurred_at=old)

    assert prune_table("scan_events")["deleted"] == 1
    remaining = set(ScanEvent.objects.values_list("pk", flat=True))
    assert remaining == {owed.pk, published_lately.pk}, "an unpublished event is still owed"
    assert published_long_ago.pk not in remaining


def test_dead_letters_go_once_dealt_with_and_pending_ones_stay(settings):
    settings.RETENTION_DEAD_LETTERS_DAYS = 90
    long_ago = timezone.now() - 100 * DAY

    def letter(**when):
        return DeadLetter.objects.create(
            task_id=f"t-{len(when)}-{DeadLetter.objects.count()}",
            task_name="scans.tasks.vision_scan",
            reason_code="x",
            **when,
        )

    pending = letter()
    DeadLetter.objects.filter(pk=pending.pk).update(created_at=long_ago)
    letter(redriven_at=long_ago)
    letter(resolved_at=long_ago)
    recent = letter(resolved_at=timezone.now())

    assert prune_table("dead_letters")["deleted"] == 2
    assert set(DeadLetter.objects.values_list("pk", flat=True)) == {pending.pk, recent.pk}


def test_unused_cache_entries_and_old_reruns_and_keys_expire(settings):
    settings.RETENTION_CACHE_DAYS = 90
    settings.RETENTION_TASK_RERUNS_DAYS = 90
    long_ago = timezone.now() - 100 * DAY
    unused = VisionCacheEntry.objects.create(
        key="a", provider="p", image_sha256="a", classification={}
    )
    used_lately = VisionCacheEntry.objects.create(
        key="b", provider="p", image_sha256="b", classification={}
    )
    VisionCacheEntry.objects.update(created_at=long_ago)
    VisionCacheEntry.objects.filter(pk=used_lately.pk).update(last_hit_at=timezone.now())
    TaskRerun.objects.create(original_task_id="o", new_task_id="n", task_name="x")
    TaskRerun.objects.update(requested_at=long_ago)
    user = UserFactory()
    IdempotencyKey.objects.create(owner=user, key="old", fingerprint="f", response_status=202)
    IdempotencyKey.objects.update(created_at=timezone.now() - DAY - timedelta(hours=1))
    IdempotencyKey.objects.create(owner=user, key="new", fingerprint="f", response_status=202)

    assert prune_table("vision_cache")["deleted"] == 1
    assert not VisionCacheEntry.objects.filter(pk=unused.pk).exists()
    assert prune_table("task_reruns")["deleted"] == 1
    assert prune_table("idempotency_keys") == {
        "table": "idempotency_keys",
        "deleted": 1,
        "batches": 1,
        "kept_for": "24 h",
    }
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.parametrize("media", ["filesystem", "s3"])
def test_the_photos_of_old_ended_scans_go_and_the_scans_stay(settings, request, media):
    bucket = request.getfixturevalue("s3_media") if media == "s3" else None
    settings.RETENTION_PHOTOS_DAYS = 365
    settings.RETENTION_BATCH_SIZE = 2
    owner = UserFactory()
    old = [make_scan(owner, status=ScanStatus.COMPLETED) for _ in range(3)]
    running = make_scan(owner, status=ScanStatus.PROCESSING)
    recent = make_scan(owner, status=ScanStatus.COMPLETED)
    Scan.objects.exclude(pk=recent.pk).update(created_at=timezone.now() - 400 * DAY)
    storage = Scan._meta.get_field("image").storage
    files = [scan.image.name for scan in old]
    assert all(storage.exists(name) for name in files)

    run = prune_table("photos")

    assert run == {"table": "photos", "deleted": 3, "batches": 2, "kept_for": "365 d"}
    assert not any(storage.exists(name) for name in files), "the files are deleted"
    assert Scan.objects.filter(pk__in=[s.pk for s in old], image="").count() == 3
    assert storage.exists(running.image.name) and storage.exists(recent.image.name)
    if bucket is not None:  # the objects are gone from the bucket itself
        assert bucket.keys("scans/").isdisjoint(files)
        assert {running.image.name, recent.image.name} <= bucket.keys("scans/")
    page = Client()
    page.force_login(owner)
    assert page.get(f"/scans/{old[0].pk}/image").status_code == 404


def test_photos_are_kept_unless_a_deployment_says_otherwise(settings):
    scan = make_scan(UserFactory(), status=ScanStatus.COMPLETED)
    Scan.objects.update(created_at=timezone.now() - 4000 * DAY)

    assert prune_table("photos")["kept_for"] == "ever"
    assert Scan.objects.get(pk=scan.pk).image.name == scan.image.name


def test_every_history_table_has_its_beat_job():
    assert set(RETENTION_TABLES) == set(TABLES)
    ensure_schedules()
    jobs = {
        json.loads(job.kwargs)["table"]: job
        for job in PeriodicTask.objects.filter(task="scans.tasks.prune_history")
    }
    assert set(jobs) == set(RETENTION_TABLES)
    assert all(job.enabled and job.interval.every == 3600 for job in jobs.values())


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_run_on_a_worker_shows_what_it_deleted_in_the_task_history(celery_worker):
    attempts(1500, age=40 * DAY)  # two batches of the default 1,000
    ensure_schedules()
    job = PeriodicTask.objects.get(name="retention: task attempts")
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))

    staff.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "run_tasks", "_selected_action": [job.pk]},
    )

    deadline = time.monotonic() + 30
    while not (
        done := TaskResult.objects.filter(task_name="scans.tasks.prune_history", status="SUCCESS")
    ):
        assert time.monotonic() < deadline, "the retention job did not run"
        time.sleep(0.2)
    row = done.get()
    assert json.loads(row.result) == {
        "table": "task_attempts",
        "deleted": 1500,
        "batches": 2,
        "kept_for": "30 d",
    }
    page = staff.get(f"/admin/django_celery_results/taskresult/{row.pk}/change/").content.decode()
    assert "&quot;deleted&quot;: 1500" in page or '"deleted": 1500' in page

"""Beat, watched: each periodic job's age since beat last sent it, late jobs in /metrics, the
admin and /readyz (reported there, never failing it), and a real beat that writes the age at
every send."""

import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from eco2.beat_watch import job_ages, late_watched_jobs
from eco2.queues import DEFAULT_QUEUE, NOTIFICATION_QUEUE
from tests.conftest import BASE_DIR, subprocess_env
from tests.eco2.test_monitoring import TOKEN, scrape, value
from tests.support.processes import stop

RELAY = "scans.tasks.relay_pending_dispatches"


def interval_job(name: str, task: str, every: int, sent_ago: float | None) -> PeriodicTask:
    schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
    job, _ = PeriodicTask.objects.update_or_create(
        name=name,
        defaults={
            "task": task,
            "interval": schedule,
            "crontab": None,
            "enabled": True,
            "last_run_at": None
            if sent_ago is None
            else timezone.now() - timedelta(seconds=sent_ago),
        },
    )
    return job


@pytest.fixture
def only_these_jobs(db):
    PeriodicTask.objects.all().delete()  # the data migration's rows: each test sets its own


def ages_by_name() -> dict:
    return {age.name: age for age in job_ages()}


def test_an_interval_job_is_late_after_several_intervals_and_a_floor(only_these_jobs, settings):
    settings.BEAT_LATE_AFTER_INTERVALS = 3
    settings.BEAT_LATE_MIN_SECONDS = 60
    interval_job("relay, sent 20 s ago", RELAY, every=10, sent_ago=20)
    interval_job("relay, sent 50 s ago", RELAY, every=10, sent_ago=50)  # 5 intervals, < floor
    interval_job("relay, sent 90 s ago", RELAY, every=10, sent_ago=90)
    interval_job("sweeper, sent 200 s ago", "x.sweep", every=60, sent_ago=200)

    ages = ages_by_name()

    assert not ages["relay, sent 20 s ago"].late
    assert not ages["relay, sent 50 s ago"].late
    assert ages["relay, sent 90 s ago"].late
    assert ages["sweeper, sent 200 s ago"].late
    assert 89 < ages["relay, sent 90 s ago"].seconds < 100
    assert ages["relay, sent 20 s ago"].every == 10


def test_a_crontab_job_is_never_late_and_a_new_job_not_before_its_time(only_these_jobs):
    daily, _ = CrontabSchedule.objects.get_or_create(minute="0", hour="4")
    PeriodicTask.objects.create(
        name="daily", task="x.daily", crontab=daily, last_run_at=timezone.now() - timedelta(days=1)
    )
    interval_job("new relay, never sent", RELAY, every=10, sent_ago=None)
    interval_job("old relay, never sent", RELAY, every=10, sent_ago=None)
    PeriodicTask.objects.filter(name="old relay, never sent").update(
        date_changed=timezone.now() - timedelta(hours=1)
    )

    ages = ages_by_name()

    assert not ages["daily"].late and ages["daily"].seconds > 86_000
    assert not ages["new relay, never sent"].late and ages["new relay, never sent"].seconds is None
    assert ages["old relay, never sent"].late, "a job beat never sent since an hour is late"


def test_metrics_export_each_jobs_age_and_whether_it_is_late(only_these_jobs, settings):
    settings.METRICS_TOKEN = TOKEN
    interval_job("relay", RELAY, every=10, sent_ago=600)
    interval_job("events", "scans.tasks.publish_events", every=5, sent_ago=1)

    text = scrape()

    assert value(text, "eco2_metrics_collector_up", part="beat") == 1
    assert value(text, "eco2_periodic_task_late", task="relay") == 1
    assert value(text, "eco2_periodic_task_late", task="events") == 0
    assert 599 < value(text, "eco2_periodic_task_seconds_since_last_run", task="relay") < 700


def test_readyz_reports_a_late_relay_without_failing(only_these_jobs):
    interval_job("scans: relay pending dispatches", RELAY, every=10, sent_ago=3)
    assert Client().get("/readyz").json()["checks"]["beat"] == "ok"

    interval_job("scans: relay pending dispatches", RELAY, every=10, sent_ago=600)
    interval_job("not watched", "x.other", every=10, sent_ago=600)
    response = Client().get("/readyz")

    assert response.status_code == 200, "a web process serves uploads whether beat runs or not"
    assert response.json()["checks"]["beat"] == "late: scans: relay pending dispatches"
    assert [job.name for job in late_watched_jobs()] == ["scans: relay pending dispatches"]


def test_the_admin_lists_when_each_job_was_last_sent(only_these_jobs, admin_client):
    interval_job("relay, late", RELAY, every=10, sent_ago=600)
    interval_job("relay, fresh", RELAY, every=10, sent_ago=5)

    page = admin_client.get("/admin/django_celery_beat/periodictask/").content.decode()

    assert "10 min ago (late)" in page
    assert "5 s ago" in page


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_running_beat_writes_each_send_at_once(tmp_path):
    """Beat's database scheduler saves last_run_at every three minutes by default, so a relay
    sent every 10 s looked late for minutes at a time; beat_sync_every=1 saves it at every send."""
    from eco2.celery import app
    from scans.schedules import ensure_schedules

    ensure_schedules()  # transactional tests flush the rows the data migration made
    PeriodicTask.objects.update(last_run_at=None)
    log = (tmp_path / "beat.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "eco2", "beat", "--loglevel=INFO",
         "--max-interval=1", f"--pidfile={tmp_path / f'beat-{uuid.uuid4().hex[:6]}.pid'}"],
        cwd=BASE_DIR, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        relay = PeriodicTask.objects.get(task=RELAY)
        sends = set()
        deadline = time.monotonic() + 40
        while len(sends) < 2 and time.monotonic() < deadline:
            relay.refresh_from_db()
            if relay.last_run_at is not None:
                sends.add(relay.last_run_at)
            time.sleep(0.5)
    finally:
        stop(process)
        log.close()
        with app.connection_for_write() as conn:  # nobody consumes what this beat sent
            for queue in app.conf.task_queues:
                if queue.name in (DEFAULT_QUEUE, NOTIFICATION_QUEUE):  # where beat's jobs go
                    queue(conn.default_channel).purge()
    assert len(sends) >= 2, (tmp_path / "beat.log").read_text()[-3000:]
    relay.refresh_from_db()
    assert (timezone.now() - relay.last_run_at).total_seconds() < 30

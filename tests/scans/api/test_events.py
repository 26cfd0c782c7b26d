"""Live progress: a scan's event stream (SSE, scans/api/events.py), the async view under ASGI
and the same view under WSGI; who may follow it, resuming, retries and how it ends.

No worker: the tests change the scan's row while the stream is read."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scans import events, ledger
from scans.models import (
    AttemptOutcome,
    Scan,
    ScanStatus,
    ScanStep,
    TaskAttempt,
)
from scans.progress import mirror_progress
from tests.conftest import SERVICES_MODE
from tests.scans.api.helpers import async_client, parse_events, stream_events
from tests.scans.web.helpers import completed_scan, failed_scan, logged_in, make_scan

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("translations")]


# --- live progress: the async SSE view -------------------------------------------------------
@pytest.fixture
def fast_events(monkeypatch):
    monkeypatch.setattr(events, "POLL_SECONDS", 0.02)
    monkeypatch.setattr(events, "MAX_SECONDS", 5.0)


def test_the_stream_follows_the_scan_with_retries_and_ends_with_completed(
    rulebase, user, fast_events
):
    scan = make_scan(user)
    finished = completed_scan(user)  # the data the scan will end with
    done_fields = {
        f: getattr(finished, f)
        for f in ("classification", "matched_rules", "answer", "category", "outcome", "provider")
    }

    def advance(chunk: str):
        if "event: progress" not in chunk:
            return
        state = json.loads(chunk.split("data: ", 1)[1])
        if state["status"] == "queued":
            Scan.objects.filter(pk=scan.pk).update(
                status=ScanStatus.PROCESSING, step=ScanStep.VISION, progress=10
            )
        elif state["step"] == "vision" and state["retries"]["count"] == 0:
            TaskAttempt.objects.create(
                scan=scan,
                task_id="t-vision",
                task_name="scans.tasks.vision_scan",
                step="vision",
                attempt=1,
                outcome=AttemptOutcome.RETRY,
                exception_class="TransientProviderError",
                exception_message="provider_rate_limited: rate limited (429)",
            )
        elif state["step"] == "vision":
            Scan.objects.filter(pk=scan.pk).update(step=ScanStep.RULE, progress=50)
        elif state["step"] == "rule":
            Scan.objects.filter(pk=scan.pk).update(
                status=ScanStatus.COMPLETED, step=ScanStep.DONE, progress=100, **done_fields
            )

    response, stream = stream_events(
        async_client(user),
        f"/api/v1/scans/{scan.id}/events",
        sync_to_async(advance),
        **{"Accept-Language": "en"},
    )

    assert response.status_code == 200 and response.is_async, "an async generator under ASGI"
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert stream.startswith("retry: 2000\n\n")
    sequence = parse_events(stream)
    names = [e["event"] for e in sequence]
    assert names == ["progress"] * (len(names) - 1) + ["completed"]
    progress = [e["data"] for e in sequence[:-1]]
    assert [(p["status"], p["step"], p["retries"]["count"]) for p in progress] == [
        ("queued", "queued", 0),
        ("processing", "vision", 0),
        ("processing", "vision", 1),
        ("processing", "rule", 0),
        ("completed", "done", 0),
    ]
    # the reason for the retry in the request's language, not the exception's text
    assert progress[2]["retries"]["last_error"] == "The recognition service is busy."
    assert progress[2]["retries"]["last_outcome"] == "retry"
    assert len({e["id"] for e in sequence}) == len(sequence), "each event has its own id"
    final = sequence[-1]
    assert final["id"] == events.final_event_id(scan.celery_root_id)
    assert final["data"]["task_id"] == str(scan.id) and final["data"]["status"] == "completed"
    assert final["data"]["result"]["classification"]["category_code"] == "pet_clear"
    assert "usage" not in final["data"]["result"], "cost is for staff only"


def test_a_failed_scan_ends_the_stream_with_its_error(user, fast_events):
    scan = failed_scan(user)
    url = f"/api/v1/scans/{scan.id}/events"
    _, stream = stream_events(async_client(user), url)
    _, english_stream = stream_events(async_client(user), url, None, **{"Accept-Language": "en"})

    final, english_final = parse_events(stream)[-1], parse_events(english_stream)[-1]
    assert final["event"] == "failed"
    assert final["data"]["error"]["code"] == "internal_error"
    assert final["data"]["error"]["message"] == "예상하지 못한 오류로 스캔이 멈췄어요."
    assert english_final["data"]["error"]["message"] == "An unexpected error stopped the scan."
    assert "detail" not in final["data"]["error"], "the technical detail is for staff"


def test_others_get_404_and_staff_may_follow(rulebase, user, other_user, staff_user, fast_events):
    scan = completed_scan(user)
    url = f"/api/v1/scans/{scan.id}/events"

    other, _ = stream_events(async_client(other_user), url)
    anonymous, _ = stream_events(async_client(), url)
    unknown, _ = stream_events(async_client(user), "/api/v1/scans/not-a-uuid/events")
    staff, stream = stream_events(async_client(staff_user), url)

    assert other.status_code == 404 and json.loads(other.content) == {
        "detail": "No scan with this task id."
    }
    assert anonymous.status_code == 403
    assert unknown.status_code == 404
    assert staff.status_code == 200
    assert "usage" in parse_events(stream)[-1]["data"]["result"]


def test_a_token_is_enough(user, fast_events):
    from rest_framework.authtoken.models import Token

    scan = failed_scan(user)
    token = Token.objects.create(user=user)
    url = f"/api/v1/scans/{scan.id}/events"

    good, stream = stream_events(async_client(), url, Authorization=f"Token {token.key}")
    bad, _ = stream_events(async_client(), url, Authorization="Token nope")

    assert good.status_code == 200 and parse_events(stream)[-1]["event"] == "failed"
    assert bad.status_code == 401


def test_last_event_id_is_not_repeated_and_final_means_stop(user, monkeypatch, fast_events):
    monkeypatch.setattr(events, "MAX_SECONDS", 0.2)
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)
    waiting = make_scan(user)
    url = f"/api/v1/scans/{waiting.id}/events"

    _, first = stream_events(async_client(user), url)
    seen = parse_events(first)
    assert [e["event"] for e in seen] == ["progress", "timeout"]
    assert ": keepalive" in first

    _, resumed = stream_events(async_client(user), url, **{"Last-Event-ID": seen[0]["id"]})
    assert [e["event"] for e in parse_events(resumed)] == ["timeout"], "nothing new to say"

    done = failed_scan(user)
    stop, _ = stream_events(
        async_client(user),
        f"/api/v1/scans/{done.id}/events",
        **{"Last-Event-ID": events.final_event_id(done.celery_root_id)},
    )
    assert stop.status_code == 204


def test_a_scan_deleted_meanwhile_ends_the_stream(user, fast_events):
    scan = make_scan(user)

    def delete(chunk):
        if "event: progress" in chunk:
            Scan.objects.filter(pk=scan.pk).delete()

    _, stream = stream_events(
        async_client(user), f"/api/v1/scans/{scan.id}/events", on_chunk=sync_to_async(delete)
    )
    assert [e["event"] for e in parse_events(stream)] == ["progress", "error"]


def test_under_wsgi_the_same_view_streams_synchronously(user, fast_events):
    scan = failed_scan(user)
    response = logged_in(user).get(f"/api/v1/scans/{scan.id}/events")
    assert response.status_code == 200 and not response.is_async
    stream = b"".join(response.streaming_content).decode()
    assert [e["event"] for e in parse_events(stream)] == ["progress", "failed"]


def test_retries_count_only_the_current_run_of_the_step(user):
    scan = make_scan(user, status=ScanStatus.PROCESSING, step=ScanStep.VISION, progress=10)

    def attempt(outcome, step="vision", message=""):
        TaskAttempt.objects.create(
            scan=scan,
            task_id="t",
            task_name="x",
            step=step,
            attempt=1,
            outcome=outcome,
            exception_message=message,
        )

    attempt(AttemptOutcome.RETRY, message="old")
    attempt(AttemptOutcome.FAILED, message="gave up")  # the run that failed; then resumed
    attempt(AttemptOutcome.SUCCEEDED, step="prepare")
    attempt(AttemptOutcome.WORKER_LOST, step="prepare", message="lost")
    attempt(AttemptOutcome.RETRY, step="rule", message="another step")

    retries = events.step_retries(str(scan.id), "vision")
    assert (retries["count"], retries["last_error"], retries["last_outcome"]) == (
        1,
        "이 스캔을 처리하던 작업자가 여러 번 연달아 멈췄어요.",  # in the site's language
        "worker_lost",
    )
    assert events.step_retries(str(scan.id), "queued")["count"] == 0


# --- an open stream's cost per poll ----------------------------------------------------------
needs_redis = pytest.mark.skipif(
    not SERVICES_MODE, reason="the Redis mirror exists only when REDIS_URL is set"
)


def polled_stream(scan, monkeypatch, seconds: float = 0.4) -> tuple[list[dict], int, int]:
    """Read a stream that times out after ``seconds`` of fast polls: (events, polls, queries)."""
    polls = 0
    read_progress = events.read_progress

    def counted(task_id):
        nonlocal polls
        polls += 1
        return read_progress(task_id)

    monkeypatch.setattr(events, "read_progress", counted)
    stream = events.scan_event_stream(
        str(scan.id), lambda: ({}, "final:-"), poll_seconds=0.005, max_seconds=seconds
    )
    with CaptureQueriesContext(connection) as queries:
        chunks = list(stream)
    return parse_events("".join(chunks)), polls, len(queries)


@needs_redis
def test_an_open_stream_polls_redis_alone_with_the_retries_the_ledger_mirrored(
    user, monkeypatch, translations
):
    scan = make_scan(user, status=ScanStatus.PROCESSING, step=ScanStep.VISION, progress=10)
    mirror_progress(str(scan.id), status="processing", step="vision", progress=10, updated_at="")
    TaskAttempt.objects.create(
        scan=scan, task_id="t", task_name="scans.tasks.prepare_image", step="prepare", attempt=1,
        outcome=AttemptOutcome.RETRY, exception_message="provider_unavailable: 503",
    )  # fmt: skip
    task = SimpleNamespace(name="scans.tasks.prepare_image", step="prepare")
    # what the worker's task_retry signal does after closing the attempt
    ledger.retry_attempt(sender=task, request=SimpleNamespace(id="t", args=[str(scan.id)]))

    received, polls, queries = polled_stream(scan, monkeypatch)

    assert polls >= 20 and queries == 0, f"{queries} queries in {polls} polls"
    progress, timeout = received
    assert progress["event"] == "progress" and timeout["event"] == "timeout"
    assert progress["data"]["retries"]["count"] == 1  # the prepare task retried: vision shows it
    assert progress["data"]["retries"]["last_outcome"] == "retry"


@needs_redis
def test_retries_made_before_redis_had_them_are_read_once_when_the_stream_opens(user, monkeypatch):
    scan = make_scan(user, status=ScanStatus.PROCESSING, step=ScanStep.VISION, progress=10)
    mirror_progress(str(scan.id), status="processing", step="vision", progress=10, updated_at="")
    for _ in range(2):
        TaskAttempt.objects.create(
            scan=scan, task_id="t", task_name="x", step="vision", attempt=1,
            outcome=AttemptOutcome.RETRY,
        )  # fmt: skip

    received, polls, queries = polled_stream(scan, monkeypatch)

    assert polls >= 20 and queries == 1, f"{queries} queries in {polls} polls"
    assert received[0]["data"]["retries"]["count"] == 2

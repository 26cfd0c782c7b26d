"""The whole path, upload → vision → rule → answer, through a real Celery worker subprocess.

Runs on the embedded broker (filesystem) and SQLite by default, and in the real-services pass
on RabbitMQ, PostgreSQL and Redis.
"""

import io
import json
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from scans.models import ScanStatus
from scans.progress import read_progress
from tests.conftest import SERVICES_MODE, settle_worker, wait_for_scan
from tests.fakes.providers import CRASH_HINT, REFUSE_HINT

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def client_for(celery_worker, rulebase):
    def build(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return build


def upload(client, photo, hint=""):
    response = client.post("/api/v1/scans", {"image": photo(), "hint": hint}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def test_a_hinted_photo_completes_with_classification_rules_and_guidance(client_for, user, photo):
    client = client_for(user)
    task_id = upload(client, photo, "투명 페트병, 라벨 있음")

    scan = wait_for_scan(task_id)
    body = client.get(f"/api/v1/scans/{task_id}").json()

    assert (body["status"], body["step"], body["progress"]) == ("completed", "done", 100)
    result = body["result"]
    assert result["outcome"] == "classified"
    assert result["provider"] == "offline"
    cls = result["classification"]
    assert (cls["major_category"], cls["middle_category"]) == ("재활용폐기물", "무색페트병")
    assert "label_attached" in cls["situation_tags"]
    assert cls["user_input"] == "투명 페트병, 라벨 있음"
    assert result["disposal_rules"]["category_code"] == "pet_clear"
    answer = result["answer"]
    assert answer["disposal_steps"], "the guidance has steps"
    assert any("라벨" in fix for fix in answer["insufficiencies"]), (
        "the label still has to come off"
    )
    assert "무색페트병" in answer["user_answer"]
    assert scan.category.code == "pet_clear"
    assert scan.celery_root_id == task_id
    assert scan.started_at <= scan.finished_at
    ledger = list(scan.attempts.values_list("step", "attempt", "outcome", "queue"))
    assert ledger == [
        ("prepare", 1, "succeeded", "scan.image"),
        ("vision", 1, "succeeded", "scan.ai.pipeline"),
        ("rule", 1, "succeeded", "scan.ai.pipeline"),
        ("answer", 1, "succeeded", "scan.ai.pipeline"),
    ]
    assert all(a.worker and a.duration_ms is not None for a in scan.attempts.all())
    assert scan.dispatched_at is not None and not scan.dead_letters.exists()


def test_no_hint_ends_in_an_honest_question_not_a_guess(client_for, user, photo):
    """The offline provider cannot see the photo: without a hint the scan does not complete
    with an empty "we don't know" answer; it asks (needs_input), offering every bin and the
    hint form, and nothing after the rule step runs."""
    client = client_for(user)
    task_id = upload(client, photo)

    scan = wait_for_scan(task_id)
    body = client.get(f"/api/v1/scans/{task_id}").json()

    assert (body["status"], body["step"], body["result"], body["error"]) == (
        "needs_input",
        "input",
        None,
        None,
    )
    assert body["question"]["reason"] == "no_hint"
    assert body["question"]["message"] == (
        "이 서버는 사진을 볼 수 없어서(오프라인 모드) 사진만으로는 알아볼 수 없어요. "
        "힌트에 물건을 적거나 배출할 곳을 직접 골라 주세요."
    ), "a photo alone is labelled impossible here, not 'we are not sure'"
    assert body["question"]["choices"] == [], "nothing to offer: any bin, or a hint"
    assert (scan.outcome, scan.answer, scan.matched_rules) == ("ambiguous", None, None)
    assert scan.classification["category_code"] is None
    assert list(scan.events.values_list("type", flat=True)) == ["ScanNeedsInput"]
    for _ in range(50):  # the chain's answer step comes right after, and has nothing to do
        if scan.attempts.filter(step="answer").exclude(outcome="started").exists():
            break
        time.sleep(0.1)
    assert list(scan.attempts.values_list("step", "outcome")) == [
        ("prepare", "succeeded"),
        ("vision", "succeeded"),
        ("rule", "succeeded"),
        ("answer", "skipped"),
    ]


def test_a_step_that_raises_fails_the_scan_with_a_reason(client_for, user, photo):
    client = client_for(user)
    task_id = upload(client, photo, f"{CRASH_HINT} 페트병")

    scan = wait_for_scan(task_id)
    body = client.get(f"/api/v1/scans/{task_id}").json()

    assert body["status"] == "failed"
    assert body["result"] is None
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["step"] == "vision"
    assert body["error"]["message"] == "예상하지 못한 오류로 스캔이 멈췄어요."  # from the code
    assert "recognition step" in scan.error_message  # the detail, for staff
    assert scan.classification is None and scan.answer is None, "later steps did not run"
    (attempt,) = scan.attempts.filter(step="vision")
    assert (attempt.step, attempt.outcome, attempt.exception_class) == (
        "vision",
        "failed",
        "RuntimeError",
    )
    assert "simulated bug" in attempt.exception_message
    (dead,) = scan.dead_letters.all()
    assert (dead.task_name, dead.reason_code, dead.redriven_at) == (
        "scans.tasks.vision_scan",
        "internal_error",
        None,
    )


def test_a_provider_refusal_fails_with_a_readable_reason(client_for, user, photo):
    client = client_for(user)
    task_id = upload(client, photo, REFUSE_HINT)

    scan = wait_for_scan(task_id)
    error = client.get(f"/api/v1/scans/{task_id}", HTTP_ACCEPT_LANGUAGE="en").json()["error"]

    assert error["code"] == "provider_refused"
    assert error["message"] == "The recognition service refused to describe this photo."
    assert error["retryable"] is False
    assert scan.error_message == "The vision model refused to describe this photo."


def test_many_scans_each_end_in_exactly_one_terminal_state(client_for, user, photo):
    client = client_for(user)
    hints = ["콜라 캔", "우유팩", CRASH_HINT, "", "건전지", "택배 상자", "소주병", REFUSE_HINT]
    ids = [upload(client, photo, hint) for hint in hints]

    scans = [wait_for_scan(task_id, timeout=60) for task_id in ids]

    statuses = [s.status for s in scans]
    assert statuses.count(ScanStatus.FAILED) == 2
    assert statuses.count(ScanStatus.NEEDS_INPUT) == 1, "the scan without a hint asks"
    assert statuses.count(ScanStatus.COMPLETED) == 5
    for scan in scans:
        assert (scan.error_code != "") == (scan.status == ScanStatus.FAILED)
        assert (scan.answer is not None) == (scan.status == ScanStatus.COMPLETED)
        assert scan.finished_at is not None
        assert scan.events.count() == 1, "one event for its one end"


def test_the_browser_flow_upload_page_to_result(celery_worker, rulebase, user, photo):
    browser = Client()
    browser.force_login(user)
    assert browser.get("/").status_code == 200

    response = browser.post("/", {"image": photo(), "hint": "다 쓴 건전지"})
    assert response.status_code == 302
    scan_url = response["Location"]
    task_id = scan_url.rstrip("/").rsplit("/", 1)[-1]
    page = browser.get(scan_url)
    assert page.status_code == 200
    assert b'data-events-url="/api/v1/scans/' in page.content

    wait_for_scan(task_id)
    done = browser.get(scan_url).content.decode()
    assert "전지" in done
    assert browser.get(f"/scans/{task_id}/image").status_code == 200
    assert browser.get("/scans/").status_code == 200


def test_the_events_stream_ends_with_the_final_scan(client_for, user, photo):
    client = client_for(user)
    task_id = upload(client, photo, "스티로폼 박스")

    response = client.get(f"/api/v1/scans/{task_id}/events", HTTP_ACCEPT="text/event-stream")
    assert response["Content-Type"] == "text/event-stream"
    stream = b"".join(response.streaming_content).decode()

    events = [block for block in stream.split("\n\n") if block.startswith("event:")]
    assert events[0].startswith("event: progress")
    final = events[-1]
    assert final.startswith("event: completed")
    data = json.loads(final.split("data: ", 1)[1])
    assert (
        data["task_id"] == task_id
        and data["result"]["classification"]["category_code"] == "styrofoam"
    )


def test_cli_scans_a_file_and_prints_the_guidance(celery_worker, rulebase, user, tmp_path):
    from tests.conftest import make_photo_bytes

    path = tmp_path / "can.png"
    path.write_bytes(make_photo_bytes("PNG"))
    out = io.StringIO()

    call_command("scan", str(path), hint="알루미늄 캔", user=user.username, stdout=out)

    text = out.getvalue()
    assert "금속류" in text
    assert "100%" in text
    assert "provider: offline" in text


def test_cli_exits_non_zero_when_the_scan_fails(celery_worker, rulebase, user, tmp_path):
    from tests.conftest import make_photo_bytes

    path = tmp_path / "x.jpg"
    path.write_bytes(make_photo_bytes())
    err = io.StringIO()

    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "scan", str(path), hint=CRASH_HINT, user=user.username, stdout=io.StringIO(), stderr=err
        )

    assert exit_info.value.code == 1
    assert "internal_error" in err.getvalue()


@pytest.mark.skipif(
    not SERVICES_MODE, reason="the Redis fast path exists only when REDIS_URL is set"
)
def test_progress_is_mirrored_to_redis_with_a_ttl(client_for, user, photo):
    from scans.progress import progress_key, redis_client

    task_id = upload(client_for(user), photo, "유리병")
    wait_for_scan(task_id)

    assert read_progress(task_id) == {
        "status": "completed",
        "step": "done",
        "progress": 100,
        "updated_at": read_progress(task_id)["updated_at"],
    }
    ttl = redis_client().ttl(progress_key(task_id))
    assert 0 < ttl <= settings.SCAN_PROGRESS_TTL


def test_a_scan_a_test_leaves_in_flight_ends_with_that_test(worker_manager, rulebase, user, photo):
    """The suite's own guard (tests/conftest.py): before a transactional test's tables are
    emptied, its worker finishes the test's scans or is killed with its queues purged, so no
    step of one test runs into the next one's database."""
    from eco2.queue_depths import queue_depths

    worker_manager.ensure(FAKE_VISION_DELAY_SECONDS="30")
    client = APIClient()
    client.force_authenticate(user)
    task_id = upload(client, photo, "유리병")
    for _ in range(200):
        if client.get(f"/api/v1/scans/{task_id}").json()["step"] == "vision":
            break
        time.sleep(0.05)

    assert settle_worker(worker_manager, timeout=0.5) == "work still in flight after 0.5 s"

    assert worker_manager.current is None, "the worker is gone with the step it was running"
    assert sum(queue_depths(timeout=5).values()) == 0
    assert settle_worker(worker_manager) is None, "with no worker there is nothing to wait for"

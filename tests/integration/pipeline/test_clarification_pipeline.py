"""“Which one is it?” through a real Celery worker: a scan that is not sure asks, and the
owner's answer resumes it (issue 19 §3).

The worker runs the tests' vision provider: the offline one, where a hint starting with
``#unsure`` is not sure whatever the matcher makes of it (tests/fakes/providers.py), and the
OpenAI provider against the fake OpenAI server. Embedded broker and SQLite by default; in the
real-services pass RabbitMQ, PostgreSQL and Redis.
"""

from __future__ import annotations

import io
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from scans.models import Scan, ScanBatch, ScanStatus
from tests.conftest import make_photo_bytes, wait_for_scan
from tests.fakes.openai_server import ok
from tests.fakes.providers import UNSURE_HINT
from tests.scans.api.helpers import parse_events

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

UNSURE = f"{UNSURE_HINT} 병"


@pytest.fixture
def client(celery_worker, rulebase, user):
    api = APIClient()
    api.force_authenticate(user)
    return api


def upload(client, hint: str = UNSURE, **photo) -> str:
    image = SimpleUploadedFile("bottle.jpg", make_photo_bytes(**photo), content_type="image/jpeg")
    response = client.post("/api/v1/scans", {"image": image, "hint": hint}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def steps_run(scan: Scan) -> list[tuple[str, str]]:
    return list(scan.attempts.order_by("started_at", "id").values_list("step", "outcome"))


def wait_for_attempts(scan_id, step: str, count: int, timeout: float = 10.0) -> None:
    """Until ``count`` attempts of ``step`` have ended (the ledger is written after the row)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = Scan.objects.get(pk=scan_id).attempts.filter(step=step).exclude(outcome="started")
        if ended.count() >= count:
            return
        time.sleep(0.05)


def test_the_owners_choice_resumes_at_the_rule_step_without_recognising_again(client, user):
    task_id = upload(client)
    asked = wait_for_scan(task_id)
    assert asked.status == ScanStatus.NEEDS_INPUT, (asked.status, asked.error_code)
    question = client.get(f"/api/v1/scans/{task_id}").json()["question"]
    assert [c["category_code"] for c in question["choices"]] == ["pet_clear", "glass", "plastic"]

    tap = client.post(question["choose_url"], {"category_code": "glass"}, format="json")
    second_tap = client.post(question["choose_url"], {"category_code": "pet_clear"}, format="json")

    assert tap.status_code == 202, tap.content
    assert second_tap.status_code == 409, "two taps resume the scan once"
    done = wait_for_scan(task_id)
    body = client.get(f"/api/v1/scans/{task_id}").json()
    assert (body["status"], body["step"], body["progress"]) == ("completed", "done", 100)
    classification = body["result"]["classification"]
    assert (classification["chosen_by"], classification["confidence"]) == ("user", 1.0)
    assert (classification["category_code"], classification["minor_category"]) == (
        "glass",
        "소주병",
    )
    assert body["result"]["disposal_rules"]["category_code"] == "glass"
    assert "유리병" in body["result"]["answer"]["user_answer"]
    assert done.celery_root_id != task_id, "a new run of the same scan"
    wait_for_attempts(task_id, "answer", 2)
    ledger = steps_run(done)
    assert ledger.count(("prepare", "succeeded")) == 1
    assert [step for step, _ in ledger].count("vision") == 1, "no new recognition"
    assert ledger.count(("rule", "succeeded")) == 2, "the question, then the choice"
    assert ledger.count(("answer", "succeeded")) == 1
    assert list(done.events.values_list("type", flat=True)) == [
        "ScanNeedsInput",
        "ScanResumed",
        "ScanCompleted",
    ]
    assert not done.dead_letters.exists()


def test_the_stream_ends_with_the_question_and_a_new_one_follows_the_answer(client):
    task_id = upload(client)

    first = b"".join(client.get(f"/api/v1/scans/{task_id}/events").streaming_content).decode()

    asked = parse_events(first)
    assert asked[-1]["event"] == "needs_input" and asked[-1]["id"] == f"final:{task_id}"
    assert asked[-1]["data"]["question"]["choices"][0]["item"] == "생수병"
    assert {e["event"] for e in asked[:-1]} == {"progress"}
    assert (
        client.post(
            f"/api/v1/scans/{task_id}/choose", {"category_code": "pet_clear"}, format="json"
        ).status_code
        == 202
    )

    # the resumed run may end before the client reconnects (a fast worker): the end it has not
    # seen is still sent (it got 204 here, "the end was seen", and never saw the completion)
    assert wait_for_scan(task_id).status == "completed"
    reconnected = client.get(f"/api/v1/scans/{task_id}/events", HTTP_LAST_EVENT_ID=asked[-1]["id"])
    assert reconnected.status_code == 200
    second = b"".join(reconnected.streaming_content).decode()

    resumed = parse_events(second)
    assert resumed[-1]["event"] == "completed"
    assert resumed[-1]["data"]["result"]["classification"]["category_code"] == "pet_clear"
    progress = [e["data"] for e in resumed if e["event"] == "progress"]
    assert progress[0]["step"] in ("rule", "answer", "done"), "it goes on from the rule step"
    assert all(p["step"] != "vision" for p in progress)


def test_a_hint_recognises_the_photo_again_and_completes(client):
    task_id = upload(client)
    assert wait_for_scan(task_id).status == ScanStatus.NEEDS_INPUT

    response = client.post(f"/api/v1/scans/{task_id}/hint", {"hint": "투명 생수병"}, format="json")

    assert response.status_code == 202, response.content
    done = wait_for_scan(task_id)
    assert (done.status, done.category.code, done.hint) == ("completed", "pet_clear", "투명 생수병")
    wait_for_attempts(task_id, "vision", 2)
    ledger = steps_run(done)
    assert ledger.count(("vision", "succeeded")) == 2, "recognised again, with the hint"
    assert ledger.count(("prepare", "succeeded")) == 1, "the photo is not prepared again"


def test_a_batch_member_that_asks_ends_the_batch_and_its_answer_updates_the_summary(client):
    images = [
        SimpleUploadedFile(f"{n}.jpg", make_photo_bytes(size=(40 + n, 30)), "image/jpeg")
        for n in range(2)
    ]
    response = client.post(
        "/api/v1/scans/batch", {"images": images, "hint": UNSURE}, format="multipart"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    for task_id in body["task_ids"]:
        assert wait_for_scan(task_id).status == ScanStatus.NEEDS_INPUT
    batch = wait_for_batch(body["batch_id"], lambda b: b.status == "completed")
    assert (batch.summary["count"], batch.summary["asked"], batch.summary["completed"]) == (2, 2, 0)

    first = body["task_ids"][0]
    assert (
        client.post(
            f"/api/v1/scans/{first}/choose", {"category_code": "glass"}, format="json"
        ).status_code
        == 202
    )
    assert wait_for_scan(first).status == ScanStatus.COMPLETED

    batch = wait_for_batch(body["batch_id"], lambda b: b.summary and b.summary["completed"] == 1)
    assert batch.status == "completed"
    assert (batch.summary["asked"], batch.summary["completed"]) == (1, 1)
    assert batch.summary["by_category"] == {"glass": 1}
    detail = client.get(f"/api/v1/batches/{batch.id}").json()
    assert (detail["finished"], detail["progress"]) == (2, 100)
    assert sorted(item["status"] for item in detail["items"]) == ["completed", "needs_input"]


def wait_for_batch(batch_id, done, timeout: float = 15.0) -> ScanBatch:
    deadline = time.monotonic() + timeout
    while True:
        batch = ScanBatch.objects.get(pk=batch_id)
        if done(batch) or time.monotonic() > deadline:
            return batch
        time.sleep(0.1)


# --- the command line ---------------------------------------------------------------------------
class Terminal(io.StringIO):
    """What the person types, on a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def photo_file(tmp_path):
    path = tmp_path / "bottle.jpg"
    path.write_bytes(make_photo_bytes())
    return path


def test_cli_prints_the_choices_and_exits_3_when_nobody_can_answer(
    celery_worker, rulebase, user, photo_file
):
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "scan", str(photo_file), hint=UNSURE, user=user.username, stdout=out, stderr=err,
            stdin=io.StringIO(""),
        )  # fmt: skip

    assert exit_info.value.code == 3
    text = out.getvalue()
    assert "Which one is it?" in text
    assert "1. 생수병 (water bottle) → 무색페트병 (Clear PET bottles)  [pet_clear]" in text
    assert "2. 소주병 (soju bottle) → 유리병 (Glass bottles)  [glass]" in text
    assert "--choose CODE" in err.getvalue() and "/choose" in err.getvalue()
    assert Scan.objects.get(owner=user).status == ScanStatus.NEEDS_INPUT


def test_cli_choose_answers_without_asking(celery_worker, rulebase, user, photo_file):
    out = io.StringIO()

    call_command(
        "scan", str(photo_file), hint=UNSURE, user=user.username, choose="glass", stdout=out,
        stdin=io.StringIO(""),
    )  # fmt: skip

    text = out.getvalue()
    assert "chose glass" in text
    assert "유리병" in text and "you chose this" in text
    assert "100%" in text
    assert Scan.objects.get(owner=user).status == ScanStatus.COMPLETED


def test_cli_asks_on_a_terminal(celery_worker, rulebase, user, photo_file):
    out = io.StringIO()

    call_command(
        "scan", str(photo_file), hint=UNSURE, user=user.username, stdout=out,
        stdin=Terminal("9\nnot-a-code\n2\n"),
    )  # fmt: skip

    text = out.getvalue()
    assert "'9': not a number from the list or a category code" in text
    assert "chose glass" in text
    scan = Scan.objects.get(owner=user)
    assert (scan.status, scan.category.code) == ("completed", "glass")


def test_cli_refuses_a_choice_that_is_no_category_before_scanning(rulebase, user, photo_file):
    with pytest.raises(CommandError, match="not a category code"):
        call_command("scan", str(photo_file), user=user.username, choose="gold")
    assert not Scan.objects.exists()


# --- OpenAI ----------------------------------------------------------------------------------------
NOT_SURE = {
    "minor_category": "",
    "minor_category_en": None,
    "category_code": "unclassified",
    "major_category": "미분류",
    "middle_category": "미분류",
    "situation_tags": [],
    "confidence": 0.3,
    "alternatives": [],
    "user_input": "",
}
GUIDANCE = {
    "disposal_steps": ["내용물을 비우고 헹궈요.", "라벨을 떼요."],
    "insufficiencies": [],
    "user_answer": "투명 페트병은 전용 수거함에 넣어요.",
}


def test_with_openai_the_choice_costs_no_second_vision_call(
    openai_worker, fake_openai, rulebase, user
):
    from tests.integration.pipeline.test_pipeline_openai import ANSWER, VISION

    fake_openai.set_default_for_schema(VISION, lambda body: ok(NOT_SURE, prompt_tokens=1000))
    fake_openai.set_default_for_schema(ANSWER, lambda body: ok(GUIDANCE, prompt_tokens=500))
    api = APIClient()
    api.force_authenticate(user)
    task_id = upload(api, "병")
    asked = wait_for_scan(task_id)
    assert (asked.status, asked.provider) == ("needs_input", "openai")
    assert not fake_openai.requests_for_schema(ANSWER), "a question costs no answer call"

    assert (
        api.post(
            f"/api/v1/scans/{task_id}/choose", {"category_code": "pet_clear"}, format="json"
        ).status_code
        == 202
    )
    done = wait_for_scan(task_id)

    assert done.status == ScanStatus.COMPLETED, (done.error_code, done.error_message)
    assert len(fake_openai.requests_for_schema(VISION)) == 1, "no new vision call"
    assert len(fake_openai.requests_for_schema(ANSWER)) == 1
    assert done.classification["chosen_by"] == "user"
    assert done.answer["user_answer"] == GUIDANCE["user_answer"]

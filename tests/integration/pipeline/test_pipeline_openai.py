"""The pipeline with the OpenAI provider, through a real worker, against the fake OpenAI server.

The fake speaks real HTTP on loopback; the worker subprocess reaches it with the real `openai`
client. Everything asserted here is what a user, an operator or the bill would see.
"""

import base64
import io
import json
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from scans.models import Scan, ScanStatus
from tests.conftest import wait_for_scan
from tests.fakes.openai_server import ok, rate_limited, refusal, slow, storm
from tests.scans.test_image_preparation import jpeg_with_exif

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

VISION = "waste_classification"
ANSWER = "disposal_answer"
PET_BOTTLE = {
    "minor_category": "생수병",
    "minor_category_en": "water bottle",
    "category_code": "pet_clear",
    "major_category": "재활용폐기물",
    "middle_category": "무색페트병",
    "situation_tags": ["label_attached"],
    "confidence": 0.93,
    "alternatives": [],
    "user_input": "",
}
GUIDANCE = {
    "disposal_steps": ["내용물을 비우고 헹궈요.", "라벨을 떼요.", "찌그러뜨려 뚜껑을 닫아요."],
    "insufficiencies": ["라벨을 떼어 주세요."],
    "user_answer": "투명 페트병은 라벨을 떼고 전용 수거함에 넣어요.",
}


def hint_of(request) -> str:
    """The user hint a recorded vision request carried."""
    text = request.body["messages"][-1]["content"][0]["text"]
    return json.loads(text.split(": ", 1)[1])["user_hint"]


def sent_image(request) -> Image.Image:
    url = request.body["messages"][-1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


@pytest.fixture
def client(openai_worker, rulebase, user):
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.fixture
def replies(fake_openai):
    fake_openai.set_default_for_schema(
        VISION,
        lambda body: ok(PET_BOTTLE, prompt_tokens=1200, cached_tokens=1024, completion_tokens=60),
    )
    fake_openai.set_default_for_schema(
        ANSWER, lambda body: ok(GUIDANCE, prompt_tokens=900, completion_tokens=120)
    )
    return fake_openai


def upload(client, image: SimpleUploadedFile, hint: str = "") -> str:
    response = client.post("/api/v1/scans", {"image": image, "hint": hint}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def camera_photo(size=(2400, 1200)) -> SimpleUploadedFile:
    return SimpleUploadedFile("IMG_0001.jpg", jpeg_with_exif(size=size), content_type="image/jpeg")


def test_a_scan_completes_with_openai_models_tokens_and_cost(client, replies):
    task_id = upload(client, camera_photo(), "라벨 있음")

    scan = wait_for_scan(task_id)

    assert scan.status == ScanStatus.COMPLETED, scan.error_message
    result = client.get(f"/api/v1/scans/{task_id}").json()["result"]
    assert result["provider"] == "openai"
    assert result["classification"]["middle_category"] == "무색페트병"
    assert result["answer"]["insufficiencies"] == ["라벨을 떼어 주세요."]
    assert "usage" not in result, "cost is staff information"
    assert (scan.vision_model, scan.answer_model) == (
        settings.OPENAI_VISION_MODEL,
        settings.OPENAI_ANSWER_MODEL,
    )
    assert (scan.input_tokens, scan.cached_input_tokens, scan.output_tokens) == (2100, 1024, 180)
    prices = settings.OPENAI_PRICES[settings.OPENAI_VISION_MODEL]
    vision_cost = (
        176 * prices["input"] + 1024 * prices["cached_input"] + 60 * prices["output"]
    ) / 1e6
    answer_cost = (900 * prices["input"] + 120 * prices["output"]) / 1e6
    assert scan.cost_usd == pytest.approx(
        Decimal(str(round(vision_cost + answer_cost, 6))), abs=Decimal("0.000002")
    )
    assert scan.prompt_version.startswith("vision-") and "answer-" in scan.prompt_version


def test_the_photo_sent_is_upright_resized_and_stripped(client, replies):
    wait_for_scan(upload(client, camera_photo(size=(2400, 1200)), "라벨 있음"))

    (request,) = replies.requests_for_schema(VISION)
    image = sent_image(request)
    assert image.format == "JPEG"
    assert image.size == (512, 1024), "EXIF orientation applied, longest edge capped"
    assert dict(image.getexif()) == {}
    assert b"SecretCam" not in request.raw
    assert request.headers["authorization"] == "Bearer test-key"
    messages = request.body["messages"]
    assert messages[0]["role"] == "system" and "Taxonomy" in messages[0]["content"]
    assert hint_of(request) == "라벨 있음"


def test_a_repeated_photo_is_a_cache_hit_with_no_new_vision_call(client, replies, staff_user):
    photo = jpeg_with_exif(size=(300, 200))
    first = wait_for_scan(upload(client, SimpleUploadedFile("a.jpg", photo), "생수병"))
    second = wait_for_scan(upload(client, SimpleUploadedFile("b.jpg", photo), "생수병"))

    assert len(replies.requests_for_schema(VISION)) == 1
    assert (first.vision_cache_hit, second.vision_cache_hit) == (False, True)
    assert second.classification == first.classification
    assert second.usage.get("vision") is None and second.cost_usd < first.cost_usd
    staff = APIClient()
    staff.force_authenticate(staff_user)
    result = staff.get(f"/api/v1/scans/{second.id}").json()["result"]
    assert result["cache_hit"] is True and "vision" not in result["usage"]["per_step"]


def test_a_refusal_fails_the_scan_with_a_readable_reason(client, replies):
    replies.enqueue_for_schema(VISION, refusal("I can't help with that."))

    scan = wait_for_scan(upload(client, camera_photo(), "이건 뭐야"))

    assert (scan.status, scan.error_code, scan.step) == (
        ScanStatus.FAILED,
        "provider_refused",
        "vision",
    )
    error = client.get(f"/api/v1/scans/{scan.id}").json()["error"]
    assert error["message"] == "인식 서비스가 이 사진의 설명을 거부했어요."
    assert "declined" in scan.error_message  # the provider's detail, for staff
    assert replies.requests_for_schema(ANSWER) == []


def test_a_slow_provider_times_out_and_the_retry_succeeds(client, replies):
    replies.enqueue_for_schema(VISION, slow(5, ok(PET_BOTTLE)))

    scan = wait_for_scan(upload(client, camera_photo(), "생수병"), timeout=45)

    assert scan.status == ScanStatus.COMPLETED, scan.error_message
    assert len(replies.requests_for_schema(VISION)) == 2


def test_a_retry_waits_for_a_retry_after_longer_than_the_backoff_cap(client, replies):
    # the worker's SCAN_RETRY_BACKOFF_CAP is 2 s (tests/conftest.py); the provider asks for 5
    replies.enqueue_for_schema(VISION, rate_limited(5))

    scan = wait_for_scan(upload(client, camera_photo(), "생수병"), timeout=45)

    assert scan.status == ScanStatus.COMPLETED, scan.error_message
    first, retry = replies.requests_for_schema(VISION)
    assert retry.received_at - first.received_at >= 5, "never sooner than Retry-After"


def test_a_retry_after_beyond_the_maximum_fails_at_once_saying_when_to_come_back(client, replies):
    replies.enqueue_for_schema(VISION, rate_limited(settings.SCAN_RETRY_AFTER_MAX + 600))

    scan = wait_for_scan(upload(client, camera_photo(), "생수병"))

    assert (scan.status, scan.error_code) == (ScanStatus.FAILED, "provider_rate_limited_long")
    assert len(replies.requests_for_schema(VISION)) == 1, "no retry held for 15 minutes"
    error = client.get(f"/api/v1/scans/{scan.id}", HTTP_ACCEPT_LANGUAGE="en").json()["error"]
    assert "Please try again later" in error["message"] and error["retryable"]
    # the time to come back, for staff (the admin, error.detail, the digest)
    assert "Please try again after" in scan.error_message, scan.error_message
    assert "in about 15 min" in scan.error_message


def test_a_429_storm_ends_with_every_scan_terminal_and_attempts_bounded(client, replies):
    doomed = "#always-429"
    flaky = storm(rate=0.5, fault=rate_limited(0.2), otherwise=lambda body: ok(PET_BOTTLE), seed=3)
    replies.set_default_for_schema(
        VISION,
        lambda body: (
            rate_limited(0.2) if doomed in json.dumps(body, ensure_ascii=False) else flaky(body)
        ),
    )
    hints = [f"병 {n}" for n in range(6)] + [f"{doomed} {n}" for n in range(2)]
    ids = [
        upload(client, SimpleUploadedFile(f"{n}.jpg", jpeg_with_exif(size=(100 + n, 80))), hint)
        for n, hint in enumerate(hints)
    ]

    scans = [wait_for_scan(task_id, timeout=90) for task_id in ids]

    attempts: dict[str, int] = {}
    for request in replies.requests_for_schema(VISION):
        attempts[hint_of(request)] = attempts.get(hint_of(request), 0) + 1
    assert max(attempts.values()) <= 4, attempts  # one call and at most three retries
    by_hint = {scan.hint: scan for scan in scans}
    for n in range(2):
        doomed_scan = by_hint[f"{doomed} {n}"]
        assert attempts[doomed_scan.hint] == 4
        assert (doomed_scan.status, doomed_scan.error_code) == (
            ScanStatus.FAILED,
            "provider_rate_limited",
        )
    assert all(scan.status in (ScanStatus.COMPLETED, ScanStatus.FAILED) for scan in scans)
    assert Scan.objects.filter(status__in=["queued", "processing"]).count() == 0


# --- issue 19 §6: a question when not sure, the answer cache, the language --------------------
NOT_SURE = {
    **PET_BOTTLE,
    "confidence": 0.45,
    "alternatives": [
        {"category_code": "plastic", "item": "플라스틱 컵", "item_en": "plastic cup", "confidence": 0.3},
        {"category_code": "glass", "item": "유리컵", "item_en": "glass", "confidence": 0.2},
    ],
}  # fmt: skip


def photo_upload(name: str, size=(300, 200)) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_with_exif(size=size), content_type="image/jpeg")


def test_a_scan_the_model_is_not_sure_of_asks_with_candidates_and_is_not_cached(client, replies):
    replies.set_default_for_schema(VISION, lambda body: ok(NOT_SURE))

    first = wait_for_scan(upload(client, photo_upload("a.jpg"), "이거"))
    second = wait_for_scan(upload(client, photo_upload("b.jpg"), "이거"))  # the same photo

    assert first.status == ScanStatus.NEEDS_INPUT, first.error_message
    assert first.classification["details"]["reason"] == "low_confidence"
    assert first.classification["candidates"] == [
        {"category_code": "pet_clear", "item": "생수병", "item_en": "water bottle", "score": 0.45},
        {"category_code": "plastic", "item": "플라스틱 컵", "item_en": "plastic cup", "score": 0.3},
        {"category_code": "glass", "item": "유리컵", "item_en": "glass", "score": 0.2},
    ]  # fmt: skip
    # the scan asks which one it is, offering the model's pick and its alternatives
    question = client.get(f"/api/v1/scans/{first.id}").json()["question"]
    assert question["reason"] == "low_confidence"
    assert [(c["category_code"], c["item"]) for c in question["choices"]] == [
        ("pet_clear", "생수병"),
        ("plastic", "플라스틱 컵"),
        ("glass", "유리컵"),
    ]
    assert first.matched_rules is None and replies.requests_for_schema(ANSWER) == []
    # a guess is not frozen into the cache: the same photo is looked at again
    assert second.status == ScanStatus.NEEDS_INPUT
    assert len(replies.requests_for_schema(VISION)) == 2
    assert (first.vision_cache_hit, second.vision_cache_hit) == (False, False)


def test_photos_classified_alike_share_one_paid_answer(client, replies, staff_user):
    first = wait_for_scan(upload(client, photo_upload("a.jpg", (300, 200)), "생수병"))
    second = wait_for_scan(upload(client, photo_upload("b.jpg", (320, 240)), "물병"))

    assert (first.status, second.status) == (ScanStatus.COMPLETED, ScanStatus.COMPLETED)
    assert len(replies.requests_for_schema(VISION)) == 2, "two photos: two classifications"
    assert len(replies.requests_for_schema(ANSWER)) == 1, "one category and tags: one answer"
    assert (first.answer_cache_hit, second.answer_cache_hit) == (False, True)
    assert second.answer == first.answer
    assert "answer" not in second.usage and second.answer_model == ""
    assert second.cost_usd == Decimal(str(second.usage["vision"]["cost_usd"]))
    staff = APIClient()
    staff.force_authenticate(staff_user)
    result = staff.get(f"/api/v1/scans/{second.id}").json()["result"]
    assert result["answer_cache_hit"] is True and "answer" not in result["usage"]["per_step"]


def test_scans_classified_alike_at_the_same_time_pay_for_one_answer(client, replies):
    """The answer cache's lease: while one scan pays for the guidance, the others wait for it."""
    replies.set_default_for_schema(ANSWER, lambda body: slow(1.0, ok(GUIDANCE)))

    ids = [upload(client, photo_upload(f"{n}.jpg", (300 + n, 200)), "생수병") for n in range(3)]
    scans = [wait_for_scan(task_id, timeout=60) for task_id in ids]

    assert all(scan.status == ScanStatus.COMPLETED for scan in scans)
    assert len(replies.requests_for_schema(ANSWER)) == 1
    assert sorted(scan.answer_cache_hit for scan in scans) == [False, True, True]


def test_an_upload_in_english_gets_its_guidance_asked_for_in_english(client, replies):
    english = {
        "disposal_steps": ["Empty the bottle and rinse it clean.", "Tear the label off."],
        "insufficiencies": ["Peel off the plastic label."],
        "user_answer": "Put it out with clear PET bottles.",
    }
    replies.set_default_for_schema(ANSWER, lambda body: ok(english))
    response = client.post(
        "/api/v1/scans",
        {"image": camera_photo(), "hint": "water bottle"},
        format="multipart",
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 202, response.content

    scan = wait_for_scan(response.json()["task_id"])

    assert scan.status == ScanStatus.COMPLETED and scan.language == "en"
    (request,) = replies.requests_for_schema(ANSWER)
    payload = json.loads(request.body["messages"][1]["content"])
    assert payload["language"] == {"code": "en", "name": "English"}
    assert payload["rules"]["fixes"] == [
        {"tag": "label_attached", "fix": "Peel off the plastic label."}
    ]
    assert scan.answer["user_answer"] == english["user_answer"]
    assert scan.answer["disposal_steps"] == english["disposal_steps"]


def test_a_new_image_detail_misses_the_vision_cache(client, replies, worker_manager, openai_worker):
    photo = jpeg_with_exif(size=(300, 200))
    low = wait_for_scan(upload(client, SimpleUploadedFile("a.jpg", photo), "생수병"))
    worker_manager.ensure(  # the openai_worker's settings, but high image detail
        SCAN_VISION_PROVIDER="scans.providers.openai.OpenAIVisionProvider",
        SCAN_ANSWER_PROVIDER="scans.providers.openai.OpenAIAnswerProvider",
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=replies.base_url,
        OPENAI_TIMEOUT="2",
        OPENAI_IMAGE_DETAIL="high",
    )
    high = wait_for_scan(upload(client, SimpleUploadedFile("b.jpg", photo), "생수병"))
    again = wait_for_scan(upload(client, SimpleUploadedFile("c.jpg", photo), "생수병"))

    details = [r.body["messages"][1]["content"][1]["image_url"]["detail"]
               for r in replies.requests_for_schema(VISION)]  # fmt: skip
    assert details == ["low", "high"], "the same photo at another detail is looked at again"
    assert (low.vision_cache_hit, high.vision_cache_hit, again.vision_cache_hit) == (
        False,
        False,
        True,
    )

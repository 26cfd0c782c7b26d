"""The scan page and its result card: in Korean and English, for the owner and for staff,
classified, unclassified, failed (told from its code) and retrying. No worker runs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from scans.models import (
    AttemptOutcome,
    ScanOutcome,
    ScanStatus,
    ScanStep,
    TaskAttempt,
)
from tests.scans.web.helpers import completed_scan, english, failed_scan, logged_in, make_scan

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("translations")]


# --- the scan page and the result card -------------------------------------------------------
def test_the_result_card_in_korean(rulebase, user):
    scan = completed_scan(user)

    page = logged_in(user).get(f"/scans/{scan.id}/").content.decode()

    assert 'class="result"' in page
    assert "재활용폐기물" in page and "무색페트병" in page
    assert "배출 방법" in page and "비닐 라벨을 떼어 주세요." in page  # steps, what to fix
    assert "먼저 이것부터 해 주세요" in page
    assert "무색페트병(으)로 배출해요." in page  # the short answer
    assert f"/scans/{scan.id}/image" in page  # the photo
    assert "오프라인 모드" in page
    assert "비용" not in page and "Cost" not in page, "cost is for staff only"


def test_the_result_card_in_english_uses_the_rule_base_in_english(rulebase, user):
    scan = completed_scan(user)

    page = english(logged_in(user)).get(f"/scans/{scan.id}/").content.decode()

    assert '<html lang="en">' in page
    assert "Clear PET bottles" in page and "Recyclables" in page
    assert "How to put it out" in page and "Peel off the plastic label." in page
    assert "Fix this first" in page
    assert "Original guidance (Korean)" in page and "무색페트병(으)로 배출해요." in page


def test_an_english_scan_read_in_korean_shows_the_rules_in_korean(rulebase, user):
    scan = completed_scan(user, language="en")
    scan.answer = {
        "disposal_steps": ["Peel off the plastic label."],
        "insufficiencies": ["Peel off the plastic label."],
        "user_answer": "Clear PET bottle: put it out with clear PET bottles.",
    }
    scan.save(update_fields=["answer"])

    page = logged_in(user).get(f"/scans/{scan.id}/").content.decode()

    assert "비닐 라벨을 떼어 주세요." in page  # what to fix, in Korean
    assert "무색페트병으로 배출해요." in page  # the headline the rules give, in Korean
    assert "원래 안내문 (영어)" in page and "put it out with clear PET bottles" in page


def test_staff_see_provider_tokens_and_cost(rulebase, user, staff_user):
    scan = completed_scan(
        user,
        provider="openai",
        vision_model="gpt-4.1-mini",
        input_tokens=1200,
        cached_input_tokens=1024,
        output_tokens=80,
        cost_usd=Decimal("0.000345"),
    )

    staff_page = english(logged_in(staff_user)).get(f"/scans/{scan.id}/").content.decode()
    owner_page = english(logged_in(user)).get(f"/scans/{scan.id}/").content.decode()

    assert "$0.000345" in staff_page and "1200 in (1024 cached), 80 out" in staff_page
    assert "gpt-4.1-mini" in staff_page
    for text in ("$0.000345", "gpt-4.1-mini", "Tokens"):
        assert text not in owner_page


def test_an_unclassified_scan_asks_for_a_description(rulebase, user):
    scan = make_scan(
        user,
        status=ScanStatus.COMPLETED,
        step=ScanStep.DONE,
        progress=100,
        outcome=ScanOutcome.UNCLASSIFIED,
        provider="offline",
        answer={"disposal_steps": [], "insufficiencies": [], "user_answer": "무엇인지 몰라요."},
    )
    page = logged_in(user).get(f"/scans/{scan.id}/").content.decode()
    assert "설명이 필요해요" in page and "무엇인지 몰라요." in page


def test_a_failed_scan_shows_its_reason_and_a_retry_button_to_its_owner(user, staff_user):
    scan = failed_scan(user)

    page = logged_in(user).get(f"/scans/{scan.id}/").content.decode()
    staff_page = logged_in(staff_user).get(f"/scans/{scan.id}/").content.decode()

    assert "스캔에 실패했어요" in page
    assert "예상하지 못한 오류로 스캔이 멈췄어요." in page  # the reason, in the page's language
    assert "internal_error" in page and "RuntimeError" not in page, "the detail is for staff"
    assert "RuntimeError" in staff_page
    assert f'action="/scans/{scan.id}/retry"' in page
    assert f'action="/scans/{scan.id}/retry"' not in staff_page, "owner only"


@pytest.mark.parametrize(
    ("code", "detail", "korean_reason", "english_reason"),
    [
        (
            "image_url_unreachable",
            "127.0.0.1 could not be reached ([Errno 111] Connection refused).",
            "사진 주소에 연결할 수 없어요.",
            "The photo&#x27;s address could not be reached.",
        ),
        (
            "image_url_refused",
            "The image URL's host a.example points to an address that is not allowed: "
            "10.0.0.1 is in 10.0.0.0/8 (private).",
            "Eco²는 이 주소에서 사진을 가져오지 않아요.",
            "Eco² does not fetch photos from this address",
        ),
        (
            "provider_timeout",
            "The AI provider did not answer in time. We will try again.",
            "인식 서비스가 제때 응답하지 않았어요.",
            "The recognition service did not answer in time.",
        ),
    ],
)
def test_a_failure_is_told_from_its_code_in_the_pages_language(
    user, code, detail, korean_reason, english_reason
):
    scan = failed_scan(user, code=code, error_message=detail)
    client = logged_in(user)

    korean = client.get(f"/scans/{scan.id}/").content.decode()
    english_page = english(client).get(f"/scans/{scan.id}/").content.decode()
    history = english(client).get("/scans/").content.decode()

    assert korean_reason in korean
    assert english_reason in english_page and english_reason in history
    for page in (korean, english_page, history):  # never the exception's (English) text
        assert "Errno" not in page and "10.0.0.0/8" not in page and "try again" not in page


def test_a_photo_problem_offers_a_new_upload_instead_of_a_retry(user):
    scan = failed_scan(user, code="corrupt", error_message="The photo is damaged.")
    page = logged_in(user).get(f"/scans/{scan.id}/").content.decode()
    assert "/retry" not in page and "다른 사진 올리기" in page


def test_retries_of_the_current_step_are_shown(user):
    scan = make_scan(user, status=ScanStatus.PROCESSING, step=ScanStep.VISION, progress=10)
    TaskAttempt.objects.create(
        scan=scan,
        task_id="t1",
        task_name="scans.tasks.vision_scan",
        step="vision",
        attempt=1,
        outcome=AttemptOutcome.RETRY,
        exception_class="TransientProviderError",
        exception_message="provider_rate_limited: The provider answered 429 Too Many Requests.",
    )
    client = logged_in(user)
    korean = client.get(f"/scans/{scan.id}/").content.decode()
    page = english(client).get(f"/scans/{scan.id}/").content.decode()
    assert "Retrying: 1 failed attempt so far." in page
    assert "The recognition service is busy." in page and "인식 서비스가 바빠요." in korean
    assert "429 Too Many Requests" not in page + korean, "the reason, not the exception's text"


def test_other_peoples_scans_are_404(user, other_user):
    scan = make_scan(user)
    client = logged_in(other_user)
    assert client.get(f"/scans/{scan.id}/").status_code == 404
    assert client.get(f"/scans/{scan.id}/image").status_code == 404

"""The browser pages without a browser: upload (no JavaScript), scan page and result card,
live progress (SSE, the async view), the retry button, history filters and the languages.

No worker: nothing here is committed, so no pipeline is dispatched. tests/test_browser.py
runs the same pages in Chromium against a live ASGI server and a real worker.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, Client
from django.test.signals import setting_changed
from django.utils import timezone, translation

from scans import events
from scans.models import (
    AttemptOutcome,
    Category,
    Scan,
    ScanOutcome,
    ScanStatus,
    ScanStep,
    TaskAttempt,
)
from scans.rules import match_rules

from .conftest import make_photo_bytes
from .photos import CONTENT_TYPES, photo_bytes

pytestmark = pytest.mark.django_db

BASE_DIR = Path(settings.BASE_DIR)
LOCALE_DIR = BASE_DIR / "locale"


# --- translations ----------------------------------------------------------------------------
def ensure_compiled_messages() -> None:
    """Compile locale/*/django.po when the .mo is missing or older (`make test` does this
    too; a bare `pytest` should not depend on it), then drop Django's cached catalogues."""
    stale = []
    for po in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/django.po")):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            stale.append((po, mo))
    if not stale:
        return
    if shutil.which("msgfmt") is None:
        pytest.fail("msgfmt is missing: install gettext (apt-get install gettext)")
    for po, mo in stale:
        subprocess.run(["msgfmt", "--check-format", "-o", str(mo), str(po)], check=True)
    setting_changed.send(
        sender=None, setting="LOCALE_PATHS", value=settings.LOCALE_PATHS, enter=False
    )


@pytest.fixture(autouse=True)
def _translations():
    ensure_compiled_messages()
    yield
    translation.deactivate()  # requests activate a language in this thread; leave none behind


def read_po(path: Path) -> list[dict]:
    """Entries of a .po file: msgid, msgid_plural, msgstr (index → text) and flags."""
    entries: list[dict] = []
    entry: dict = {}
    field = None

    def unquote(text: str) -> str:
        return json.loads(text)

    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if "msgid" in entry:
                entries.append(entry)
            entry, field = {}, None
            continue
        if line.startswith("#,"):
            entry.setdefault("flags", set()).update(f.strip() for f in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif match := re.match(r"^(msgid|msgid_plural|msgstr(?:\[(\d+)\])?) (\".*\")$", line):
            name, index, text = match.groups()
            if name.startswith("msgstr"):
                field = ("msgstr", int(index or 0))
                entry.setdefault("msgstr", {})[field[1]] = unquote(text)
            else:
                field = name
                entry[name] = unquote(text)
        elif line.startswith('"') and field is not None:
            if isinstance(field, tuple):
                entry["msgstr"][field[1]] += unquote(line)
            else:
                entry[field] += unquote(line)
    return entries


PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def test_the_korean_catalogue_translates_every_msgid():
    entries = read_po(LOCALE_DIR / "ko" / "LC_MESSAGES" / "django.po")
    header, messages = entries[0], entries[1:]
    assert header["msgid"] == "" and "Language: ko" in header["msgstr"][0]
    assert len(messages) > 100
    problems = []
    for entry in messages:
        texts = list(entry.get("msgstr", {}).values())
        if "fuzzy" in entry.get("flags", set()):
            problems.append(f"fuzzy: {entry['msgid']!r}")
        elif not texts or not all(t.strip() for t in texts):
            problems.append(f"untranslated: {entry['msgid']!r}")
        elif set(PLACEHOLDER.findall(entry["msgid"])) != set(PLACEHOLDER.findall(texts[0])):
            problems.append(f"placeholders differ: {entry['msgid']!r}")
    assert not problems, "locale/ko/LC_MESSAGES/django.po:\n" + "\n".join(problems)


def test_the_english_catalogue_has_the_same_msgids():
    ko = {e["msgid"] for e in read_po(LOCALE_DIR / "ko" / "LC_MESSAGES" / "django.po")}
    en_entries = read_po(LOCALE_DIR / "en" / "LC_MESSAGES" / "django.po")
    assert {e["msgid"] for e in en_entries} == ko
    assert not any("fuzzy" in e.get("flags", set()) for e in en_entries[1:])


def test_every_template_string_is_in_the_catalogue():
    """{% translate "…" %} in the templates: a string added without makemessages shows up
    untranslated; this names it."""
    msgids = {e["msgid"] for e in read_po(LOCALE_DIR / "ko" / "LC_MESSAGES" / "django.po")}
    tag = re.compile(r"""\{%\s*(?:translate|trans)\s+(["'])(.+?)\1""")
    missing = [
        f"{path.relative_to(BASE_DIR)}: {match.group(2)!r}"
        for path in sorted((BASE_DIR / "templates").rglob("*.html"))
        for match in tag.finditer(path.read_text(encoding="utf-8"))
        if match.group(2) not in msgids
    ]
    assert not missing, "run `make makemessages` and translate:\n" + "\n".join(missing)


# --- helpers ---------------------------------------------------------------------------------
def make_scan(owner, **fields) -> Scan:
    image = SimpleUploadedFile("item.jpg", make_photo_bytes(), content_type="image/jpeg")
    return Scan.objects.create(owner=owner, image=image, **fields)


def completed_scan(owner, *, code="pet_clear", tags=("label_attached",), **fields) -> Scan:
    category = Category.objects.get(code=code)
    classification = {
        "major_category": category.major_ko,
        "middle_category": category.middle_ko,
        "minor_category": category.items.order_by("pk").first().name_ko,
        "category_code": code,
        "situation_tags": list(tags),
        "confidence": 1.0,
        "user_input": "투명 페트병, 라벨 있음",
    }
    rules = match_rules(classification)
    answer = {
        "disposal_steps": [step["ko"] for step in rules["steps"]],
        "insufficiencies": [fix["ko"] for fix in rules["fixes"]],
        "user_answer": f"{category.middle_ko}(으)로 배출해요.",
    }
    values = {
        "status": ScanStatus.COMPLETED,
        "step": ScanStep.DONE,
        "progress": 100,
        "classification": classification,
        "matched_rules": rules,
        "answer": answer,
        "category": category,
        "outcome": ScanOutcome.CLASSIFIED,
        "provider": "offline",
        "hint": "투명 페트병, 라벨 있음",
        "finished_at": timezone.now(),
        **fields,
    }
    return make_scan(owner, **values)


def failed_scan(owner, *, code="internal_error", **fields) -> Scan:
    values = {
        "status": ScanStatus.FAILED,
        "step": ScanStep.VISION,
        "progress": 10,
        "error_code": code,
        "error_message": "An unexpected error stopped the recognition step (RuntimeError).",
        "finished_at": timezone.now(),
        **fields,
    }
    return make_scan(owner, **values)


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def english(client: Client) -> Client:
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    return client


# --- the upload page, without JavaScript -----------------------------------------------------
def test_the_upload_page_is_a_plain_multipart_form(user):
    page = logged_in(user).get("/").content.decode()

    form = re.search(r"<form[^>]*id=\"upload-form\"[^>]*>", page, re.S).group(0)
    assert 'method="post"' in form and 'enctype="multipart/form-data"' in form
    file_input = re.search(r'<input type="file" name="image"[^>]*>', page).group(0)
    assert 'accept="image/*,.heic,.heif,.avif"' in file_input
    assert 'capture="environment"' in file_input
    assert "required" in file_input
    assert 'name="hint"' in page and 'placeholder="투명 페트병, 라벨 있음"' in page
    assert 'name="csrfmiddlewaretoken"' in page and 'type="submit"' in page
    assert 'id="dropzone"' in page and 'id="preview"' in page  # enhanced by static/upload.js
    assert "무엇을 버리시나요?" in page, "Korean by default"


def test_on_the_offline_provider_the_page_says_photos_are_not_seen_and_asks_for_a_hint(user, photo):
    """The default install reads only the hint: the page says so before the upload, and a
    photo alone is refused with the reason instead of becoming a scan that cannot be answered."""
    client = logged_in(user)
    page = client.get("/").content.decode()

    assert "이 서버는 사진을 볼 수 없어요(오프라인 모드)." in page
    assert "OPENAI_API_KEY" in page and "OPENAI_BASE_URL" in page
    hint_input = re.search(r'<input type="text" name="hint"[^>]*>', page).group(0)
    assert "required" in hint_input
    assert "힌트 (필수)" in page and "깨진 유리컵" in page, "examples of a hint"

    photo_only = client.post("/", {"image": photo()})

    assert photo_only.status_code == 400
    assert "힌트에 물건을 적어 주세요. 이 서버는 사진을 볼 수 없어요" in photo_only.content.decode()
    assert not Scan.objects.exists()


def test_with_a_provider_that_sees_photos_the_hint_stays_optional(user, photo, settings):
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = "scans.providers.openai.OpenAIVisionProvider"
    _build.cache_clear()
    try:
        client = logged_in(user)
        page = client.get("/").content.decode()
        assert "오프라인 모드" not in page and "힌트 (선택)" in page
        assert client.post("/", {"image": photo()}).status_code == 302
    finally:
        _build.cache_clear()


def test_the_plain_form_uploads_and_redirects_to_the_scan_page(user, photo):
    client = logged_in(user)

    response = client.post("/", {"image": photo(), "hint": "투명 페트병, 라벨 있음"})

    assert response.status_code == 302
    scan = Scan.objects.get(owner=user)
    assert response["Location"] == f"/scans/{scan.id}/"
    assert scan.hint == "투명 페트병, 라벨 있음" and scan.status == ScanStatus.QUEUED
    page = client.get(response["Location"]).content.decode()
    assert f'data-events-url="/api/v1/scans/{scan.id}/events"' in page
    assert f'data-status-url="/api/v1/scans/{scan.id}"' in page
    assert 'role="progressbar"' in page and "<noscript>" in page


def test_a_missing_photo_is_explained_in_korean(user):
    response = logged_in(user).post("/", {"hint": "캔"})

    assert response.status_code == 400
    assert "물건 사진을 찍거나 골라 주세요." in response.content.decode()
    assert not Scan.objects.exists()


def test_a_file_that_is_not_a_photo_is_refused(user):
    fake = SimpleUploadedFile("x.jpg", b"not a photo", content_type="image/jpeg")
    response = english(logged_in(user)).post("/", {"image": fake})

    assert response.status_code == 400
    assert "This is not a JPEG, PNG, WebP, GIF, HEIC or AVIF photo." in response.content.decode()


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_photos_go_through_the_upload_form(user, fmt):
    """The gallery button and the page's early type check let them through, and the server
    takes them: a photo from an iPhone or macOS Safari is not refused before it is looked at."""
    client = logged_in(user)
    page = client.get("/").content.decode()
    gallery = re.search(r'<input type="file"[^>]*id="gallery-input"[^>]*>', page).group(0)
    assert 'accept="image/*,.heic,.heif,.avif"' in gallery
    types = re.search(r'data-types="([^"]*)"', page).group(1).split()
    assert {"image/heic", "image/heif", "image/avif", "image/jpeg"} <= set(types)
    assert "HEIC" in re.search(r'data-msg-type="([^"]*)"', page).group(1)

    upload = SimpleUploadedFile(f"IMG_0001.{fmt.lower()}", photo_bytes(fmt), CONTENT_TYPES[fmt])
    response = client.post("/", {"image": upload, "hint": "유리병"})

    assert response.status_code == 302, response.content.decode()[-500:]
    assert Scan.objects.get(owner=user).status == ScanStatus.QUEUED


def test_the_upload_needs_the_csrf_token(user, photo):
    client = logged_in(user, enforce_csrf_checks=True)
    assert client.post("/", {"image": photo()}).status_code == 403
    assert not Scan.objects.exists()


def test_pages_need_a_login(client, user):
    for url in ("/", "/scans/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/")


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


# --- live progress: the async SSE view -------------------------------------------------------
def parse_events(stream: str) -> list[dict]:
    parsed = []
    for block in stream.split("\n\n"):
        fields: dict = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key in ("event", "id", "data"):
                fields[key] = value
        if "event" in fields:
            fields["data"] = json.loads(fields.get("data", "null"))
            parsed.append(fields)
    return parsed


@pytest.fixture
def fast_events(monkeypatch):
    monkeypatch.setattr(events, "POLL_SECONDS", 0.02)
    monkeypatch.setattr(events, "MAX_SECONDS", 5.0)


def stream_events(client: AsyncClient, url: str, on_chunk=None, **headers):
    """Read a whole stream through the ASGI request path; ``on_chunk`` may change the scan."""

    async def run():
        response = await client.get(url, headers=headers)
        if not response.streaming:
            return response, ""
        chunks = []
        async for chunk in response.streaming_content:
            chunks.append(chunk.decode())
            if on_chunk:
                await on_chunk(chunk.decode())
        return response, "".join(chunks)

    return async_to_sync(run)()


def async_client(user=None, **defaults) -> AsyncClient:
    client = AsyncClient(**defaults)
    if user is not None:
        client.force_login(user)
    return client


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
    assert final["id"] == "final"
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
        async_client(user), f"/api/v1/scans/{done.id}/events", **{"Last-Event-ID": "final"}
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


# --- the retry button ------------------------------------------------------------------------
def test_the_owner_retries_a_failed_scan(user):
    scan = failed_scan(user)
    client = logged_in(user)

    response = client.post(f"/scans/{scan.id}/retry")

    assert response.status_code == 302 and response["Location"] == f"/scans/{scan.id}/"
    scan.refresh_from_db()
    assert scan.status == ScanStatus.QUEUED and scan.retry_count == 1
    assert scan.error_code == "" and scan.finished_at is None
    assert "스캔을 다시 보냈어요." in client.get(response["Location"]).content.decode()


def test_only_the_owner_may_retry(user, other_user, staff_user):
    scan = failed_scan(user)
    for someone in (other_user, staff_user):
        assert logged_in(someone).post(f"/scans/{scan.id}/retry").status_code == 404
    anonymous = Client().post(f"/scans/{scan.id}/retry")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FAILED and scan.retry_count == 0


def test_only_failed_scans_are_retried(rulebase, user):
    done = completed_scan(user)
    waiting = make_scan(user)
    client = logged_in(user)

    for scan in (done, waiting):
        response = client.post(f"/scans/{scan.id}/retry", follow=True)
        assert response.status_code == 200
        assert "실패한 스캔만 다시 시도할 수 있어요." in response.content.decode()
    assert Scan.objects.get(pk=done.pk).status == ScanStatus.COMPLETED
    assert Scan.objects.filter(retry_count__gt=0).count() == 0


@pytest.mark.parametrize("code", ["corrupt", "unsupported_format", "image_url_refused"])
def test_a_scan_without_a_retry_button_is_not_retried(user, code):
    scan = failed_scan(user, code=code)
    client = logged_in(user)
    assert "/retry" not in client.get(f"/scans/{scan.id}/").content.decode()

    response = client.post(f"/scans/{scan.id}/retry", follow=True)

    assert (
        "다시 시도해도 같은 이유로 실패해요. 다른 사진을 올려 주세요." in response.content.decode()
    )
    scan.refresh_from_db()
    assert (scan.status, scan.retry_count, scan.error_code) == (ScanStatus.FAILED, 0, code)


def test_retry_is_a_post_with_csrf(user):
    scan = failed_scan(user)
    assert logged_in(user).get(f"/scans/{scan.id}/retry").status_code == 405
    strict = logged_in(user, enforce_csrf_checks=True)
    assert strict.post(f"/scans/{scan.id}/retry").status_code == 403
    assert Scan.objects.get(pk=scan.pk).status == ScanStatus.FAILED


# --- history -----------------------------------------------------------------------------------
@pytest.fixture
def history(rulebase, user, other_user):
    now = timezone.now()
    scans = {
        "pet": completed_scan(user),
        "can": completed_scan(user, code="metal", tags=()),
        "failed": failed_scan(user),
        "queued": make_scan(user, hint="뭔지 모를 물건"),
        "others": failed_scan(other_user),
    }
    Scan.objects.filter(pk=scans["can"].pk).update(created_at=now - timedelta(days=3))
    Scan.objects.filter(pk=scans["failed"].pk).update(created_at=now - timedelta(days=10))
    return scans


def listed(page: str) -> list[str]:
    return re.findall(r'data-scan="([0-9a-f-]+)"', page)


def test_history_lists_only_the_users_scans_with_retry_on_failed_ones(user, history):
    page = logged_in(user).get("/scans/").content.decode()

    ids = listed(page)
    assert len(ids) == 4 and str(history["others"].id) not in ids
    assert page.count("/retry") == 1 and f"/scans/{history['failed'].id}/retry" in page
    assert "무색페트병" in page and "금속류" in page and "뭔지 모를 물건" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failed", ["failed"]),
        ("status=completed", ["pet", "can"]),
        ("category=pet_clear", ["pet"]),
        ("category=none", ["failed", "queued"]),
        ("status=completed&category=metal", ["can"]),
    ],
)
def test_history_filters_by_status_and_category(user, history, query, expected):
    page = logged_in(user).get(f"/scans/?{query}").content.decode()
    assert sorted(listed(page)) == sorted(str(history[name].id) for name in expected)


def test_history_filters_by_date_range(user, history):
    today = timezone.localdate()
    client = logged_in(user)

    def ids(query):
        return sorted(listed(client.get(f"/scans/?{query}").content.decode()))

    def expect(*names):
        return sorted(str(history[name].id) for name in names)

    assert ids(f"date_from={today - timedelta(days=5)}") == expect("pet", "can", "queued")
    assert ids(f"date_to={today - timedelta(days=1)}") == expect("can", "failed")
    week = f"date_from={today - timedelta(days=11)}&date_to={today - timedelta(days=2)}"
    assert ids(week) == expect("can", "failed")


def test_history_searches_the_hint_and_the_category(user, history):
    client = logged_in(user)

    assert listed(client.get("/scans/?q=모를").content.decode()) == [str(history["queued"].id)]
    assert listed(client.get("/scans/?q=금속").content.decode()) == [str(history["can"].id)]
    page = client.get("/scans/?q=금속").content.decode()
    assert 'name="q"' in page and 'value="금속"' in page and "검색" in page


def test_bad_filters_are_explained_and_the_rest_still_apply(user, history):
    client = logged_in(user)

    bad_date = client.get("/scans/?status=failed&date_from=yesterday")
    backwards = client.get("/scans/?date_from=2026-05-02&date_to=2026-05-01")
    nothing = client.get("/scans/?status=processing")

    assert listed(bad_date.content.decode()) == [str(history["failed"].id)]
    assert "올바른 날짜를 입력하세요." in bad_date.content.decode()
    assert "종료일이 시작일보다 앞서요." in backwards.content.decode()
    assert "조건에 맞는 스캔이 없어요." in nothing.content.decode()


def test_history_pages_keep_the_filters(user):
    for _ in range(21):
        failed_scan(user)
    page = logged_in(user).get("/scans/?status=failed").content.decode()
    assert len(listed(page)) == 20
    assert "?status=failed&amp;page=2" in page


# --- languages -------------------------------------------------------------------------------
def test_korean_is_the_default_language(user):
    page = logged_in(user).get("/scans/").content.decode()
    assert '<html lang="ko">' in page
    for text in ("새 스캔", "기록", "알림", "로그아웃", "내 스캔"):
        assert text in page


def test_the_language_switcher_sets_english(user):
    client = logged_in(user)
    page = client.get("/scans/").content.decode()
    assert 'action="/i18n/setlang/"' in page and 'name="language" value="en"' in page

    response = client.post("/i18n/setlang/", {"language": "en", "next": "/scans/"})

    assert response.status_code == 302 and response["Location"] == "/scans/"
    page = client.get("/scans/").content.decode()
    assert '<html lang="en">' in page and "Your scans" in page and "New scan" in page
    client.post("/i18n/setlang/", {"language": "ko", "next": "/"})
    assert "내 스캔" in client.get("/scans/").content.decode()


def test_the_browser_language_is_honoured_until_the_user_chooses(user):
    client = logged_in(user)
    page = client.get("/scans/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert '<html lang="en">' in page


def test_the_login_and_notification_pages_are_translated(user):
    assert "로그인" in Client().get("/accounts/login/").content.decode()
    client = logged_in(user)
    korean = client.get("/settings/notifications/").content.decode()
    assert "스캔이 끝나면 이메일로 알려 주세요" in korean and "저장" in korean
    page = english(client).get("/settings/notifications/").content.decode()
    assert "E-mail me when a scan is finished" in page and "Save" in page


def test_static_files_are_served(client):
    """WhiteNoise serves the pages' CSS and scripts (also under the ASGI server)."""
    for name in ("eco2.css", "scan.js", "upload.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        response.close()

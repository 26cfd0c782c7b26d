"""The REST contract, as an API client sees it (no worker needed: nothing is committed here)."""

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from eco2 import pagination
from scans.models import Scan, ScanStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SCANS_URL = "/api/v1/scans"


def test_upload_is_accepted_with_202_location_and_links(api_client, photo, user):
    response = api_client.post(
        SCANS_URL, {"image": photo(), "hint": "투명 페트병, 라벨 있음"}, format="multipart"
    )

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    scan = Scan.objects.get(pk=body["task_id"])
    assert scan.owner == user and scan.hint == "투명 페트병, 라벨 있음"
    assert body["status_url"].endswith(f"/api/v1/scans/{scan.id}")
    assert body["events_url"].endswith(f"/api/v1/scans/{scan.id}/events")
    assert response["Location"] == body["status_url"]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_other_allowed_formats_are_accepted(api_client, photo, fmt):
    response = api_client.post(
        SCANS_URL, {"image": photo(f"item.{fmt.lower()}", fmt)}, format="multipart"
    )
    assert response.status_code == 202


def test_missing_image_is_a_400_with_a_field_message(api_client):
    response = api_client.post(SCANS_URL, {"hint": "캔"}, format="multipart")
    assert response.status_code == 400
    assert "image" in response.json()
    assert Scan.objects.count() == 0


def test_a_text_file_is_refused_with_a_readable_message(api_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    fake = SimpleUploadedFile("photo.jpg", b"this is not a photo at all", content_type="image/jpeg")
    response = api_client.post(
        SCANS_URL, {"image": fake}, format="multipart", HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 400
    assert response.json()["image"] == ["This is not a JPEG, PNG, WebP, GIF, HEIC or AVIF photo."]
    again = SimpleUploadedFile(
        "photo.jpg", b"this is not a photo at all", content_type="image/jpeg"
    )
    korean = api_client.post(SCANS_URL, {"image": again}, format="multipart")
    assert korean.status_code == 400 and "사진" in korean.json()["image"][0], "Korean by default"


def test_a_truncated_photo_is_refused(api_client, photo):
    upload = photo()
    data = upload.read()
    from django.core.files.uploadedfile import SimpleUploadedFile

    truncated = SimpleUploadedFile("cut.jpg", data[: len(data) // 2], content_type="image/jpeg")
    response = api_client.post(
        SCANS_URL, {"image": truncated}, format="multipart", HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 400
    assert "damaged" in response.json()["image"][0]


def test_an_overlong_hint_is_refused(api_client, photo):
    response = api_client.post(
        SCANS_URL, {"image": photo(), "hint": "가" * 201}, format="multipart"
    )
    assert response.status_code == 400
    assert "hint" in response.json()


def test_json_instead_of_multipart_is_a_clear_4xx(api_client):
    response = api_client.post(SCANS_URL, {"hint": "캔"}, format="json")
    assert response.status_code == 400
    assert "image" in response.json()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", SCANS_URL),
        ("post", SCANS_URL),
        ("get", f"{SCANS_URL}/{uuid.uuid4()}"),
        ("get", f"{SCANS_URL}/{uuid.uuid4()}/events"),
    ],
)
def test_without_login_every_scan_endpoint_refuses(anon_client, method, url):
    response = getattr(anon_client, method)(url)
    assert response.status_code in (401, 403)


def test_detail_shows_status_step_progress_and_no_result_yet(api_client, photo):
    task_id = api_client.post(SCANS_URL, {"image": photo()}, format="multipart").json()["task_id"]

    body = api_client.get(f"{SCANS_URL}/{task_id}").json()

    assert body["task_id"] == task_id
    assert (body["status"], body["step"], body["progress"]) == ("queued", "queued", 0)
    assert body["result"] is None and body["error"] is None
    assert body["created_at"] and body["updated_at"]


@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "not-a-uuid", "123"])
def test_unknown_ids_are_404(api_client, task_id):
    response = api_client.get(f"{SCANS_URL}/{task_id}")
    assert response.status_code == 404
    assert response.json() == {"detail": "No scan with this task id."}


def test_another_users_scan_is_invisible(api_client, photo, other_user):
    from rest_framework.test import APIClient

    task_id = api_client.post(SCANS_URL, {"image": photo()}, format="multipart").json()["task_id"]
    intruder = APIClient()
    intruder.force_authenticate(other_user)

    assert intruder.get(f"{SCANS_URL}/{task_id}").status_code == 404
    assert intruder.get(f"{SCANS_URL}/{task_id}/events").status_code == 404
    assert intruder.get(SCANS_URL).json()["count"] == 0


def test_staff_may_read_any_scan(api_client, photo, staff_user):
    from rest_framework.test import APIClient

    task_id = api_client.post(SCANS_URL, {"image": photo()}, format="multipart").json()["task_id"]
    staff = APIClient()
    staff.force_authenticate(staff_user)
    assert staff.get(f"{SCANS_URL}/{task_id}").status_code == 200


def test_list_has_only_own_scans_newest_first_and_paginates(api_client, photo, user):
    ids = [
        api_client.post(SCANS_URL, {"image": photo()}, format="multipart").json()["task_id"]
        for _ in range(3)
    ]
    someone_else = UserFactory()
    Scan.objects.create(owner=someone_else, image="x.jpg")

    body = api_client.get(SCANS_URL).json()

    assert body["count"] == 3
    assert [s["task_id"] for s in body["results"]] == list(reversed(ids))
    assert set(body) >= {"count", "next", "previous", "results"}


def test_list_pages_hold_twenty(api_client, user):
    Scan.objects.bulk_create(Scan(owner=user, image="x.jpg") for _ in range(25))
    first = api_client.get(SCANS_URL).json()
    assert len(first["results"]) == 20 and first["next"]
    assert len(api_client.get(first["next"]).json()["results"]) == 5


def test_the_count_of_a_long_list_stops_at_the_cap_and_its_links_go_past_it(
    api_client, user, monkeypatch
):
    monkeypatch.setattr(pagination, "COUNT_CAP", 30)  # 10,000 in production
    Scan.objects.bulk_create(Scan(owner=user, image="x.jpg") for _ in range(45))

    first = api_client.get(SCANS_URL).json()
    second = api_client.get(first["next"]).json()
    third = api_client.get(second["next"]).json()

    assert first["count"] == second["count"] == third["count"] == 31, "more than the cap"
    assert [len(page["results"]) for page in (first, second, third)] == [20, 20, 5]
    assert third["next"] is None
    # by number, the pages stop at the cap (an offset): narrowed with the filters instead
    assert api_client.get(f"{SCANS_URL}?page=2").json()["count"] == 31
    assert api_client.get(f"{SCANS_URL}?page=3").status_code == 404


def scan_ids(page: dict) -> list[str]:
    return [s["task_id"] for s in page["results"]]


def test_the_links_walk_a_long_list_by_position_once_each_newest_first(api_client, user):
    """Scans uploaded in the same instant too: the cursor is the timestamp, ties are ordered
    by id and skipped by an offset, never shown twice or left out."""
    start = timezone.now()
    scans = Scan.objects.bulk_create(Scan(owner=user, image="x.jpg") for _ in range(50))
    for index, scan in enumerate(scans):  # 10 share one timestamp, across a page boundary
        scan.created_at = start - timedelta(seconds=max(index, 15) if index < 25 else index)
    Scan.objects.bulk_update(scans, ["created_at"])
    newest_first = [
        str(pk) for pk in Scan.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    ]

    pages = [api_client.get(SCANS_URL).json()]
    while pages[-1]["next"]:
        pages.append(api_client.get(pages[-1]["next"]).json())

    assert [len(page["results"]) for page in pages] == [20, 20, 10]
    assert [i for page in pages for i in scan_ids(page)] == newest_first
    assert pages[0]["previous"] is None
    back = api_client.get(pages[2]["previous"]).json()
    assert scan_ids(back) == scan_ids(pages[1])
    assert scan_ids(api_client.get(back["previous"]).json()) == scan_ids(pages[0])
    # the cursor keeps the filters; page numbers still work as before
    assert api_client.get(f"{SCANS_URL}?page=2").json()["results"] == pages[1]["results"]


def test_a_cursor_that_is_not_ours_is_a_404(api_client, user):
    response = api_client.get(f"{SCANS_URL}?cursor=not-a-cursor", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 404 and response.json()["detail"] == "Invalid cursor"


def test_the_links_keep_the_lists_filters(api_client, user):
    Scan.objects.bulk_create(
        Scan(owner=user, image="x.jpg", status=ScanStatus.FAILED if i % 2 else ScanStatus.QUEUED)
        for i in range(50)
    )
    first = api_client.get(f"{SCANS_URL}?status=failed").json()
    second = api_client.get(first["next"]).json()
    assert "status=failed" in first["next"]
    assert (first["count"], len(first["results"]), len(second["results"])) == (25, 20, 5)
    assert {s["status"] for s in first["results"] + second["results"]} == {"failed"}


def test_failed_scan_shows_its_reason_in_the_requests_language(api_client, user, staff_user):
    scan = Scan.objects.create(
        owner=user, image="x.jpg", status=ScanStatus.FAILED, step="vision",
        error_code="provider_refused", error_message="The vision model refused.",
    )  # fmt: skip
    url = f"{SCANS_URL}/{scan.id}"

    korean = api_client.get(url, HTTP_ACCEPT_LANGUAGE="ko").json()
    english = api_client.get(url, HTTP_ACCEPT_LANGUAGE="en").json()
    staff = APIClient()
    staff.force_authenticate(staff_user)

    assert korean["status"] == "failed"
    assert korean["error"] == {
        "code": "provider_refused",
        "message": "인식 서비스가 이 사진의 설명을 거부했어요.",
        "retryable": False,
        "step": "vision",
    }
    assert english["error"]["message"] == "The recognition service refused to describe this photo."
    # the stored technical detail (an exception's text) is for staff only
    assert staff.get(url, HTTP_ACCEPT_LANGUAGE="en").json()["error"]["detail"] == (
        "The vision model refused."
    )


# --- filters (the history page's, scans/filters.py) --------------------------------------------
@pytest.fixture
def listed_scans(rulebase, user, other_user):
    from datetime import timedelta

    from django.utils import timezone

    from scans.models import Category

    def scan(owner=user, days_ago=0, **fields):
        made = Scan.objects.create(owner=owner, image="x.jpg", **fields)
        Scan.objects.filter(pk=made.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
        return made

    pet, metal = Category.objects.get(code="pet_clear"), Category.objects.get(code="metal")
    return {
        "pet": scan(status=ScanStatus.COMPLETED, category=pet, hint="투명 생수병"),
        "can": scan(status=ScanStatus.COMPLETED, category=metal, hint="콜라 캔", days_ago=3),
        "failed": scan(status=ScanStatus.FAILED, error_code="corrupt", days_ago=10),
        "queued": scan(hint="뭔지 모를 물건"),
        "others": scan(owner=other_user, status=ScanStatus.FAILED),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failed", ["failed"]),
        ("status=completed", ["pet", "can"]),
        ("category=pet_clear", ["pet"]),
        ("category=none", ["failed", "queued"]),
        ("status=completed&category=metal", ["can"]),
        ("q=캔", ["can"]),
        ("q=metal", ["can"]),  # the category's English name
        ("q=생수병 투명", ["pet"]),  # every word
        ("date_from={days_ago_5}", ["pet", "can", "queued"]),
        ("date_to={days_ago_1}", ["can", "failed"]),
        ("date_from={days_ago_11}&date_to={days_ago_2}", ["can", "failed"]),
        ("", ["pet", "can", "failed", "queued"]),
    ],
)
def test_the_list_takes_the_history_pages_filters(api_client, listed_scans, query, expected):
    from datetime import timedelta

    from django.utils import timezone

    today = timezone.localdate()
    query = query.format(**{f"days_ago_{n}": today - timedelta(days=n) for n in (1, 2, 5, 11)})

    response = api_client.get(f"{SCANS_URL}?{query}")

    assert response.status_code == 200, response.content
    ids = {scan["task_id"] for scan in response.json()["results"]}
    assert ids == {str(listed_scans[name].id) for name in expected}


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("status=finished", "status", "Select a valid choice."),
        ("category=plutonium", "category", "Select a valid choice."),
        ("date_from=yesterday", "date_from", "Enter a valid date."),
        ("date_from=2026-05-02&date_to=2026-05-01", "date_to", "The end date is before the start"),
    ],
)
def test_a_bad_filter_is_a_400_with_a_message(api_client, listed_scans, query, field, message):
    response = api_client.get(f"{SCANS_URL}?{query}", HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 400
    assert message in response.json()[field][0]


def test_the_filters_are_in_the_schema(api_client):
    document = api_client.get(
        "/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    ).json()
    parameters = {p["name"]: p for p in document["paths"][SCANS_URL]["get"]["parameters"]}

    assert {"status", "category", "date_from", "date_to", "q", "all", "page"} <= set(parameters)
    assert set(parameters["status"]["schema"]["enum"]) >= {"queued", "completed", "failed"}
    assert parameters["date_from"]["schema"]["format"] == "date"


def test_batch_and_scan_timestamps_are_in_the_same_time_zone(api_client, user, photo):
    from django.utils import timezone

    from scans.models import ScanBatch

    created = api_client.post(
        f"{SCANS_URL}/batch", {"images": [photo(), photo()]}, format="multipart"
    ).json()
    ScanBatch.objects.filter(pk=created["batch_id"]).update(completed_at=timezone.now())

    batch = api_client.get(f"/api/v1/batches/{created['batch_id']}").json()
    scan = api_client.get(f"{SCANS_URL}/{created['task_ids'][0]}").json()

    assert scan["created_at"].endswith("+09:00")
    assert batch["created_at"].endswith("+09:00") and batch["completed_at"].endswith("+09:00")


def test_token_login_then_token_auth(anon_client, user):
    response = anon_client.post(
        "/api/v1/auth/token", {"username": user.username, "password": "correct-horse-battery"}
    )
    assert response.status_code == 200
    token = response.json()["token"]

    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon_client.get(SCANS_URL).status_code == 200


def test_token_with_a_wrong_password_is_400(anon_client, user):
    response = anon_client.post(
        "/api/v1/auth/token", {"username": user.username, "password": "nope"}
    )
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_categories_list_the_taxonomy(anon_client, rulebase):
    majors = anon_client.get("/api/v1/categories").json()

    recyclables = next(m for m in majors if m["major_ko"] == "재활용폐기물")
    assert len(recyclables["categories"]) == 12
    assert sum(len(m["categories"]) for m in majors) == 18
    pet = next(c for c in recyclables["categories"] if c["code"] == "pet_clear")
    assert pet["middle_ko"] == "무색페트병" and pet["items"]


def test_openapi_schema_and_swagger_ui_are_served(api_client):
    schema = api_client.get("/api/v1/schema")
    assert schema.status_code == 200
    assert b"/api/v1/scans" in schema.content
    assert api_client.get(reverse("swagger-ui")).status_code == 200


def test_the_schema_documents_the_live_progress_stream(api_client, user):
    from drf_spectacular.validation import validate_schema

    from scans import events

    schema = api_client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    document = schema.json()
    validate_schema(document)  # still a valid OpenAPI document with the added path
    paths = list(document["paths"])
    events_path = f"{SCANS_URL}/{{task_id}}/events"
    assert paths.index(events_path) == paths.index(f"{SCANS_URL}/{{task_id}}") + 1
    operation = document["paths"][events_path]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"tokenAuth": []} in operation["security"]
    for event in ("progress", "completed", "failed", "timeout"):
        assert f"`{event}`" in operation["description"]

    # what it promises for a finished scan whose final event the client has seen
    scan = Scan.objects.create(owner=user, status=ScanStatus.COMPLETED, progress=100)
    seen_final = api_client.get(
        events_path.replace("{task_id}", str(scan.id)),
        HTTP_LAST_EVENT_ID=events.final_event_id(scan.celery_root_id),
    )
    assert seen_final.status_code == 204 and "204" in operation["responses"]

"""“Which one is it?”: a scan that is not sure asks instead of guessing (issue 19 §3).

The services called directly (the rule step's question, the owner's choice or hint, the batch
summary, the mail), the API's answers and refusals, and the scan and history pages. The same
flow through a real worker, the event stream, the CLI and a browser is in
tests/integration/pipeline/test_clarification_pipeline.py and tests/integration/browser/test_browser.py.
"""

from __future__ import annotations

import threading

import pytest
from django.core import mail
from django.db import connection
from rest_framework.test import APIClient

from notifications.models import Notification, NotificationKind, NotificationPreference
from scans import services
from scans.models import (
    Scan,
    ScanBatch,
    ScanEvent,
    ScanOutcome,
    ScanStatus,
    ScanStep,
)
from scans.rules import offered_choices
from scans.services import dispatch, intake
from tests.fakes.providers import UNSURE_HINT
from tests.scans.api.helpers import parse_events, stream_events
from tests.scans.web.helpers import completed_scan, english, logged_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_vision(settings):
    """The tests' vision provider: the offline one, plus hints that fail or are not sure."""
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = "tests.fakes.providers.FailingOnRequestVisionProvider"
    _build.cache_clear()
    yield
    _build.cache_clear()


def asked_scan(owner, photo, hint: str = f"{UNSURE_HINT} 병") -> Scan:
    """A scan run through vision and rule by the services: it asks which one it is."""
    scan = services.create_scan(owner=owner, image=photo(), hint=hint)
    services.run_vision_step(scan.id)
    services.run_rule_step(scan.id)
    return Scan.objects.get(pk=scan.id)


def run_rest(scan_id) -> Scan:
    """What the resumed chain runs, in order: the steps the scan still needs."""
    steps = {
        ScanStep.VISION: services.run_vision_step,
        ScanStep.RULE: services.run_rule_step,
        ScanStep.ANSWER: services.run_answer_step,
    }
    for step in services.remaining_steps(Scan.objects.get(pk=scan_id)):
        steps[step](scan_id)
    return Scan.objects.get(pk=scan_id)


# --- the question ---------------------------------------------------------------------------
def test_a_scan_that_is_not_sure_ends_asking_with_its_choices(rulebase, fake_vision, user, photo):
    scan = asked_scan(user, photo)

    assert (scan.status, scan.step, scan.outcome) == ("needs_input", "input", "ambiguous")
    assert scan.is_terminal and scan.finished_at is not None
    assert scan.answer is None and scan.matched_rules is None and scan.category is None
    assert [(c["category_code"], c["item"]) for c in scan.choices] == [
        ("pet_clear", "생수병"),
        ("glass", "소주병"),
        ("plastic", "유색 페트병"),
    ]
    first = scan.choices[0]
    assert (first["category_ko"], first["category_en"], first["item_en"]) == (
        "무색페트병",
        "Clear PET bottles",
        "water bottle",
    )
    (event,) = ScanEvent.objects.filter(scan=scan)
    assert (event.type, event.routing_key) == ("ScanNeedsInput", "scan.needs_input")
    assert event.payload["status"] == "needs_input"
    assert [c["category_code"] for c in event.payload["choices"]] == [
        "pet_clear",
        "glass",
        "plastic",
    ]
    # the answer step of the chain that asked finds the run ended and does nothing
    assert services.run_answer_step(scan.id) == "skipped"
    assert Scan.objects.get(pk=scan.id).status == ScanStatus.NEEDS_INPUT


def test_the_offline_matchers_own_candidates_are_offered(rulebase, user):
    """Classifications that keep their candidates under details (the offline matcher before
    the contract's top-level ``candidates``) are read too; unknown categories are left out,
    aliases are resolved to the rule base's items, the same item is offered once, at most 4."""
    legacy = {
        "outcome": "unclassified",
        "details": {
            "reason": "ambiguous",
            "candidates": [
                {"category": "glass", "score": 0.6483, "alias": "와인병"},
                {"category": "no_such_bin", "score": 0.6, "alias": "x"},
                {"category": "pet_clear", "score": 0.6, "alias": "생수병"},
                {"category": "pet_clear", "score": 0.59, "alias": "생수병"},
                {"category": "metal", "score": 0.5, "alias": "zzz"},
                {"category": "paper", "score": 0.4, "alias": "신문지"},
                {"category": "vinyl", "score": 0.3, "alias": "과자 봉지"},
            ],
        },
    }

    choices = offered_choices(legacy)

    assert [(c["category_code"], c["item"]) for c in choices] == [
        ("glass", "와인병"),
        ("pet_clear", "생수병"),
        ("metal", "금속류"),  # no item of that name: the category itself is offered
        ("paper", "신문지"),
    ]
    assert choices[0]["item_en"] == "wine bottle" and choices[0]["score"] == 0.6483
    assert choices[2]["item_en"] == choices[2]["category_en"]
    assert offered_choices({"outcome": "unclassified", "details": {"reason": "no_hint"}}) == []


def test_a_classified_result_the_rule_base_cannot_place_asks_too(rulebase, user, photo):
    scan = services.create_scan(owner=user, image=photo(), hint="뭔가")
    Scan.objects.filter(pk=scan.pk).update(
        classification={"outcome": "classified", "category_code": "not_a_bin"}, progress=33
    )

    services.run_rule_step(scan.id)

    scan.refresh_from_db()
    assert (scan.status, scan.outcome, scan.choices) == ("needs_input", "ambiguous", [])


# --- the answer: a choice ---------------------------------------------------------------------
def test_the_owners_choice_resumes_at_the_rule_step_and_completes(
    rulebase, fake_vision, user, photo, django_capture_on_commit_callbacks, monkeypatch
):
    scan = asked_scan(user, photo)
    dispatched = []
    monkeypatch.setattr(dispatch, "dispatch_pipeline", lambda scan_id, **kw: dispatched.append(1))
    with django_capture_on_commit_callbacks(execute=True):
        services.choose_category(scan, category_code="glass", actor="test")

    resumed = Scan.objects.get(pk=scan.id)
    assert (resumed.status, resumed.step, resumed.progress) == ("queued", "rule", 33)
    assert resumed.finished_at is None and resumed.celery_root_id != scan.celery_root_id
    assert dispatched == [1]
    assert services.remaining_steps(resumed) == [ScanStep.RULE, ScanStep.ANSWER], "no vision"
    classification = resumed.classification
    assert classification["chosen_by"] == "user" and classification["chosen_at"]
    assert (classification["outcome"], classification["confidence"]) == ("classified", 1.0)
    assert (classification["category_code"], classification["minor_category"]) == (
        "glass",
        "소주병",  # the offered item of that bin
    )
    assert classification["middle_category"] == "유리병"
    assert classification["before_choice"] == {
        "outcome": "unclassified",
        "category_code": None,
        "minor_category": None,
        "confidence": 0.62,
        "reason": "ambiguous",
    }
    assert [c["category_code"] for c in classification["candidates"]] == [
        "pet_clear",
        "glass",
        "plastic",
    ], "the original candidates are kept"
    resumed_event = ScanEvent.objects.get(scan=scan, type="ScanResumed")
    assert resumed_event.routing_key == "scan.resumed"
    assert resumed_event.payload["resumed_by"] == "choice"
    assert resumed_event.payload["choice"] == {"category_code": "glass", "item": "소주병"}

    done = run_rest(scan.id)

    assert (done.status, done.outcome, done.category.code) == ("completed", "classified", "glass")
    assert done.answer["disposal_steps"] and "유리병" in done.answer["user_answer"]
    assert done.choices, "what was offered stays on record"
    assert list(ScanEvent.objects.filter(scan=scan).values_list("type", flat=True)) == [
        "ScanNeedsInput",
        "ScanResumed",
        "ScanCompleted",
    ]


def test_any_category_can_be_chosen_with_an_item_in_either_language(
    rulebase, fake_vision, user, photo
):
    scan = asked_scan(user, photo)

    services.choose_category(scan, category_code="metal", item="aluminium can")

    classification = Scan.objects.get(pk=scan.id).classification
    assert (classification["category_code"], classification["minor_category"]) == (
        "metal",
        "알루미늄 캔",
    )


def test_the_answer_step_of_the_run_that_asked_does_not_fail_the_resumed_scan(
    rulebase, fake_vision, user, photo
):
    """The rule step that asks cannot stop its chain: the answer step after it stays queued
    (behind other scans on a busy AI queue) and may run after the owner's choice resumed the
    scan at the rule step, before the new rule step. It used to fail the scan
    (rules_missing); it is a message of a run the scan has left, and is skipped."""
    scan = asked_scan(user, photo)
    services.choose_category(scan, category_code="pet_clear")

    assert services.run_answer_step(scan.id) == "skipped"  # the earlier run's answer step

    assert Scan.objects.get(pk=scan.id).status == ScanStatus.QUEUED
    assert run_rest(scan.id).status == ScanStatus.COMPLETED


@pytest.mark.parametrize(
    ("code", "item", "error"),
    [
        ("no_such_bin", "", "invalid_choice"),
        ("", "", "invalid_choice"),
        ("glass", "자동차", "invalid_choice_item"),
    ],
)
def test_a_choice_that_names_no_bin_or_an_item_of_another_is_refused(
    rulebase, fake_vision, user, photo, code, item, error
):
    scan = asked_scan(user, photo)

    with pytest.raises(services.InvalidAnswer) as refused:
        services.choose_category(scan, category_code=code, item=item)

    assert refused.value.code == error
    assert Scan.objects.get(pk=scan.id).status == ScanStatus.NEEDS_INPUT


def test_only_a_scan_that_asks_can_be_answered(rulebase, user, photo):
    done = completed_scan(user)
    with pytest.raises(services.ScanNotWaiting):
        services.choose_category(done, category_code="glass")
    with pytest.raises(services.ScanNotWaiting):
        services.rerun_with_hint(done, hint="유리병")
    assert Scan.objects.get(pk=done.pk).status == ScanStatus.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_two_answers_at_the_same_moment_resume_the_scan_once(
    rulebase, fake_vision, user, photo, monkeypatch
):
    """Two taps, two tabs: the conditional UPDATE needs_input → queued is the lock."""
    monkeypatch.setattr(intake, "dispatch_pipeline", lambda scan_id, **kw: True)
    monkeypatch.setattr(dispatch, "dispatch_pipeline", lambda scan_id, **kw: True)
    scan = asked_scan(user, photo)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def answer(code: str) -> None:
        try:
            barrier.wait()
            services.choose_category(Scan.objects.get(pk=scan.id), category_code=code)
            outcomes.append("resumed")
        except services.ScanNotWaiting:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=answer, args=(code,)) for code in ("glass", "pet_clear")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused", "resumed"]
    assert ScanEvent.objects.filter(scan_id=scan.id, type="ScanResumed").count() == 1


# --- the answer: a hint -----------------------------------------------------------------------
def test_a_hint_recognises_the_photo_again_from_the_vision_step(rulebase, fake_vision, user, photo):
    scan = asked_scan(user, photo)

    services.rerun_with_hint(scan, hint="  투명   생수병 ", actor="test")

    resumed = Scan.objects.get(pk=scan.id)
    assert (resumed.status, resumed.step, resumed.hint) == ("queued", "vision", "투명 생수병")
    assert resumed.classification is None and resumed.choices is None
    assert services.remaining_steps(resumed) == [ScanStep.VISION, ScanStep.RULE, ScanStep.ANSWER]
    event = ScanEvent.objects.get(scan=scan, type="ScanResumed")
    assert (event.payload["resumed_by"], event.payload["hint"]) == ("hint", "투명 생수병")

    done = run_rest(scan.id)

    assert (done.status, done.category.code) == ("completed", "pet_clear")
    assert "chosen_by" not in done.classification
    with pytest.raises(services.InvalidAnswer) as same:
        services.rerun_with_hint(asked_scan(user, photo), hint=f"{UNSURE_HINT} 병")
    assert same.value.code == "same_hint"


def test_a_hint_keeps_the_first_recognitions_cost(rulebase, user, photo):
    scan = services.create_scan(owner=user, image=photo(), hint="병")
    paid = {"model": "m", "input_tokens": 100, "output_tokens": 10, "cost_usd": 0.002}
    Scan.objects.filter(pk=scan.pk).update(
        status=ScanStatus.NEEDS_INPUT,
        step=ScanStep.INPUT,
        classification={"outcome": "unclassified"},
        usage={"vision": paid},
        input_tokens=100,
        output_tokens=10,
        cost_usd="0.002",
    )

    services.rerun_with_hint(Scan.objects.get(pk=scan.pk), hint="유리병")

    scan.refresh_from_db()
    assert scan.usage == {"vision_before_hint_1": paid}
    assert str(scan.cost_usd.normalize()) == "0.002" and scan.input_tokens == 100


# --- batches and mail -------------------------------------------------------------------------
def test_a_batch_counts_a_member_that_asks_as_ended_and_rewrites_its_summary_after_it(
    rulebase, fake_vision, user, photo, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(dispatch, "dispatch_pipeline", lambda scan_id, **kw: True)
    batch = services.create_batch(owner=user, images=[photo(), photo()], hint=f"{UNSURE_HINT} 병")
    first, second = batch.scans.order_by("created_at", "id")
    with django_capture_on_commit_callbacks(execute=True):
        for member in (first, second):
            services.run_vision_step(member.id)
            services.run_rule_step(member.id)
    batch.refresh_from_db()
    assert batch.status == "completed"
    assert (batch.summary["asked"], batch.summary["completed"], batch.summary["count"]) == (2, 0, 2)

    with django_capture_on_commit_callbacks(execute=True):
        services.choose_category(Scan.objects.get(pk=first.id), category_code="glass")
    batch.refresh_from_db()
    assert (batch.status, batch.completed_at) == ("processing", None), "running again"

    with django_capture_on_commit_callbacks(execute=True):
        run_rest(first.id)
    batch.refresh_from_db()
    assert batch.status == "completed" and batch.completed_at is not None
    assert (batch.summary["asked"], batch.summary["completed"]) == (1, 1)
    assert batch.summary["by_category"] == {"glass": 1}


def test_an_owner_who_wants_mail_is_told_the_scan_needs_their_choice(
    rulebase, fake_vision, user, photo, django_capture_on_commit_callbacks, settings
):
    settings.SITE_URL = "http://eco2.test"
    user.email = "owner@example.com"
    user.save()
    NotificationPreference.objects.create(user=user, email_on_scan_completed=True)
    with django_capture_on_commit_callbacks(execute=True):
        scan = asked_scan(user, photo)

    (asked,) = Notification.objects.filter(scan=scan)
    assert asked.kind == NotificationKind.SCAN_NEEDS_INPUT
    assert "골라 주세요" in asked.subject and "needs your choice" in asked.subject
    assert "생수병 → 무색페트병" in asked.body and "water bottle → Clear PET bottles" in asked.body
    assert f"http://eco2.test/scans/{scan.id}/" in asked.body

    with django_capture_on_commit_callbacks(execute=True):
        services.choose_category(scan, category_code="glass")
        run_rest(scan.id)

    kinds = sorted(Notification.objects.filter(scan=scan).values_list("kind", flat=True))
    assert kinds == ["scan_completed", "scan_needs_input"], "and the completion is mailed too"
    assert not mail.outbox, "sent by the worker, not in the request"


# --- the API ----------------------------------------------------------------------------------
def choose_url(scan) -> str:
    return f"/api/v1/scans/{scan.id}/choose"


def test_the_api_shows_the_question_and_takes_the_choice(
    rulebase, fake_vision, api_client, user, photo, monkeypatch
):
    monkeypatch.setattr(dispatch, "dispatch_pipeline", lambda scan_id, **kw: True)
    scan = asked_scan(user, photo)

    body = api_client.get(f"/api/v1/scans/{scan.id}", HTTP_ACCEPT_LANGUAGE="en").json()

    assert (body["status"], body["step"], body["result"], body["error"]) == (
        "needs_input",
        "input",
        None,
        None,
    )
    question = body["question"]
    assert question["reason"] == "ambiguous"
    assert question["message"] == "Which one is it? Choose the item in your photo."
    assert [c["category_code"] for c in question["choices"]] == ["pet_clear", "glass", "plastic"]
    assert question["choose_url"].endswith(f"/api/v1/scans/{scan.id}/choose")
    assert question["hint_url"].endswith(f"/api/v1/scans/{scan.id}/hint")

    response = api_client.post(choose_url(scan), {"category_code": "glass"}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"
    assert response["Location"].endswith(f"/api/v1/scans/{scan.id}")
    again = api_client.post(choose_url(scan), {"category_code": "glass"}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "scan_not_waiting"
    assert "선택을 기다리고 있지 않아요" in again.json()["detail"]
    assert api_client.get(f"/api/v1/scans/{scan.id}").json()["question"] is None


def test_the_api_refuses_bad_answers_with_a_message(rulebase, fake_vision, api_client, user, photo):
    scan = asked_scan(user, photo)

    unknown = api_client.post(
        choose_url(scan), {"category_code": "unobtainium"}, format="json", HTTP_ACCEPT_LANGUAGE="en"
    )
    missing = api_client.post(choose_url(scan), {}, format="json")
    wrong_item = api_client.post(
        choose_url(scan), {"category_code": "glass", "item": "냉장고"}, format="json"
    )
    empty_hint = api_client.post(f"/api/v1/scans/{scan.id}/hint", {"hint": " "}, format="json")
    same_hint = api_client.post(f"/api/v1/scans/{scan.id}/hint", {"hint": scan.hint}, format="json")

    assert unknown.status_code == 400
    assert unknown.json() == {
        "category_code": [
            "“unobtainium” is not a category code: the codes are listed at /api/v1/categories."
        ]
    }
    assert missing.status_code == 400 and "category_code" in missing.json()
    assert wrong_item.status_code == 400 and "유리병" in wrong_item.json()["item"][0]
    assert empty_hint.status_code == 400 and "hint" in empty_hint.json()
    assert same_hint.status_code == 400 and "hint" in same_hint.json()
    assert Scan.objects.get(pk=scan.id).status == ScanStatus.NEEDS_INPUT


def test_only_the_owner_and_staff_may_answer(
    rulebase, fake_vision, user, other_user, staff_user, photo, monkeypatch
):
    monkeypatch.setattr(dispatch, "dispatch_pipeline", lambda scan_id, **kw: True)
    scan = asked_scan(user, photo)
    other, staff = APIClient(), APIClient()
    other.force_authenticate(other_user)
    staff.force_authenticate(staff_user)

    assert (
        other.post(choose_url(scan), {"category_code": "glass"}, format="json").status_code == 404
    )
    assert (
        other.post(f"/api/v1/scans/{scan.id}/hint", {"hint": "유리"}, format="json").status_code
        == 404
    )
    assert APIClient().post(choose_url(scan), {"category_code": "glass"}).status_code in (401, 403)
    assert Scan.objects.get(pk=scan.id).status == ScanStatus.NEEDS_INPUT
    assert (
        staff.post(choose_url(scan), {"category_code": "glass"}, format="json").status_code == 202
    )
    assert ScanEvent.objects.get(type="ScanResumed").payload["actor"] == (
        f"api:{staff_user.username}"
    )


def test_the_schema_has_the_question_the_answers_and_the_new_status(api_client):
    schema = api_client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()

    paths = schema["paths"]
    choose = paths["/api/v1/scans/{task_id}/choose"]["post"]
    hint = paths["/api/v1/scans/{task_id}/hint"]["post"]
    assert {"202", "400", "404", "409"} <= set(choose["responses"])
    assert {"202", "400", "404", "409"} <= set(hint["responses"])
    assert "paid" in hint["description"]
    components = schema["components"]["schemas"]
    assert "needs_input" in components["StatusEnum"]["enum"]
    assert "input" in components["StepEnum"]["enum"]
    assert "question" in components["Scan"]["properties"]
    assert {"category_code", "item", "category_ko", "category_en"} <= set(
        components["Choice"]["properties"]
    )
    assert set(components["ScanChooseRequest"]["required"]) == {"category_code"}
    events = paths["/api/v1/scans/{task_id}/events"]["get"]["description"]
    assert "`needs_input`" in events


# --- the live stream ----------------------------------------------------------------------------
def test_the_stream_ends_with_the_question(rulebase, fake_vision, user, photo, monkeypatch):
    from scans import events

    monkeypatch.setattr(events, "POLL_SECONDS", 0.02)
    scan = asked_scan(user, photo)
    from tests.scans.api.helpers import async_client

    _, stream = stream_events(async_client(user), f"/api/v1/scans/{scan.id}/events")

    sequence = parse_events(stream)
    assert [e["event"] for e in sequence] == ["progress", "needs_input"]
    final = sequence[-1]
    assert final["id"] == events.final_event_id(str(scan.celery_root_id))
    assert [c["category_code"] for c in final["data"]["question"]["choices"]] == [
        "pet_clear",
        "glass",
        "plastic",
    ]
    again, _ = stream_events(
        async_client(user), f"/api/v1/scans/{scan.id}/events", **{"Last-Event-ID": final["id"]}
    )
    assert again.status_code == 204, "until it is answered, the question is its end"


# --- the pages ----------------------------------------------------------------------------------
def test_the_scan_page_asks_with_one_tap_choices_and_a_hint_form(
    rulebase, fake_vision, user, photo
):
    scan = asked_scan(user, photo)
    client = logged_in(user)

    page = client.get(f"/scans/{scan.id}/").content.decode()

    assert 'data-status="needs_input"' in page
    assert "어느 쪽인가요? 사진 속 물건을 골라 주세요." in page
    assert page.count('class="choice"') == 3
    assert '<span class="choice-item">생수병</span>' in page
    assert '<span class="choice-bin">무색페트병</span>' in page
    assert f'action="/scans/{scan.id}/choose"' in page
    assert f'data-choose-url="/api/v1/scans/{scan.id}/choose"' in page
    assert f'action="/scans/{scan.id}/hint"' in page and 'name="hint"' in page
    assert "배출 종류를 직접 골라" in page and '<option value="hazardous">' in page
    assert "선택 필요" in page  # the status

    english_page = english(client).get(f"/scans/{scan.id}/").content.decode()
    assert "Which one is it?" in english_page
    assert '<span class="choice-item">water bottle</span>' in english_page
    assert '<span class="choice-bin">Clear PET bottles</span>' in english_page


def test_without_javascript_a_tap_posts_the_choice_and_shows_the_scan_again(
    rulebase, fake_vision, user, other_user, photo, monkeypatch
):
    monkeypatch.setattr(dispatch, "dispatch_pipeline", lambda scan_id, **kw: True)
    scan = asked_scan(user, photo)

    assert (
        logged_in(other_user)
        .post(f"/scans/{scan.id}/choose", {"category_code": "glass"})
        .status_code
        == 404
    )
    response = logged_in(user).post(
        f"/scans/{scan.id}/choose", {"category_code": "glass", "item": "소주병"}
    )
    assert response.status_code == 302 and response["Location"] == f"/scans/{scan.id}/"
    assert Scan.objects.get(pk=scan.id).status == ScanStatus.QUEUED

    late = logged_in(user).post(f"/scans/{scan.id}/choose", {"category_code": "glass"}, follow=True)
    assert "선택을 기다리고 있지 않아요" in late.content.decode()


def test_a_hint_from_the_page_reruns_the_scan(rulebase, fake_vision, user, photo, monkeypatch):
    monkeypatch.setattr(dispatch, "dispatch_pipeline", lambda scan_id, **kw: True)
    scan = asked_scan(user, photo)

    empty = logged_in(user).post(f"/scans/{scan.id}/hint", {"hint": ""}, follow=True)
    assert "힌트에 물건을 설명해 주세요." in empty.content.decode()
    response = logged_in(user).post(f"/scans/{scan.id}/hint", {"hint": "초록색 소주병"})

    assert response.status_code == 302
    resumed = Scan.objects.get(pk=scan.id)
    assert (resumed.status, resumed.step, resumed.hint) == ("queued", "vision", "초록색 소주병")


def test_history_shows_a_badge_and_filters_scans_that_ask(rulebase, fake_vision, user, photo):
    asking = asked_scan(user, photo)
    completed_scan(user)
    client = logged_in(user)

    page = client.get("/scans/").content.decode()
    assert 'class="status status-needs_input">선택 필요</span>' in page
    assert "어느 쪽인지 골라 주세요" in page

    filtered = client.get("/scans/?status=needs_input").content.decode()
    assert filtered.count('class="history-item"') == 1 and str(asking.id) in filtered
    assert '<option value="needs_input" selected>' in filtered
    api = APIClient()
    api.force_authenticate(user)
    listed = api.get("/api/v1/scans?status=needs_input").json()["results"]
    assert [s["task_id"] for s in listed] == [str(asking.id)]


# --- how sure the answer is ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("classification", "level", "korean", "english_words"),
    [
        ({"confidence": 1.0}, "certain", "확실해요", "Sure"),
        ({"confidence": 0.92}, "likely", "거의 확실해요", "Almost sure"),
        ({"confidence": 0.55}, "unsure", "확실하지 않아요", "Not sure"),
        ({"confidence": 1.0, "chosen_by": "user"}, "chosen", "직접 고르셨어요", "You chose this"),
    ],
)
def test_the_result_card_says_how_sure_it_is_in_words(
    rulebase, user, settings, classification, level, korean, english_words
):
    settings.SCAN_MATCH_CONFIDENT = 0.9
    scan = completed_scan(user)
    Scan.objects.filter(pk=scan.pk).update(classification={**scan.classification, **classification})
    client = logged_in(user)

    page = client.get(f"/scans/{scan.id}/").content.decode()
    english_page = english(client).get(f"/scans/{scan.id}/").content.decode()

    assert f'data-certainty="{level}"' in page
    assert f'<p class="certainty certainty-{level}">' in page
    assert korean in page and english_words in english_page
    guess = "이 답은 추측이에요" in page
    assert guess == (level == "unsure"), "only a weak answer is marked as a guess"
    assert ('class="result uncertain"' in page) == (level == "unsure")


def test_an_old_scan_completed_without_a_question_still_shows_its_card(rulebase, user):
    """Scans completed as "unclassified" before the question existed keep their card."""
    scan = completed_scan(
        user,
        classification={"outcome": "unclassified", "category_code": None},
        matched_rules=None,
        category=None,
        outcome=ScanOutcome.UNCLASSIFIED,
        answer={"disposal_steps": [], "insufficiencies": [], "user_answer": "힌트를 적어 주세요."},
    )
    page = logged_in(user).get(f"/scans/{scan.id}/").content.decode()
    assert "설명이 필요해요" in page or "Needs a description" in page
    assert "data-certainty" not in page


def test_a_batch_detail_counts_a_member_that_asks_as_finished(
    rulebase, fake_vision, api_client, user, photo, django_capture_on_commit_callbacks
):
    batch = services.create_batch(owner=user, images=[photo()], hint=f"{UNSURE_HINT} 병")
    (member,) = batch.scans.all()
    with django_capture_on_commit_callbacks(execute=True):
        services.run_vision_step(member.id)
        services.run_rule_step(member.id)

    detail = api_client.get(f"/api/v1/batches/{batch.id}").json()

    assert (detail["status"], detail["progress"], detail["finished"]) == ("completed", 100, 1)
    assert detail["items"][0]["status"] == "needs_input"
    assert detail["summary"]["asked"] == 1
    assert ScanBatch.objects.get(pk=batch.id).summary["failed"] == 0

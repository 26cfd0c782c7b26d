"""The admin as staff use it: scan list with filters, scan detail, rule base editing."""

import os

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import translation

from notifications.admin import NotificationAdmin
from scans import services
from scans.admin import DeadLetterAdmin, TaskHistoryAdmin
from scans.models import Category, Scan

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(db):
    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_scan_list_filters_and_detail(admin_client_, rulebase, user, photo):
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    metal = Category.objects.get(code="metal")

    for query in (
        "",
        "?status__exact=queued",
        "?step__exact=queued",
        f"?category__id__exact={metal.id}",
        "?created_at__year=2026",
    ):
        response = admin_client_.get(f"/admin/scans/scan/{query}")
        assert response.status_code == 200, query
    detail = admin_client_.get(f"/admin/scans/scan/{scan.id}/change/")
    assert detail.status_code == 200
    assert "캔" in detail.content.decode()


def test_rule_base_is_editable_in_the_admin(admin_client_, rulebase):
    paper = Category.objects.get(code="paper")
    page = admin_client_.get(f"/admin/scans/category/{paper.id}/change/")
    assert page.status_code == 200
    assert "text_ko" in page.content.decode()


def test_non_staff_cannot_open_the_admin(client, user):
    client.force_login(user)
    assert client.get("/admin/scans/scan/").status_code == 302


def failed_scan(owner, photo, code="provider_unavailable"):
    scan = services.create_scan(owner=owner, image=photo(), hint="캔")
    services.fail_scan(scan.id, code=code, message="busy")
    return scan


def test_retry_action_resumes_failed_scans_and_skips_the_rest(admin_client_, user, photo):
    failed = failed_scan(user, photo)
    running = services.create_scan(owner=user, image=photo(), hint="캔")

    response = admin_client_.post(
        "/admin/scans/scan/",
        {"action": "retry_selected", "_selected_action": [str(failed.id), str(running.id)]},
        follow=True,
    )

    assert response.status_code == 200
    text = response.content.decode()
    assert "스캔 1개를 다시 대기열에 넣었어요." in text and "1개는 건너뛰었어요" in text
    failed.refresh_from_db()
    assert (failed.status, failed.retry_count, failed.error_code) == ("queued", 1, "")


def test_retrying_from_a_list_filtered_by_status_skips_nothing(admin_client_, user, photo):
    failed = failed_scan(user, photo)

    response = admin_client_.post(
        "/admin/scans/scan/?status__exact=failed",
        {"action": "retry_selected", "_selected_action": [str(failed.id)]},
        HTTP_ACCEPT_LANGUAGE="en",
        follow=True,
    )

    text = response.content.decode()
    assert "1 scan re-enqueued." in text
    assert "skipped" not in text, "the retried scan left the filtered list: it was not skipped"


def test_custom_actions_and_their_messages_are_translated(admin_client_, user, photo):
    scan = failed_scan(user, photo)
    korean = admin_client_.get("/admin/scans/scan/").content.decode()
    english = admin_client_.get("/admin/scans/scan/", HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert "선택한 스캔 다시 시도 (실패한 단계부터 이어서)" in korean
    assert "썸네일 다시 만들기" in korean
    assert "Retry selected scans (resume from the failed step)" in english
    # the lists below are empty here (the admin hides actions then): their labels directly
    with translation.override("ko"):
        for action, label in (
            (DeadLetterAdmin.redrive_selected, "선택한 데드 레터 재처리 (해당 스캔을 이어서 실행)"),
            (TaskHistoryAdmin.rerun_selected, "작업 다시 실행 (같은 이름과 인자, 새 ID)"),
            (TaskHistoryAdmin.revoke_selected, "취소 (시작 전이면 버리기)"),
            (
                TaskHistoryAdmin.terminate_selected,
                "강제 종료 (취소하고 실행 중이면 중지: AI 단계 제외)",
            ),
            (NotificationAdmin.send_again, "선택한 실패 알림 다시 보내기"),
        ):
            assert str(action.short_description) == label

    response = admin_client_.post(
        "/admin/scans/scan/",
        {"action": "retry_selected", "_selected_action": [str(scan.id)]},
        HTTP_ACCEPT_LANGUAGE="en",
        follow=True,
    )
    assert "1 scan re-enqueued." in response.content.decode()


def test_staff_without_the_retry_permission_do_not_get_the_action(user, photo):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_scan"))
    client = Client()
    client.force_login(staff)
    scan = failed_scan(user, photo)

    page = client.get("/admin/scans/scan/")
    assert page.status_code == 200 and "retry_selected" not in page.content.decode()
    client.post(
        "/admin/scans/scan/", {"action": "retry_selected", "_selected_action": [str(scan.id)]}
    )
    scan.refresh_from_db()
    assert scan.status == "failed"


def test_attempt_ledger_and_dead_letters_are_listed(admin_client_, user, photo):
    from scans.models import TaskAttempt
    from scans.services import record_dead_letter

    scan = failed_scan(user, photo)
    TaskAttempt.objects.create(
        scan=scan,
        task_id="t-1",
        task_name="scans.tasks.vision_scan",
        step="vision",
        attempt=1,
        outcome="retry",
        exception_class="TransientProviderError",
    )
    record_dead_letter(
        str(scan.id), "t-1", "scans.tasks.vision_scan", "vision", "provider_unavailable", "busy"
    )
    record_dead_letter(
        str(scan.id), "t-1", "scans.tasks.vision_scan", "vision", "provider_unavailable", "busy"
    )

    assert admin_client_.get("/admin/scans/taskattempt/?outcome__exact=retry").status_code == 200
    detail = admin_client_.get(f"/admin/scans/scan/{scan.id}/change/").content.decode()
    assert "TransientProviderError" in detail and "provider_unavailable" in detail
    assert scan.dead_letters.count() == 1, "one dead letter per task, however often reported"

    response = admin_client_.post(
        "/admin/scans/deadletter/",
        {"action": "redrive_selected", "_selected_action": [str(scan.dead_letters.get().pk)]},
        follow=True,
    )
    assert "스캔 1건을 다시 대기열에 넣었어요." in response.content.decode()
    assert scan.dead_letters.get().redriven_at is not None


def test_redrive_command_resumes_the_scans_of_dead_letters(user, photo):
    import io

    from django.core.management import call_command

    from scans.services import record_dead_letter

    scan = failed_scan(user, photo)
    record_dead_letter(
        str(scan.id), "t-2", "scans.tasks.answer_gen", "answer", "worker_lost", "stopped"
    )
    out = io.StringIO()

    call_command("redrive_dlq", stdout=out)

    assert "re-enqueued 1 scan(s)" in out.getvalue()
    scan.refresh_from_db()
    assert (
        scan.status == "queued" and scan.dead_letters.get().redriven_by == "manage.py redrive_dlq"
    )


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_regenerate_thumbnails_runs_as_a_canvas_group_on_the_worker(
    celery_worker, rulebase, user, photo, settings
):
    import time

    from django.core.files.storage import default_storage
    from PIL import Image

    from tests.conftest import wait_for_scan
    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    scans = [
        services.create_scan(owner=user, image=photo(size=(400, 300)), hint="캔") for _ in range(3)
    ]
    for scan in scans:
        wait_for_scan(scan.id)
    default_storage.delete(scans[0].__class__.objects.get(pk=scans[0].pk).thumbnail.name)

    response = client.post(
        "/admin/scans/scan/",
        {"action": "regenerate_thumbnails", "_selected_action": [str(s.id) for s in scans]},
        follow=True,
    )

    assert "썸네일 3개를 다시 만들고 있어요" in response.content.decode()
    first = scans[0].__class__.objects.get(pk=scans[0].pk)
    for _ in range(100):
        if default_storage.exists(first.thumbnail.name):
            break
        time.sleep(0.1)
    with default_storage.open(first.thumbnail.name) as handle:
        assert max(Image.open(handle).size) == 320


@pytest.mark.skipif(
    not os.environ.get("ECO2_TEST_SERVICES"), reason="the DLQ exists on RabbitMQ only"
)
def test_redrive_works_on_a_broker_that_has_no_dead_letter_queue_yet(user, photo):
    """A broker no worker has started on (or one reset) has no scan.ai.dlq: the redrive
    command reports an empty queue and still resumes the recorded dead letters."""
    import io

    from django.core.management import call_command

    from eco2.celery import app
    from scans.broker import DEAD_LETTER_QUEUE
    from scans.services import record_dead_letter

    with app.connection_for_write() as conn:
        DEAD_LETTER_QUEUE(conn.default_channel).delete()
    scan = failed_scan(user, photo)
    record_dead_letter(str(scan.id), "t-3", "scans.tasks.vision_scan", "vision", "x", "why")
    out = io.StringIO()

    call_command("redrive_dlq", stdout=out)

    assert "0 on scan.ai.dlq" in out.getvalue() and "re-enqueued 1 scan(s)" in out.getvalue()


# --- the lists of the large tables cost the same queries for a few rows or many ---------------
def add_task_history(owner, rows: int) -> None:
    from django_celery_results.models import TaskResult

    from scans.models import ScanEvent, TaskAttempt

    for index in range(rows):
        task_id = f"task-{TaskResult.objects.count()}"
        scan = Scan.objects.create(owner=owner, image="scans/x.jpg")
        TaskResult.objects.create(
            task_id=task_id,
            task_name="scans.tasks.vision_scan",
            task_args=repr([str(scan.id)]),
            status="SUCCESS",
            worker=f"ai@host{index % 3}",
        )
        for attempt in (1, 2):
            TaskAttempt.objects.create(
                scan=scan, task_id=task_id, task_name="scans.tasks.vision_scan", step="vision",
                attempt=attempt, queue="scan.ai.pipeline", worker=f"ai@host{index % 3}",
            )  # fmt: skip
        ScanEvent.objects.create(type="ScanCompleted", scan=scan, payload={})


LARGE_LISTS = (
    "/admin/django_celery_results/taskresult/",
    "/admin/scans/taskattempt/",
    "/admin/scans/scanevent/",
    "/admin/scans/scan/",
)


@pytest.mark.parametrize("url", LARGE_LISTS)
def test_a_large_tables_list_costs_the_same_queries_for_5_rows_or_50(admin_client_, user, url):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client_.get(url)
        assert response.status_code == 200
        return len(captured)

    add_task_history(user, 5)
    few = queries()
    add_task_history(user, 45)

    assert queries() == few


def test_the_task_history_shows_each_tasks_queue_and_retries(admin_client_, user):
    add_task_history(user, 3)

    page = admin_client_.get("/admin/django_celery_results/taskresult/").content.decode()

    assert page.count("scan.ai.pipeline") == 3
    assert page.count('<td class="field-retries">1</td>') == 3  # two attempts: one retry
    assert "?worker=ai%40host2" in page  # the worker filter offers the recent workers

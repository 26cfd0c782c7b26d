"""Operating Eco²: events on the broker, task history with control, batches, schedules."""

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import F
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult
from kombu import Exchange, Queue
from rest_framework.test import APIClient

from eco2.celery import app
from scans import services
from scans.models import ScanBatch, ScanEvent, ScanStatus, ScanStep, TaskAttempt, TaskRerun
from scans.outbox import EVENTS_EXCHANGE, publish_pending_events
from scans.schedules import SCHEDULES, ensure_schedules
from scans.services import intake
from scans.task_history import decode_arguments, shown_state, with_last_attempt
from tests.conftest import make_photo_bytes, wait_for_scan
from tests.factories import UserFactory
from tests.fakes.providers import CRASH_HINT, CRASH_IMAGE_SIZE
from tests.support.waiting import wait_for


# --- events ---------------------------------------------------------------------------------
@contextmanager
def subscribe(queue: Queue) -> Iterator[Callable[[], list]]:
    """Declare ``queue``, yield what takes (and acks) the messages it holds, then delete it."""
    with app.connection_for_write() as conn:
        queue(conn.default_channel).declare()

    def drain() -> list:
        messages = []
        with app.connection_for_write() as conn:
            bound = queue(conn.default_channel)
            while (message := bound.get(accept=["json"])) is not None:
                message.ack()
                messages.append(message)
        return messages

    yield drain
    with app.connection_for_write() as conn:
        queue(conn.default_channel).delete()


@pytest.fixture
def event_consumer():
    """A queue bound to eco2.events the way another service would subscribe."""
    queue = Queue(
        f"test.events.{id(object())}", EVENTS_EXCHANGE, routing_key="scan.#", auto_delete=False
    )
    with subscribe(queue) as drain:
        yield drain


@pytest.mark.django_db
def test_the_final_state_and_its_event_are_written_together(rulebase, user, photo):
    ok = services.create_scan(owner=user, image=photo(), hint="캔")
    for step in (services.run_vision_step, services.run_rule_step, services.run_answer_step):
        step(ok.id)
    bad = services.create_scan(owner=user, image=photo(), hint="캔")
    services.fail_scan(bad.id, code="x", message="why")
    services.fail_scan(bad.id, code="y", message="again")

    (completed,) = ScanEvent.objects.filter(scan=ok)
    (failed,) = ScanEvent.objects.filter(scan=bad)
    assert (completed.type, completed.payload["category_code"], completed.payload["status"]) == (
        "ScanCompleted",
        "metal",
        "completed",
    )
    assert (failed.type, failed.payload["error_code"]) == ("ScanFailed", "x")


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_events_reach_a_subscriber_with_their_ids(
    celery_worker, rulebase, user, photo, event_consumer
):
    client = APIClient()
    client.force_authenticate(user)
    ids = [
        client.post("/api/v1/scans", {"image": photo(), "hint": hint}, format="multipart").json()[
            "task_id"
        ]
        for hint in ("우유팩", CRASH_HINT)
    ]
    for task_id in ids:
        wait_for_scan(task_id)

    messages = event_consumer()
    bodies = {
        m.properties["message_id"]: json.loads(m.body)
        if isinstance(m.body, str | bytes)
        else m.payload
        for m in messages
    }
    events = {str(e.id): e for e in ScanEvent.objects.filter(scan_id__in=ids)}
    assert set(bodies) == set(events), "every event published once, keyed by its id"
    assert {
        (b["type"], m.delivery_info["routing_key"])
        for b, m in zip(bodies.values(), messages, strict=True)
    } == {
        ("ScanCompleted", "scan.completed"),
        ("ScanFailed", "scan.failed"),
    }
    assert all(e.published_at for e in events.values())


@pytest.fixture
def task_events():
    """A queue bound to Celery's task events, the way Flower subscribes to them."""
    queue = Queue(
        f"test.task-events.{id(object())}",
        Exchange(app.conf.event_exchange, type="topic"),
        routing_key="task.#",
        auto_delete=False,
    )
    with subscribe(queue) as drain:

        def events() -> list[dict]:
            # a prefork worker flushes its buffered task events as one list ("task.multi")
            payloads = [message.payload for message in drain()]
            return [e for p in payloads for e in (p if isinstance(p, list) else [p])]

        yield events


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_prefork_worker_sends_every_steps_task_events_for_flower(
    celery_worker, rulebase, user, photo, task_events
) -> None:
    """Flower's view of the pipeline: received, started and succeeded for each of a scan's
    four steps, from a prefork worker (a threads-pool worker sends none: eco2/celery.py)."""
    client = APIClient()
    client.force_authenticate(user)
    scan_id = client.post(
        "/api/v1/scans", {"image": photo(), "hint": "캔"}, format="multipart"
    ).json()["task_id"]
    assert wait_for_scan(scan_id).status == ScanStatus.COMPLETED
    steps = set(TaskAttempt.objects.filter(scan_id=scan_id).values_list("task_id", flat=True))
    assert len(steps) == 4  # prepare, vision, rule, answer
    seen: dict[str, set[str]] = {}

    def every_step_succeeded() -> bool:
        for event in task_events():
            seen.setdefault(event["uuid"], set()).add(event["type"])
        return all("task-succeeded" in seen.get(task_id, ()) for task_id in steps)

    wait_for(every_step_succeeded, timeout=10, what=f"task-succeeded events of {steps - set(seen)}")
    for task_id in steps:
        assert {"task-received", "task-started", "task-succeeded"} <= seen[task_id]


@pytest.mark.django_db(transaction=True)
def test_a_relay_that_dies_mid_batch_publishes_again_at_least_once(
    user, photo, event_consumer, monkeypatch
):
    # no pipeline: only the events matter, and no worker may touch the tables at teardown
    monkeypatch.setattr(intake, "dispatch_pipeline", lambda *args, **kwargs: False)
    for _ in range(3):
        services.fail_scan(
            services.create_scan(owner=user, image=photo()).id, code="x", message="y"
        )
    ScanEvent.objects.update(published_at=None)  # as if the prompt publish never happened
    event_consumer()

    from kombu import Producer

    real_publish, sent = Producer.publish, []

    def dies_after_one(self, body, **kwargs):
        if sent:
            raise ConnectionResetError("relay killed")
        sent.append(body["event_id"])
        return real_publish(self, body, **kwargs)

    monkeypatch.setattr(Producer, "publish", dies_after_one)
    assert publish_pending_events() == 0
    assert ScanEvent.objects.filter(published_at=None).count() == 3, (
        "nothing marked: all owed again"
    )

    monkeypatch.setattr(Producer, "publish", real_publish)
    assert publish_pending_events() == 3
    delivered = [m.properties["message_id"] for m in event_consumer()]
    assert sorted(set(delivered)) == sorted(str(e.id) for e in ScanEvent.objects.all())
    assert delivered.count(sent[0]) == 2, (
        "the first event came twice, with the same id: dedupe by it"
    )


@pytest.mark.django_db(transaction=True)
def test_the_relay_leaves_fresh_events_to_their_prompt_publish(
    user, photo, event_consumer, monkeypatch
):
    from datetime import timedelta

    from scans.tasks import publish_events_task

    # no pipeline: a worker left running by another test would take the scan while this
    # test's teardown truncates the tables (a deadlock in PostgreSQL)
    monkeypatch.setattr(intake, "dispatch_pipeline", lambda *args, **kwargs: False)
    scan = services.create_scan(owner=user, image=photo())
    services.fail_scan(scan.id, code="x", message="y")
    assert len(event_consumer()) == 1, "published once, right after the commit"
    assert ScanEvent.objects.get().published_at is not None

    ScanEvent.objects.update(published_at=None)  # as if the prompt publish had failed
    assert publish_events_task() == 0, "younger than the grace: the prompt publish may still run"
    ScanEvent.objects.update(occurred_at=F("occurred_at") - timedelta(seconds=11))
    assert publish_events_task() == 1
    assert len(event_consumer()) == 1


# --- task history and control ---------------------------------------------------------------
@pytest.fixture
def ops_client(db):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.django_db(transaction=True)
def test_a_task_has_a_history_row_from_the_moment_it_is_queued(ops_client):
    result = app.send_task(
        "scans.tasks.sweep_stalled_scans", args=["x"], kwargs={"n": 1}, queue="nobody-consumes-this"
    )

    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == "PENDING" and row.task_name == "scans.tasks.sweep_stalled_scans"
    assert (decode_arguments(row.task_args, []), decode_arguments(row.task_kwargs, {})) == (
        ["x"],
        {"n": 1},
    )
    page = ops_client.get(
        f"/admin/django_celery_results/taskresult/{row.pk}/change/"
    ).content.decode()
    assert "&quot;n&quot;: 1" in page or '"n": 1' in page

    ops_client.post(
        "/admin/django_celery_results/taskresult/",
        {"action": "revoke_selected", "_selected_action": [row.pk]},
    )
    row.refresh_from_db()
    assert row.status == "REVOKED"


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_re_run_sends_the_same_task_with_a_new_id_linked_to_the_original(
    celery_worker, ops_client, rulebase, user, photo
):
    client = APIClient()
    client.force_authenticate(user)
    task_id = client.post(
        "/api/v1/scans", {"image": photo(), "hint": "캔"}, format="multipart"
    ).json()["task_id"]
    scan = wait_for_scan(task_id)
    # the chain's root, prepare_image: its row from the publish, its success its attempt's
    original = with_last_attempt(TaskResult.objects.filter(task_id=task_id)).get()
    assert shown_state(original) == "SUCCESS"
    assert decode_arguments(original.task_args, []) == [task_id]

    response = ops_client.post(
        "/admin/django_celery_results/taskresult/",
        {"action": "rerun_selected", "_selected_action": [original.pk]},
        follow=True,
    )

    rerun = TaskRerun.objects.get(original_task_id=task_id)
    assert "다시 실행했어요" in response.content.decode()
    new = TaskResult.objects.get(task_id=rerun.new_task_id)
    assert (new.task_name, decode_arguments(new.task_args, [])) == (
        "scans.tasks.prepare_image",
        [task_id],
    )
    detail = ops_client.get(
        f"/admin/django_celery_results/taskresult/{new.pk}/change/"
    ).content.decode()
    assert "re-run of" in detail and f"/admin/scans/scan/{scan.id}/change/" in detail
    scan_page = ops_client.get(f"/admin/scans/scan/{scan.id}/change/").content.decode()
    assert "scans.tasks.answer_gen" in scan_page, "the scan links to its task history"


def _assert_cancelled(scan_id, how: str):
    scan = wait_for_scan(scan_id)
    assert (scan.status, scan.error_code) == (ScanStatus.FAILED, "cancelled")
    assert f"an operator {how}" in scan.error_message, scan.error_message
    (event,) = ScanEvent.objects.filter(scan_id=scan_id)
    assert (event.type, event.payload["error_code"]) == ("ScanFailed", "cancelled")
    return scan


def _wait_for_running_step(scan_id, step: str) -> str:
    """The task id of the scan's ``step`` once it runs, as the admin's revoke sees it (a
    started row of the ledger, or an attempt held in Redis while it runs)."""
    from scans.ledger import running_task_ids
    from scans.services import STEP_TASK_NAMES

    queued = TaskResult.objects.filter(
        task_name=STEP_TASK_NAMES[ScanStep(step)], task_args__contains=str(scan_id)
    )
    deadline = time.monotonic() + 30
    while True:
        running = running_task_ids(list(queued.values_list("task_id", flat=True)))
        if running:
            return running.pop()
        assert time.monotonic() < deadline, f"the {step} step of {scan_id} never started"
        time.sleep(0.05)


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_running_step_is_seen_running_and_its_end_is_recorded_with_its_result(
    worker_manager, rulebase, user, photo
):
    """A step's attempt is written once, with its result (scans/step_end.py): while the vision
    step runs the admin's revoke still sees it running; once the scan completed every step
    has one attempt, nothing is left running, and every step after the first was in the task
    history, queued, before it started."""
    from scans.ledger import running_task_ids

    worker_manager.ensure(FAKE_VISION_DELAY_SECONDS="1")
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    running = _wait_for_running_step(scan.id, "vision")
    assert not TaskAttempt.objects.filter(task_id=running).exclude(outcome="started").exists()

    scan = wait_for_scan(scan.id)

    assert scan.status == ScanStatus.COMPLETED
    attempts = {attempt.step: attempt for attempt in scan.attempts.all()}
    assert sorted(attempts) == ["answer", "prepare", "rule", "vision"]
    assert {attempt.outcome for attempt in attempts.values()} == {"succeeded"}
    assert attempts["vision"].task_id == running and attempts["vision"].duration_ms >= 900
    history = {
        row.task_id: row for row in TaskResult.objects.filter(task_args__contains=str(scan.id))
    }
    for step, attempt in attempts.items():
        assert history[attempt.task_id].task_name == services.STEP_TASK_NAMES[ScanStep(step)]
        if step != "prepare":  # the upload's publish writes the first one, racing its worker
            assert history[attempt.task_id].date_created <= attempt.started_at, step
    assert not running_task_ids(list(history)), "nothing left running"


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_step_revoked_before_it_started_cancels_its_scan(
    celery_worker, rulebase, user, photo, monkeypatch
):
    """Revoked, the step was discarded by the worker and the rest of its chain never ran:
    the scan stayed queued, with nothing said, until the sweeper ran it again 15 min later."""
    publish = services.dispatch_pipeline
    monkeypatch.setattr(intake, "dispatch_pipeline", lambda *args, **kwargs: False)
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    # the worker has the revoke (it replied) before the step reaches it
    assert app.control.revoke(scan.celery_root_id, reply=True, timeout=10, limit=1)
    monkeypatch.undo()

    assert publish(scan.id)

    _assert_cancelled(scan.id, "revoked")
    assert wait_for_scan(services.create_scan(owner=user, image=photo(), hint="캔").id).status == (
        ScanStatus.COMPLETED
    ), "the worker goes on"


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_step_terminated_while_it_runs_cancels_its_scan(worker_manager, rulebase, user, photo):
    worker_manager.ensure(FAKE_VISION_DELAY_SECONDS="3")  # prefork: terminate kills the child
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    task_id = _wait_for_running_step(scan.id, "vision")

    app.control.revoke(task_id, terminate=True, signal="SIGTERM")

    scan = _assert_cancelled(scan.id, "stopped")
    assert "recognition step" in scan.error_message
    time.sleep(3.5)  # the killed step would have finished by now
    scan.refresh_from_db()
    assert (scan.status, scan.classification) == (ScanStatus.FAILED, None)


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_terminate_on_the_threads_pool_says_it_cannot_stop_the_step_and_cancels_the_scan(
    worker_manager, ops_client, rulebase, user, photo
):
    """Celery's threads pool cannot terminate a task: the admin said "Terminated" while the AI
    step and the rest of its scan ran on."""
    worker_manager.ensure(pool="threads", concurrency=4, FAKE_VISION_DELAY_SECONDS="3")
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    task_id = _wait_for_running_step(scan.id, "vision")
    row = TaskResult.objects.get(task_id=task_id)

    page = ops_client.post(
        "/admin/django_celery_results/taskresult/",
        {"action": "terminate_selected", "_selected_action": [row.pk]},
        follow=True,
        HTTP_ACCEPT_LANGUAGE="en",
    ).content.decode()

    assert "1 running AI step(s) cannot be stopped" in page and "threads pool" in page
    assert "Terminated" not in page
    scan = _assert_cancelled(scan.id, "stopped")
    time.sleep(3.5)  # the step's call has returned; its result is discarded
    scan.refresh_from_db()
    assert (scan.status, scan.error_code, scan.classification) == ("failed", "cancelled", None)


def test_task_controls_need_the_permission(db):
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/django_celery_results/taskresult/")
    assert page.status_code == 200
    assert (
        "rerun_selected" not in page.content.decode()
        and "terminate_selected" not in page.content.decode()
    )


# --- batches (Canvas) -----------------------------------------------------------------------
@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_batch_completes_with_per_item_outcomes_even_when_one_fails(
    celery_worker, rulebase, user
):
    client = APIClient()
    client.force_authenticate(user)
    images = [
        SimpleUploadedFile("a.jpg", make_photo_bytes(size=(40, 30)), content_type="image/jpeg"),
        SimpleUploadedFile(
            "b.jpg", make_photo_bytes(size=CRASH_IMAGE_SIZE), content_type="image/jpeg"
        ),
        SimpleUploadedFile(
            "c.png", make_photo_bytes("PNG", size=(50, 20)), content_type="image/png"
        ),
    ]
    response = client.post(
        "/api/v1/scans/batch", {"images": images, "hint": "알루미늄 캔"}, format="multipart"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert len(body["task_ids"]) == 3 and response["Location"] == body["status_url"]

    for task_id in body["task_ids"]:
        wait_for_scan(task_id)
    batch = ScanBatch.objects.get(pk=body["batch_id"])
    for _ in range(100):
        batch.refresh_from_db()
        if batch.status == "completed":
            break
        time.sleep(0.1)

    detail = client.get(f"/api/v1/batches/{batch.id}").json()
    assert (detail["status"], detail["progress"], detail["finished"], detail["total"]) == (
        "completed",
        100,
        3,
        3,
    )
    summary = detail["summary"]
    assert (summary["count"], summary["completed"], summary["failed"]) == (3, 2, 1)
    assert summary["by_category"] == {"metal": 2}
    assert summary["failures"][0]["code"] == "internal_error"
    assert sorted(item["status"] for item in detail["items"]) == [
        "completed",
        "completed",
        "failed",
    ]
    assert batch.chord_id


def _wait_for_batch(batch_id, timeout: float = 15.0) -> ScanBatch:
    deadline = time.monotonic() + timeout
    batch = ScanBatch.objects.get(pk=batch_id)
    while batch.status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
        batch.refresh_from_db()
    return batch


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_members_fail_at_the_same_moment_ends_with_a_summary(
    celery_worker, rulebase, user
):
    """Two photos fail in the same instant on the worker's two processes. The chord's error
    callback runs once, as soon as the last member *returned*, which is before that member's
    failure handler has failed its scan: it found a member still active and wrote nothing,
    and nothing else ever finished the batch. The member that ends last finishes it now."""
    client = APIClient()
    client.force_authenticate(user)
    images = [
        SimpleUploadedFile(
            f"{n}.jpg", make_photo_bytes(size=CRASH_IMAGE_SIZE), content_type="image/jpeg"
        )
        for n in range(2)
    ]
    response = client.post("/api/v1/scans/batch", {"images": images}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    for task_id in body["task_ids"]:
        assert wait_for_scan(task_id).status == ScanStatus.FAILED

    batch = _wait_for_batch(body["batch_id"])

    assert batch.status == "completed", "a failure never hangs a batch"
    detail = client.get(f"/api/v1/batches/{batch.id}").json()
    assert (detail["summary"]["count"], detail["summary"]["failed"]) == (2, 2)
    assert {f["code"] for f in detail["summary"]["failures"]} == {"internal_error"}


@pytest.mark.django_db
def test_batch_input_errors_and_privacy(api_client, photo, other_user):
    assert api_client.post("/api/v1/scans/batch", {}, format="multipart").status_code == 400
    too_many = [photo(f"{n}.jpg") for n in range(11)]
    assert (
        api_client.post("/api/v1/scans/batch", {"images": too_many}, format="multipart").status_code
        == 400
    )
    bad = SimpleUploadedFile("x.jpg", b"not a photo", content_type="image/jpeg")
    response = api_client.post(
        "/api/v1/scans/batch", {"images": [photo(), bad]}, format="multipart"
    )
    assert response.status_code == 400 and "images" in response.json()

    batch_id = api_client.post(
        "/api/v1/scans/batch", {"images": [photo()]}, format="multipart"
    ).json()["batch_id"]
    intruder = APIClient()
    intruder.force_authenticate(other_user)
    assert intruder.get(f"/api/v1/batches/{batch_id}").status_code == 404
    assert api_client.get("/api/v1/batches/not-a-uuid").status_code == 404


# --- schedules ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_schedules_exist_after_migrate_and_admin_edits_survive():
    names = {spec["name"] for spec in SCHEDULES}
    assert names <= set(PeriodicTask.objects.values_list("name", flat=True))
    PeriodicTask.objects.filter(name="ops: dead-letter check").update(enabled=False)

    assert ensure_schedules() == 0
    assert not PeriodicTask.objects.get(name="ops: dead-letter check").enabled
    cleanup = PeriodicTask.objects.get(name="celery.backend_cleanup")
    assert (cleanup.crontab.hour, cleanup.crontab.minute, str(cleanup.crontab.timezone)) == (
        "4",
        "0",
        "Asia/Seoul",
    )


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_run_now_from_the_beat_admin_runs_the_job_on_a_worker(celery_worker, ops_client):
    ensure_schedules()
    job = PeriodicTask.objects.get(name="scans: sweep stalled scans")

    ops_client.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "run_tasks", "_selected_action": [job.pk]},
    )

    # an idle sweep leaves no row in the task history (eco2.periodic.RecordedWhenBusy): the
    # worker's log says it ran
    deadline = time.monotonic() + 10
    while not re.search(
        r"scans\.tasks\.sweep_stalled_scans\[[^]]+\] succeeded", celery_worker.log()
    ):
        assert time.monotonic() < deadline, "the sweep did not run"
        time.sleep(0.1)
    assert not TaskResult.objects.filter(task_name="scans.tasks.sweep_stalled_scans").exists()


def _run_on_the_worker(worker, task) -> str:
    """Send a periodic job as beat does (task.apply_async) and wait until the worker ran it
    (its log says so: an idle relay run leaves no row anywhere to wait for)."""
    task_id = task.apply_async(headers={"periodic_task_name": "test"}).id
    deadline = time.monotonic() + 20
    while f"[{task_id}] succeeded" not in worker.log():
        assert time.monotonic() < deadline, f"{task.name} did not run"
        time.sleep(0.1)
    return task_id


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_relay_runs_that_publish_nothing_leave_no_task_history(celery_worker, user, photo):
    """The two relays run every 5 and 10 s: their idle runs wrote ~26,000 task results a day
    and buried the scans' tasks. A run that published something is in the history."""
    from datetime import timedelta

    from scans.tasks import publish_events_task, relay_pending_dispatches_task

    idle = [
        _run_on_the_worker(celery_worker, relay_pending_dispatches_task),
        _run_on_the_worker(celery_worker, publish_events_task),
    ]

    scan = services.create_scan(owner=user, image=photo())
    wait_for_scan(scan.id)  # no hint: unclassified, completed with its event published
    ScanEvent.objects.update(
        published_at=None, occurred_at=F("occurred_at") - timedelta(seconds=11)
    )  # as if the prompt publish had failed: the relay owes it

    busy = _run_on_the_worker(celery_worker, publish_events_task)
    wait_for(  # the worker logs a success before its hooks write the history and the attempt
        lambda: TaskAttempt.objects.filter(task_id=busy, finished_at__isnull=False).exists(),
        10,
        "the busy relay run's attempt",
    )

    assert not TaskResult.objects.filter(task_id__in=idle).exists()
    assert not TaskAttempt.objects.filter(task_id__in=idle).exists(), "nor in the attempt ledger"
    row = TaskResult.objects.get(task_id=busy)
    assert (row.status, json.loads(row.result), row.task_name) == (
        "SUCCESS",
        1,
        "scans.tasks.publish_events",
    )
    assert row.periodic_task_name == "test"
    attempt = TaskAttempt.objects.get(task_id=busy)
    assert (attempt.outcome, attempt.task_name) == ("succeeded", "scans.tasks.publish_events")
    assert attempt.finished_at >= attempt.started_at


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_idle_sweeps_resends_and_dead_letter_checks_leave_no_task_history(celery_worker, user):
    """Every minute (sweeper, resend of notifications) and every five (dead-letter check):
    ~3,000 rows a day of nothing happened. A sweep that finished a batch is in the history."""
    from notifications.tasks import resend_pending_notifications_task
    from scans.models import BatchStatus, ScanBatch
    from scans.tasks import check_dead_letters_task, sweep_stalled_scans_task

    idle = [
        _run_on_the_worker(celery_worker, sweep_stalled_scans_task),
        _run_on_the_worker(celery_worker, resend_pending_notifications_task),
        _run_on_the_worker(celery_worker, check_dead_letters_task),
    ]
    ScanBatch.objects.create(owner=user, status=BatchStatus.PROCESSING)  # no member runs
    busy = _run_on_the_worker(celery_worker, sweep_stalled_scans_task)
    # the worker logs a success before its hooks write the history and the attempt: the busy
    # run's rows, sent last, are there once the idle runs' hooks are long done
    wait_for(
        lambda: TaskAttempt.objects.filter(task_id=busy, outcome="succeeded").exists(),
        10,
        "the busy sweep's attempt",
    )

    row = TaskResult.objects.get(task_id=busy)
    assert json.loads(row.result) == {"requeued": 0, "failed": 0, "batches_finished": 1}
    assert not TaskResult.objects.filter(task_id__in=idle).exists()
    assert not TaskAttempt.objects.filter(task_id__in=idle).exists(), "nor in the attempt ledger"


@pytest.mark.django_db
def test_the_daily_digest_counts_scans_failures_and_cost(rulebase, user, photo):
    from scans.reports import daily_digest

    ok = services.create_scan(owner=user, image=photo(), hint="캔")
    for step in (services.run_vision_step, services.run_rule_step, services.run_answer_step):
        step(ok.id)
    bad = services.create_scan(owner=user, image=photo())
    services.fail_scan(bad.id, code="provider_refused", message="declined")
    from scans.models import Scan

    Scan.objects.filter(pk=ok.pk).update(
        input_tokens=1200, cached_input_tokens=1000, output_tokens=80, cost_usd="0.0031"
    )

    subject, body = daily_digest(timezone.localdate())

    assert "2 scans, 1 failed" in subject
    assert "completed: 1" in body and "failed: 1" in body
    assert "금속류: 1" in body
    assert "provider_refused: 1" in body and "declined" in body
    assert "input 1200 (cached 1000), output 80" in body and "$0.0031" in body
    assert ScanStatus.FAILED in body


@pytest.mark.django_db
def test_the_daily_digest_covers_the_day_it_names(user, photo, monkeypatch):
    """Sent at 09:00 KST on 2 May, it is 1 May's digest: 1 May from midnight to midnight."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from scans.models import Scan
    from scans.reports import daily_digest

    seoul = ZoneInfo("Asia/Seoul")
    made = {
        "before": datetime(2026, 4, 30, 23, 50, tzinfo=seoul),
        "early": datetime(2026, 5, 1, 0, 10, tzinfo=seoul),
        "late": datetime(2026, 5, 1, 23, 50, tzinfo=seoul),
        "next_morning": datetime(2026, 5, 2, 8, 0, tzinfo=seoul),
    }
    for name, created_at in made.items():
        scan = services.create_scan(owner=user, image=photo(), hint=name)
        services.fail_scan(scan.id, code="provider_refused", message=f"refused {name}")
        Scan.objects.filter(pk=scan.pk).update(created_at=created_at)
    monkeypatch.setattr(timezone, "now", lambda: datetime(2026, 5, 2, 9, 0, tzinfo=seoul))

    subject, body = daily_digest()

    assert "Daily digest 2026-05-01: 2 scans, 2 failed" in subject
    assert "2026-05-01 00:00 → 2026-05-02 00:00 KST" in body
    assert "refused early" in body and "refused late" in body
    assert "refused before" not in body and "refused next_morning" not in body


@pytest.mark.django_db
def test_digest_and_dead_letter_warning_reach_staff_once(
    user, photo, django_capture_on_commit_callbacks
):
    from notifications.models import Notification
    from scans.broker import ACK, sort_dead_letters
    from scans.services import record_dead_letter
    from scans.tasks import check_dead_letters_task, send_daily_digest_task

    sort_dead_letters(lambda message: ACK)  # an earlier run's messages would warn already
    staff = UserFactory(is_staff=True, email="ops@example.com")
    UserFactory(is_staff=True, email="")  # staff without an address get nothing

    assert check_dead_letters_task() == 0, "no dead letters, no warning"
    scan = services.create_scan(owner=user, image=photo())
    record_dead_letter(
        str(scan.id), "t-9", "scans.tasks.vision_scan", "vision", "worker_lost", "stopped"
    )

    with django_capture_on_commit_callbacks():
        assert send_daily_digest_task() == 1
        assert send_daily_digest_task() == 0, "one digest a day"
        assert check_dead_letters_task() == 1
        assert check_dead_letters_task() == 0, "one warning an hour"

    kinds = sorted(Notification.objects.filter(recipient=staff).values_list("kind", flat=True))
    assert kinds == ["daily_digest", "dead_letter_alert"]
    warning = Notification.objects.get(kind="dead_letter_alert")
    assert "1 dead letter(s)" in warning.subject and "redrive_dlq" in warning.body


# --- manage.py scan without --user -------------------------------------------------------------
def scan_on_the_command_line(tmp_path, **options) -> str:
    """Run `manage.py scan` (no worker: it stops waiting at once); the scan's owner."""
    import io

    from django.core.management import call_command

    from scans.models import Scan

    path = tmp_path / "can.jpg"
    path.write_bytes(make_photo_bytes())
    out = io.StringIO()
    with pytest.raises(SystemExit) as stopped:
        call_command("scan", str(path), timeout=0.1, stdout=out, stderr=io.StringIO(), **options)
    assert stopped.value.code == 2, out.getvalue()  # queued, then "no result" (no worker)
    return Scan.objects.get().owner.username


@pytest.mark.django_db
def test_the_command_line_scans_as_the_local_account_of_make_run(settings, tmp_path):
    """`DEMO_USERNAME=alice make run` created alice; a second shell without that variable
    still scans as her instead of failing on a missing "demo"."""
    settings.DEMO_USERNAME = "demo"
    UserFactory(username="alice", is_staff=True, is_superuser=True)
    UserFactory(username="someone")

    assert scan_on_the_command_line(tmp_path) == "alice"


@pytest.mark.django_db
def test_the_command_line_scans_as_demo_username(settings, tmp_path):
    settings.DEMO_USERNAME = "alice"
    UserFactory(username="alice", is_superuser=True)
    UserFactory(username="root", is_superuser=True)

    assert scan_on_the_command_line(tmp_path) == "alice"


@pytest.mark.django_db
def test_the_command_line_asks_for_a_user_when_it_cannot_tell(settings, tmp_path):
    from django.core.management import CommandError, call_command

    settings.DEMO_USERNAME = "demo"
    UserFactory(username="root", is_superuser=True)
    UserFactory(username="admin2", is_superuser=True)
    path = tmp_path / "can.jpg"
    path.write_bytes(make_photo_bytes())

    with pytest.raises(CommandError, match="pass --user"):
        call_command("scan", str(path), timeout=0.1)


@pytest.mark.django_db
def test_the_banner_of_make_run_says_how_to_switch_on_vision(settings):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("ensure_demo_user", "--banner", stdout=out)

    banner = out.getvalue()
    assert "provider    offline (cannot see photos" in banner
    assert "vision      off" in banner
    assert "OPENAI_API_KEY" in banner and "OPENAI_BASE_URL" in banner

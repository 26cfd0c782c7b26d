"""The scan services called directly: step order, idempotency, one terminal state, the sweeper."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError
from django.utils import timezone

from scans import services
from scans.models import Scan, ScanStatus, ScanStep, VisionCacheEntry
from scans.providers.base import Answer, Classification, ProviderError, Usage
from scans.services import caches

pytestmark = pytest.mark.django_db


class CountingVisionProvider:
    name = "counting"
    calls = 0

    def classify(self, request):
        type(self).calls += 1
        return Classification(
            outcome="classified", category_code="metal", user_input=request.hint, provider=self.name
        )


@pytest.fixture
def counting_provider(settings):
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = "tests.scans.services.test_services.CountingVisionProvider"
    CountingVisionProvider.calls = 0
    _build.cache_clear()
    yield CountingVisionProvider
    _build.cache_clear()


@pytest.fixture
def scan(user, photo):
    return services.create_scan(owner=user, image=photo(), hint="캔")


def test_steps_run_in_order_and_complete_the_scan(rulebase, scan, counting_provider):
    services.run_vision_step(scan.id)
    scan.refresh_from_db()
    assert (scan.status, scan.step, scan.progress) == ("processing", "vision", 33)

    services.run_rule_step(scan.id)
    scan.refresh_from_db()
    # the rules are stored and the scan says what comes next: its answer (the answer step
    # then writes nothing to start)
    assert (scan.step, scan.progress, scan.category.code) == ("answer", 75, "metal")

    services.run_answer_step(scan.id)
    scan.refresh_from_db()
    assert (scan.status, scan.step, scan.progress) == ("completed", "done", 100)
    assert scan.answer["disposal_steps"]


def test_a_redelivered_vision_step_does_not_call_the_provider_again(
    rulebase, scan, counting_provider
):
    services.run_vision_step(scan.id)
    services.run_vision_step(scan.id)

    assert counting_provider.calls == 1


def test_a_redelivered_answer_after_completion_changes_nothing(rulebase, scan, counting_provider):
    for step in (services.run_vision_step, services.run_rule_step, services.run_answer_step):
        step(scan.id)
    finished = Scan.objects.get(pk=scan.id)

    services.run_answer_step(scan.id)

    again = Scan.objects.get(pk=scan.id)
    assert again.updated_at == finished.updated_at and again.answer == finished.answer


def test_rule_step_refuses_to_run_before_vision(rulebase, scan):
    with pytest.raises(services.ScanStepError) as error:
        services.run_rule_step(scan.id)
    assert error.value.code == "vision_missing"


def test_a_scan_fails_exactly_once(scan):
    assert services.fail_scan(scan.id, code="first", message="first reason") is True
    assert services.fail_scan(scan.id, code="second", message="second reason") is False

    scan.refresh_from_db()
    assert (scan.status, scan.error_code, scan.error_message) == ("failed", "first", "first reason")


def test_a_completed_scan_cannot_be_failed_afterwards(rulebase, scan, counting_provider):
    for step in (services.run_vision_step, services.run_rule_step, services.run_answer_step):
        step(scan.id)

    assert services.fail_scan(scan.id, code="late", message="too late") is False
    assert Scan.objects.get(pk=scan.id).status == ScanStatus.COMPLETED


def test_steps_of_a_failed_scan_do_nothing(rulebase, scan, counting_provider):
    services.fail_scan(scan.id, code="x", message="stopped")
    services.run_vision_step(scan.id)

    assert counting_provider.calls == 0
    assert Scan.objects.get(pk=scan.id).classification is None


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (services.ScanStepError("gone", code="image_missing"), "image_missing"),
        (ProviderError("refused", code="provider_refused"), "provider_refused"),
        (SoftTimeLimitExceeded(), "step_timeout"),
        (KeyError("boom"), "internal_error"),
    ],
)
def test_failures_get_a_stable_code_and_a_readable_message(exc, code):
    got_code, message = services.describe_failure(exc, ScanStep.RULE)
    assert got_code == code
    assert message and "Traceback" not in message


def test_a_database_failure_says_the_database_failed_and_how():
    exc = OperationalError("terminating connection due to administrator command\nSSL SYSCALL")
    code, message = services.describe_failure(exc, ScanStep.VISION)

    assert code == "internal_error"
    assert message == (
        "The database failed during the recognition step on every try "
        "(OperationalError: terminating connection due to administrator command)."
    )


def test_the_sweeper_requeues_stalled_scans_then_fails_them(user, photo, settings):
    settings.SCAN_STALLED_AFTER_SECONDS = 600
    settings.SCAN_MAX_REQUEUES = 2
    stalled = services.create_scan(owner=user, image=photo(), hint="")
    fresh = services.create_scan(owner=user, image=photo(), hint="")

    def stall():
        Scan.objects.filter(pk=stalled.pk).update(
            status=ScanStatus.PROCESSING, updated_at=timezone.now() - timedelta(minutes=11)
        )

    roots = set()
    for expected_requeues in (1, 2):
        stall()
        assert services.sweep_stalled_scans() == (1, 0)
        stalled.refresh_from_db()
        assert (stalled.status, stalled.requeue_count) == (ScanStatus.QUEUED, expected_requeues)
        roots.add(stalled.celery_root_id)
    assert len(roots) == 2, "each re-enqueue is a new chain"

    stall()
    assert services.sweep_stalled_scans() == (0, 1)
    stalled.refresh_from_db()
    fresh.refresh_from_db()
    assert (stalled.status, stalled.error_code) == ("failed", "stalled")
    assert "10 minutes" in stalled.error_message
    assert fresh.status == ScanStatus.QUEUED and fresh.requeue_count == 0


def test_the_sweeper_finishes_a_batch_whose_members_all_ended(user, photo):
    from scans.models import ScanBatch
    from scans.tasks import sweep_stalled_scans_task

    # the test's transaction never commits, so no member's end writes the summary: as if the
    # worker had died between the last member's end and the summary
    batch = services.create_batch(owner=user, images=[photo(), photo()])
    first, second = batch.scans.all()
    services.fail_scan(first.id, code="x", message="why")
    assert sweep_stalled_scans_task()["batches_finished"] == 0, "a member is still queued"

    services.fail_scan(second.id, code="y", message="why not")
    assert sweep_stalled_scans_task()["batches_finished"] == 1
    batch = ScanBatch.objects.get(pk=batch.pk)
    assert (batch.status, batch.summary["count"], batch.summary["failed"]) == ("completed", 2, 2)
    assert batch.completed_at is not None
    assert sweep_stalled_scans_task()["batches_finished"] == 0, "finished once"


def test_the_member_that_ends_last_writes_its_batch_summary(
    user, photo, django_capture_on_commit_callbacks
):
    from scans.models import ScanBatch

    batch = services.create_batch(owner=user, images=[photo(), photo()])
    first, second = batch.scans.all()
    with django_capture_on_commit_callbacks(execute=True):
        services.fail_scan(first.id, code="x", message="why")
    assert ScanBatch.objects.get(pk=batch.pk).summary is None
    with django_capture_on_commit_callbacks(execute=True):
        services.fail_scan(second.id, code="y", message="why not")
    batch = ScanBatch.objects.get(pk=batch.pk)
    assert (batch.status, batch.summary["failed"]) == ("completed", 2)


def test_a_failed_scan_resumes_from_the_failed_step(rulebase, scan, counting_provider):
    services.run_vision_step(scan.id)
    services.fail_scan(scan.id, code="provider_unavailable", message="busy")
    scan.refresh_from_db()

    assert services.remaining_steps(scan) == [ScanStep.RULE, ScanStep.ANSWER]
    assert services.retry_scans([scan.id], actor="admin") == 1
    scan.refresh_from_db()
    assert (scan.status, scan.error_code, scan.retry_count) == ("queued", "", 1)
    assert services.retry_scans([scan.id], actor="admin") == 0, "only failed scans are retried"
    assert counting_provider.calls == 1


def test_a_scan_accepted_while_the_broker_is_down_is_published_by_the_relay(
    monkeypatch, scan, caplog
):
    from celery.canvas import _chain

    real_apply_async = _chain.apply_async
    monkeypatch.setattr(
        _chain,
        "apply_async",
        lambda *a, **kw: (_ for _ in ()).throw(ConnectionRefusedError("down")),
    )
    assert services.dispatch_pipeline(scan.id) is False
    assert "the relay will retry" in caplog.text
    assert Scan.objects.get(pk=scan.id).dispatched_at is None

    published = []
    monkeypatch.setattr(_chain, "apply_async", lambda self, *a, **kw: published.append(self))
    later = timezone.now() + services.DISPATCH_GRACE * 2
    assert services.relay_pending_dispatches(now=later) == 1
    assert Scan.objects.get(pk=scan.id).dispatched_at is not None
    assert [t.name for t in published[0].tasks] == [
        "scans.tasks.prepare_image",
        "scans.tasks.vision_scan",
        "scans.tasks.rule_match",
        "scans.tasks.answer_gen",
    ]
    assert services.relay_pending_dispatches(now=later) == 0, "owed once, published once"
    assert real_apply_async


class PaidVisionProvider:
    """Charges per call and can be cached, like the OpenAI provider."""

    name = "paid"
    cache_namespace = "paid|model-x|prompt-1"
    calls = 0
    cost = 0.0123

    def classify(self, request):
        type(self).calls += 1
        return Classification(
            outcome="classified",
            category_code="metal",
            user_input=request.hint,
            provider=self.name,
            usage=Usage(
                model="model-x",
                input_tokens=1000,
                cached_input_tokens=400,
                output_tokens=50,
                cost_usd=self.cost,
                prompt_version="vision-1",
            ),
        )


@pytest.fixture
def paid_provider(settings):
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = "tests.scans.services.test_services.PaidVisionProvider"
    PaidVisionProvider.calls = 0
    _build.cache_clear()
    yield PaidVisionProvider
    _build.cache_clear()


def test_vision_usage_is_stored_per_step_and_summed(rulebase, user, photo, paid_provider):
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    services.run_vision_step(scan.id)
    scan.refresh_from_db()

    assert scan.usage["vision"]["input_tokens"] == 1000
    assert (scan.input_tokens, scan.cached_input_tokens, scan.output_tokens) == (1000, 400, 50)
    assert scan.cost_usd == Decimal("0.0123")
    assert (scan.vision_model, scan.prompt_version, scan.vision_cache_hit) == (
        "model-x",
        "vision-1",
        False,
    )


class PaidAnswerProvider:
    name = "paid"

    def compose(self, request):
        return Answer(
            disposal_steps=["헹궈 주세요."],
            insufficiencies=[],
            user_answer="금속류로 배출해요.",
            provider=self.name,
            usage=Usage(model="model-x", input_tokens=300, output_tokens=40, cost_usd=0.0000005),
        )


def test_a_scans_cost_is_the_exact_sum_of_its_steps(rulebase, user, photo, settings):
    from scans.providers import _build

    PaidVisionProvider.cost = 0.0000012345  # priced to 10 decimals, as the OpenAI provider
    settings.SCAN_VISION_PROVIDER = "tests.scans.services.test_services.PaidVisionProvider"
    settings.SCAN_ANSWER_PROVIDER = "tests.scans.services.test_services.PaidAnswerProvider"
    _build.cache_clear()
    try:
        scan = services.create_scan(owner=user, image=photo(), hint="캔")
        for step in (services.run_vision_step, services.run_rule_step, services.run_answer_step):
            step(scan.id)
    finally:
        PaidVisionProvider.cost = 0.0123
        _build.cache_clear()
    scan.refresh_from_db()

    steps = [Decimal(str(scan.usage[name]["cost_usd"])) for name in ("vision", "answer")]
    assert steps == [Decimal("0.0000012345"), Decimal("0.0000005")]
    assert scan.cost_usd == sum(steps) == Decimal("0.0000017345")


def test_the_same_photo_and_hint_never_pay_twice(rulebase, user, photo, paid_provider):
    first = services.create_scan(owner=user, image=photo(), hint="콜라 캔")
    second = services.create_scan(owner=user, image=photo(), hint="콜라  캔")  # spacing differs
    other_hint = services.create_scan(owner=user, image=photo(), hint="참치 캔")

    for scan in (first, second, other_hint):
        services.run_vision_step(scan.id)

    assert paid_provider.calls == 2
    second.refresh_from_db()
    assert second.vision_cache_hit is True
    assert second.cost_usd == 0 and second.usage == {}
    assert second.classification["category_code"] == "metal"
    assert (
        VisionCacheEntry.objects.get(
            image_sha256=second.image_sha256,
            key=services.vision_cache_key(
                paid_provider.cache_namespace, second.image_sha256, "콜라 캔"
            ),
        ).hits
        == 1
    )


def _prepared_key(scan, provider) -> str:
    services.run_prepare_step(scan.id)
    scan.refresh_from_db()
    return services.vision_cache_key(provider.cache_namespace, scan.image_sha256, scan.hint)


def test_a_scan_of_a_photo_being_recognised_waits_for_that_result(
    rulebase, user, photo, paid_provider, monkeypatch
):
    """Two scans of one photo at once: the second does not pay, it takes the first's entry."""
    from scans.models import VisionCallLease

    first = services.create_scan(owner=user, image=photo(), hint="콜라 캔")
    second = services.create_scan(owner=user, image=photo(), hint="콜라 캔")
    key = _prepared_key(second, paid_provider)
    VisionCallLease.objects.create(  # the first scan's call is in flight
        key=key, scan_id=first.id, expires_at=timezone.now() + timedelta(seconds=60)
    )

    def first_finishes(seconds):  # while the second waits, the first stores its result
        VisionCacheEntry.objects.create(
            key=key,
            provider=paid_provider.cache_namespace,
            image_sha256=second.image_sha256,
            classification={"outcome": "classified", "category_code": "metal"},
        )
        VisionCallLease.objects.filter(key=key).delete()

    monkeypatch.setattr(caches.time, "sleep", first_finishes)
    services.run_vision_step(second.id)

    second.refresh_from_db()
    assert paid_provider.calls == 0
    assert second.vision_cache_hit and second.classification["category_code"] == "metal"


def test_a_lapsed_lease_is_taken_over_and_released_after_the_call(
    rulebase, user, photo, paid_provider
):
    """A holder that crashed mid-call blocks nobody past its lease."""
    from scans.models import VisionCallLease

    scan = services.create_scan(owner=user, image=photo(), hint="콜라 캔")
    key = _prepared_key(scan, paid_provider)
    VisionCallLease.objects.create(
        key=key, scan_id=uuid.uuid4(), expires_at=timezone.now() - timedelta(seconds=1)
    )

    services.run_vision_step(scan.id)

    assert paid_provider.calls == 1
    assert not VisionCallLease.objects.exists()
    assert VisionCacheEntry.objects.filter(key=key).exists()


def test_a_redelivered_scan_does_not_wait_for_its_own_lease(
    rulebase, user, photo, paid_provider, monkeypatch
):
    """Its worker died mid-call: the lease still names this scan, which may call at once."""
    from scans.models import VisionCallLease

    scan = services.create_scan(owner=user, image=photo(), hint="콜라 캔")
    key = _prepared_key(scan, paid_provider)
    VisionCallLease.objects.create(
        key=key, scan_id=scan.id, expires_at=timezone.now() + timedelta(seconds=60)
    )
    monkeypatch.setattr(caches.time, "sleep", lambda seconds: pytest.fail("waited for itself"))

    services.run_vision_step(scan.id)
    assert paid_provider.calls == 1


def test_a_failed_call_releases_its_lease_at_once(
    rulebase, user, photo, paid_provider, monkeypatch
):
    """The next scan of that photo (or the retry) does not wait for the lease to lapse."""
    from scans.models import VisionCallLease
    from scans.providers.base import TransientProviderError

    scan = services.create_scan(owner=user, image=photo(), hint="콜라 캔")

    def rate_limited(self, request):
        raise TransientProviderError("Too many requests", code="rate_limited", retry_after=1)

    monkeypatch.setattr(PaidVisionProvider, "classify", rate_limited)
    with pytest.raises(TransientProviderError):
        services.run_vision_step(scan.id)
    assert not VisionCallLease.objects.exists()


def test_free_providers_are_not_cached(rulebase, user, photo, counting_provider):
    for _ in range(2):
        services.run_vision_step(services.create_scan(owner=user, image=photo(), hint="캔").id)
    assert counting_provider.calls == 2
    assert not VisionCacheEntry.objects.exists()


def test_the_upload_is_replaced_by_the_prepared_photo(rulebase, user, counting_provider):
    from django.core.files.storage import default_storage
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.scans.test_image_preparation import jpeg_with_exif

    scan = services.create_scan(
        owner=user, image=SimpleUploadedFile("cam.jpg", jpeg_with_exif()), hint="캔"
    )
    original = scan.image.name
    services.run_vision_step(scan.id)
    scan.refresh_from_db()

    assert not default_storage.exists(original), "the upload with GPS is gone"
    assert scan.image.name.endswith(f"prepared/{scan.id}.jpg") and scan.thumbnail
    stored = scan.image.read()
    assert b"SecretCam" not in stored and b"Exif" not in stored
    assert scan.image_sha256 and scan.image_prepared_at


def test_a_damaged_stored_photo_fails_the_step_with_its_reason(rulebase, user, counting_provider):
    from django.core.files.base import ContentFile

    scan = services.create_scan(
        owner=user, image=ContentFile(b"\xff\xd8\xff broken", name="x.jpg"), hint="캔"
    )
    with pytest.raises(services.ScanStepError) as error:
        services.run_vision_step(scan.id)
    assert error.value.code == "corrupt"
    assert counting_provider.calls == 0


@pytest.mark.parametrize(
    ("retries", "retry_after", "low", "high"),
    # the cap bounds the backoff, never a Retry-After: 30 s asked with a cap of 2 s is 30 s
    [(0, None, 0.5, 1), (2, None, 2, 4), (1, 7, 7, 7), (9, None, 1, 2), (0, 30, 30, 30)],
)
def test_retry_countdown_backs_off_honours_retry_after_and_is_capped(
    settings, retries, retry_after, low, high
):
    from scans.tasks import retry_countdown

    settings.SCAN_RETRY_BACKOFF_CAP = 2 if high in (2, 30) else 10
    for _ in range(50):
        assert low <= retry_countdown(retries, retry_after) <= high


@pytest.mark.parametrize(("retries", "retry_after"), [(0, None), (1, None), (0, 2.5)])
def test_a_retry_countdown_on_quorum_queues_is_whole_seconds_and_at_least_one(
    settings, retries, retry_after
):
    """Native delayed delivery (quorum queues) truncates a countdown to whole seconds and
    refuses one under a second (ValueError in Celery's send_task): the first retry's 0.5-1 s
    backoff would have failed its scan."""
    from scans.tasks import retry_countdown

    settings.CELERY_QUEUE_TYPE = "quorum"
    settings.SCAN_RETRY_BACKOFF_CAP = 10
    for _ in range(50):
        countdown = retry_countdown(retries, retry_after)
        assert countdown >= max(1, retry_after or 0) and countdown == int(countdown)


class OvertakenVisionProvider:
    """While this call is in flight, a redelivered copy of the same step runs and finishes."""

    name = "overtaken"
    calls = 0

    def classify(self, request):
        type(self).calls += 1
        if type(self).calls == 1:
            type(self).inner_outcome = services.run_vision_step(type(self).scan_id)
        return Classification(
            outcome="classified", category_code="metal", user_input=f"call {type(self).calls}"
        )


def test_two_copies_of_a_step_running_at_once_store_one_result(rulebase, user, photo, settings):
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = "tests.scans.services.test_services.OvertakenVisionProvider"
    _build.cache_clear()
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    OvertakenVisionProvider.calls, OvertakenVisionProvider.scan_id = 0, scan.id
    try:
        outer = services.run_vision_step(scan.id)
    finally:
        _build.cache_clear()

    assert (OvertakenVisionProvider.inner_outcome, outer) == ("succeeded", "skipped")
    scan.refresh_from_db()
    assert scan.classification["user_input"] == "call 2", "the first stored result stays"


@pytest.mark.django_db(transaction=True)
def test_every_step_attempt_is_in_the_ledger_also_for_a_scan_deleted_meanwhile(user, photo):
    """The ledger's insert names the scan without asking first whether it still exists."""
    import uuid
    from types import SimpleNamespace

    from scans.ledger import close_attempt, open_attempt
    from scans.models import AttemptOutcome, TaskAttempt
    from scans.tasks import vision_scan_task

    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    gone = str(uuid.uuid4())
    request = SimpleNamespace(delivery_info={}, retries=0, hostname="w@host")
    task = SimpleNamespace(name=vision_scan_task.name, step=ScanStep.VISION, request=request)

    open_attempt(task_id="t-live", task=task, args=[str(scan.id)])
    open_attempt(task_id="t-gone", task=task, args=[gone])
    # written when it starts (no Redis) or when it ends (a first delivery Redis holds)
    close_attempt("t-live", AttemptOutcome.SUCCEEDED)
    close_attempt("t-gone", AttemptOutcome.FAILED)

    assert TaskAttempt.objects.get(task_id="t-live").scan_id == scan.id
    orphan = TaskAttempt.objects.get(task_id="t-gone")
    assert orphan.scan_id is None and orphan.step == ScanStep.VISION


# --- failures that are not the scan's (Celery passing it on while the broker restarts) ---------
def test_a_step_that_failed_after_storing_its_result_leaves_the_scan_going(
    rulebase, scan, counting_provider
):
    """The vision step stored its classification; Celery then could not publish rule_match
    (the broker was restarting) and reported the task failed. The scan is not failed and not
    dead-lettered: the redelivered message (or the sweeper) takes it on, without paying again."""
    from kombu.exceptions import OperationalError

    from scans.ledger import fail_pipeline_task
    from scans.models import DeadLetter
    from scans.tasks import rule_match_task, vision_scan_task

    services.run_vision_step(scan.id)
    fail_pipeline_task(
        sender=vision_scan_task,
        task_id="t-vision",
        exception=OperationalError("[Errno 111] Connection refused"),
        args=(str(scan.id),),
    )
    scan.refresh_from_db()
    assert (scan.status, scan.error_code) == (ScanStatus.PROCESSING, "")
    assert not DeadLetter.objects.exists()

    assert services.run_vision_step(scan.id) == "skipped"  # the redelivery: no second call
    assert counting_provider.calls == 1
    services.run_rule_step(scan.id)
    services.run_answer_step(scan.id)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.COMPLETED

    # a step's own error, before it stored anything, still fails the scan with its reason
    other = services.create_scan(
        owner=scan.owner, image=None, image_url="https://example.com/a.jpg"
    )
    fail_pipeline_task(
        sender=rule_match_task, task_id="t-rule", exception=KeyError("boom"), args=(str(other.id),)
    )
    other.refresh_from_db()
    assert (other.status, other.error_code) == (ScanStatus.FAILED, "internal_error")
    assert DeadLetter.objects.filter(task_id="t-rule").exists()


def test_a_broker_error_before_the_result_does_not_fail_the_scan(rulebase, scan):
    """A retry that could not be published: the scan waits for its redelivery or the sweeper."""
    from amqp.exceptions import NotAllowed

    from scans.ledger import fail_pipeline_task
    from scans.tasks import vision_scan_task

    fail_pipeline_task(
        sender=vision_scan_task,
        task_id="t-vision",
        exception=NotAllowed("vhost / not found"),
        args=(str(scan.id),),
    )
    scan.refresh_from_db()
    assert scan.status == ScanStatus.QUEUED and not scan.error_code

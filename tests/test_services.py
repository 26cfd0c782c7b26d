"""The scan services called directly: step order, idempotency, one terminal state, the sweeper."""

from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from scans import services
from scans.models import Scan, ScanStatus, ScanStep
from scans.providers.base import Classification

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

    settings.SCAN_VISION_PROVIDER = "tests.test_services.CountingVisionProvider"
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
    assert (scan.step, scan.progress, scan.category.code) == ("rule", 66, "metal")

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
        (services.ScanStepError("image_missing", "gone"), "image_missing"),
        (SoftTimeLimitExceeded(), "step_timeout"),
        (KeyError("boom"), "internal_error"),
    ],
)
def test_failures_get_a_stable_code_and_a_readable_message(exc, code):
    got_code, message = services.describe_failure(exc, ScanStep.RULE)
    assert got_code == code
    assert message and "Traceback" not in message


def test_the_sweeper_fails_stalled_scans_and_leaves_fresh_ones(user, photo, settings):
    settings.SCAN_STALLED_AFTER_SECONDS = 600
    stalled = services.create_scan(owner=user, image=photo(), hint="")
    fresh = services.create_scan(owner=user, image=photo(), hint="")
    Scan.objects.filter(pk=stalled.pk).update(
        status=ScanStatus.PROCESSING, updated_at=timezone.now() - timedelta(minutes=11)
    )

    assert services.sweep_stalled_scans() == 1

    stalled.refresh_from_db()
    fresh.refresh_from_db()
    assert (stalled.status, stalled.error_code) == ("failed", "stalled")
    assert "10 minutes" in stalled.error_message
    assert fresh.status == ScanStatus.QUEUED


def test_a_publish_failure_is_logged_not_raised(monkeypatch, scan, caplog):
    from scans import tasks

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.vision_scan, "apply_async", broker_down)
    monkeypatch.setattr("celery.canvas._chain.apply_async", broker_down)

    assert services.enqueue_pipeline(scan.id, str(scan.id)) is False
    assert "could not publish" in caplog.text

"""The answer cache in the services (scans.services.compose_answer), called directly.

Two scans classified alike through a real worker and the OpenAI provider are in
tests/integration/pipeline/test_pipeline_openai.py; here: idempotency, failures and what is stored.
"""

from __future__ import annotations

import pytest

from scans import services
from scans.models import AnswerCacheEntry, VisionCacheEntry, VisionCallLease
from scans.providers.base import (
    Answer,
    AnswerRequest,
    Classification,
    TransientProviderError,
    Usage,
)

pytestmark = pytest.mark.django_db

LONG_NAMESPACE = "paid|http://" + "very-long-host-name." * 12 + "example/v1|model-x|prompt-1"


class CachedAnswerProvider:
    """Pays for every answer; keyed like the OpenAI provider by what the answer depends on."""

    name = "paid"
    cache_namespace = LONG_NAMESPACE
    calls = 0
    fail = False

    def answer_cache_key(self, request):
        if request.rules is None:
            return None
        tags = ",".join(sorted(request.classification.get("situation_tags") or []))
        return f"{request.rules['category_code']}|{tags}|{request.language}".ljust(64, ".")

    def compose(self, request):
        type(self).calls += 1
        if self.fail:
            raise TransientProviderError("busy", code="provider_rate_limited")
        return Answer(
            disposal_steps=["헹궈 주세요."],
            insufficiencies=[],
            user_answer="금속류로 배출해요.",
            provider=self.name,
            usage=Usage(model="model-x", input_tokens=300, output_tokens=40, cost_usd=0.0002),
        )


class LongNamespaceVisionProvider:
    name = "paid"
    cache_namespace = LONG_NAMESPACE

    def classify(self, request):
        return Classification(
            outcome="classified",
            category_code="metal",
            user_input=request.hint,
            provider=self.name,
            usage=Usage(model="model-x", input_tokens=1000, output_tokens=50, cost_usd=0.001),
        )


@pytest.fixture
def providers(settings):
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = (
        "tests.scans.services.test_answer_cache.LongNamespaceVisionProvider"
    )
    settings.SCAN_ANSWER_PROVIDER = "tests.scans.services.test_answer_cache.CachedAnswerProvider"
    CachedAnswerProvider.calls, CachedAnswerProvider.fail = 0, False
    _build.cache_clear()
    yield CachedAnswerProvider
    _build.cache_clear()


def run_to_rules(scan) -> None:
    services.run_vision_step(scan.id)
    services.run_rule_step(scan.id)
    scan.refresh_from_db()


def test_a_long_provider_namespace_is_stored_with_both_caches(rulebase, user, photo, providers):
    """A long OPENAI_BASE_URL makes a long namespace: the cache entries still get written (on
    PostgreSQL a value over the column's length fails the step with a DataError)."""
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    run_to_rules(scan)
    services.run_answer_step(scan.id)

    scan.refresh_from_db()
    assert scan.status == "completed", scan.error_message
    assert VisionCacheEntry.objects.get().provider == LONG_NAMESPACE[:255]
    entry = AnswerCacheEntry.objects.get()
    assert (entry.provider, entry.category_code, entry.language) == (
        LONG_NAMESPACE[:255],
        "metal",
        "ko",
    )
    assert entry.answer == scan.answer


def test_a_redelivered_answer_step_does_not_pay_again(rulebase, user, photo, providers):
    """The first delivery paid and stored its answer in the cache, then its worker died before
    the scan was saved: the redelivery takes the answer from the cache."""
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    run_to_rules(scan)
    request = AnswerRequest(scan.classification, scan.matched_rules, scan.hint)
    services.compose_answer(request, scan_id=scan.pk)  # the first delivery's paid call

    services.run_answer_step(scan.id)  # the redelivery

    scan.refresh_from_db()
    assert providers.calls == 1
    assert scan.status == "completed" and scan.answer_cache_hit is True
    assert "answer" not in scan.usage
    assert AnswerCacheEntry.objects.get().hits == 1


def test_a_failed_answer_call_caches_nothing_and_releases_its_lease(
    rulebase, user, photo, providers
):
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    run_to_rules(scan)
    providers.fail = True

    with pytest.raises(TransientProviderError):
        services.run_answer_step(scan.id)

    assert not AnswerCacheEntry.objects.exists()
    assert not VisionCallLease.objects.exists(), "a waiting scan takes over at once"
    providers.fail = False
    services.run_answer_step(scan.id)  # Celery's retry
    scan.refresh_from_db()
    assert scan.status == "completed" and scan.answer_cache_hit is False
    assert providers.calls == 2


def test_the_answer_cache_is_per_language(rulebase, user, photo, providers):
    korean = services.create_scan(owner=user, image=photo(), hint="캔", language="ko")
    english = services.create_scan(owner=user, image=photo(), hint="캔", language="en")
    for scan in (korean, english):
        run_to_rules(scan)
        services.run_answer_step(scan.id)

    assert providers.calls == 2
    assert set(AnswerCacheEntry.objects.values_list("language", flat=True)) == {"ko", "en"}


@pytest.mark.parametrize("cache_on, calls", [(True, 1), (False, 2)])
def test_scans_classified_alike_share_an_answer_unless_the_cache_is_off(
    rulebase, user, photo, providers, settings, cache_on, calls
):
    settings.SCAN_ANSWER_CACHE = cache_on
    scans = [services.create_scan(owner=user, image=photo(), hint="캔") for _ in range(2)]
    for scan in scans:
        run_to_rules(scan)
        services.run_answer_step(scan.id)

    assert providers.calls == calls
    for scan in scans:
        scan.refresh_from_db()
        assert scan.status == "completed" and scan.answer is not None
    assert AnswerCacheEntry.objects.exists() is cache_on

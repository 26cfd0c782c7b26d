"""The running totals of all scans (ScanTotals, exported as /metrics counters): counted in the
write that records a step's usage or a run's end, once, whatever is redelivered or deleted."""

import importlib
from decimal import Decimal

import pytest
from django.apps import apps

from scans import services
from scans.models import Scan, ScanStatus, ScanTotals
from scans.selectors import running_totals
from tests.scans.services.test_services import PaidAnswerProvider, PaidVisionProvider

pytestmark = pytest.mark.django_db


@pytest.fixture
def paid_providers(settings):
    from scans.providers import _build

    settings.SCAN_VISION_PROVIDER = "tests.scans.services.test_services.PaidVisionProvider"
    settings.SCAN_ANSWER_PROVIDER = "tests.scans.services.test_services.PaidAnswerProvider"
    _build.cache_clear()
    yield PaidVisionProvider, PaidAnswerProvider
    _build.cache_clear()


def figures() -> tuple:
    totals = running_totals()
    return (
        totals.input_tokens,
        totals.cached_input_tokens,
        totals.output_tokens,
        totals.cost_usd,
        totals.ended_completed,
        totals.ended_failed,
        totals.ended_needs_input,
    )


def run_all_steps(scan_id) -> None:
    for step in (services.run_vision_step, services.run_rule_step, services.run_answer_step):
        step(scan_id)


def test_a_scan_adds_its_usage_and_its_end_once_even_when_redelivered(
    rulebase, user, photo, paid_providers
):
    ScanTotals.objects.all().delete()  # counting starts again from a missing row
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    run_all_steps(scan.id)
    run_all_steps(scan.id)  # every message delivered twice: nothing is paid or counted again

    vision, answer = 1000 + 300, 400 + 0
    assert figures() == (vision, answer, 50 + 40, Decimal("0.0123005"), 1, 0, 0)
    scan.refresh_from_db()
    assert (scan.input_tokens, scan.cost_usd) == (1300, Decimal("0.0123005"))

    Scan.objects.all().delete()
    assert figures()[:5] == (1300, 400, 90, Decimal("0.0123005"), 1), "a counter never drops"


def test_failures_count_once_and_a_cached_classification_costs_nothing(
    rulebase, user, photo, paid_providers
):
    before = figures()
    failing = services.create_scan(owner=user, image=photo(), hint="캔")
    assert services.fail_scan(failing.id, code="boom", message="boom")
    assert not services.fail_scan(failing.id, code="boom", message="again")
    first = services.create_scan(owner=user, image=photo(), hint="콜라 캔")
    run_all_steps(first.id)
    paid = figures()
    second = services.create_scan(owner=user, image=photo(), hint="콜라 캔")
    run_all_steps(second.id)  # the same photo and hint: the classification from the cache

    after = figures()
    assert after[5] == before[5] + 1, "failed once"
    second.refresh_from_db()
    assert second.vision_cache_hit and "vision" not in second.usage
    added = tuple(a - b for a, b in zip(after[:5], paid[:5], strict=True))
    assert added == (
        second.input_tokens,
        second.cached_input_tokens,
        second.output_tokens,
        second.cost_usd,
        1,
    ), "exactly what the second scan paid: its answer"


def test_the_migration_starts_the_totals_from_the_stored_scans(user):
    def scan(status, **fields):
        Scan.objects.create(owner=user, image="scans/x.jpg", status=status, **fields)

    scan(ScanStatus.COMPLETED, input_tokens=10, cached_input_tokens=4, output_tokens=2,
         cost_usd=Decimal("0.0000000001"))  # fmt: skip
    scan(ScanStatus.COMPLETED, input_tokens=5, cost_usd=Decimal("0.5"))
    scan(ScanStatus.FAILED)
    scan(ScanStatus.NEEDS_INPUT)
    scan(ScanStatus.QUEUED)
    migration = importlib.import_module("scans.migrations.0022_scan_totals")

    migration.start_totals(apps, None)

    assert figures() == (15, 4, 2, Decimal("0.5000000001"), 2, 1, 1)


def test_concurrent_writes_add_to_different_rows_that_sum_to_the_totals():
    """A write holds the totals row it increments until it commits: with one row, every
    step's final write on every worker waited for the one before it."""
    from scans.services.state import add_to_totals

    ScanTotals.objects.all().delete()
    for _ in range(64):
        add_to_totals({"input_tokens": 10, "cost_usd": Decimal("0.001"), "ended_failed": 1})

    rows = ScanTotals.objects.count()
    assert 8 <= rows <= ScanTotals.SHARDS, f"spread over {rows} row(s)"
    totals = running_totals()
    assert (totals.input_tokens, totals.cost_usd, totals.ended_failed) == (
        640,
        Decimal("0.064"),
        64,
    )

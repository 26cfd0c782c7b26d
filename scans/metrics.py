"""The scans app's Prometheus families: scans queued and processing, runs ended, provider usage
and dead letters, read at scrape time (registered with eco2/metrics.py's collector), and the
counter of uploads refused before anything was stored (``eco2_scans_refused_total``).

A scrape costs the same with a thousand scans or millions: the active scans are a range of an
index (as long as the backlog), and what all scans added up to is the one row of ScanTotals,
counted when a step stores its usage or a run ends (scans/services/state.py)."""

from __future__ import annotations

import logging

from django.db.models import Count, Q
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from eco2.metrics import enable_multiprocess_values
from eco2.queues import SCAN_DEAD_LETTER_QUEUE
from eco2.scrape import Scrape, db_time_box, register_scrape_part

from .models import DeadLetter, ScanStatus
from .selectors import active_scan_counts, running_totals

logger = logging.getLogger(__name__)

SCANS_REFUSED = Counter(
    "eco2_scans_refused_total",
    "Scans refused before anything was stored, by reason (backlog: SCAN_BACKLOG_LIMIT; rate: "
    "SCAN_CREATE_RATE).",
    ["reason"],
    registry=None,
)


def count_refused_scans(reason: str, scans: int = 1) -> None:
    """Count scans a web process refused (written to the multiprocess files like the rest).

    The refusal is the answer the person gets; a metrics file that cannot be written (a full
    disk, a directory removed under a running process) must not turn it into a 500.
    """
    try:
        enable_multiprocess_values()
        SCANS_REFUSED.labels(reason=reason).inc(scans)
    except OSError as exc:
        logger.warning("eco2_scans_refused_total not counted: %s", exc)


def _scans(scrape: Scrape) -> list[Metric]:
    with db_time_box(scrape.timeout):
        active = active_scan_counts()
        totals = running_totals()
    family = GaugeMetricFamily(
        "eco2_scans",
        "Scans queued or processing now (runs that ended: eco2_scans_ended_total).",
        labels=["status"],
    )
    for status, count in active.items():
        family.add_metric([status], count)
    ended = CounterMetricFamily(
        "eco2_scans_ended",
        "Scan runs that ended, by status (needs_input: the run asked which one it is).",
        labels=["status"],
    )
    for status in (ScanStatus.COMPLETED, ScanStatus.FAILED, ScanStatus.NEEDS_INPUT):
        ended.add_metric([status], getattr(totals, f"ended_{status}"))
    return [family, ended]


def _usage(scrape: Scrape) -> list[Metric]:
    with db_time_box(scrape.timeout):
        totals = running_totals()
    tokens = CounterMetricFamily(
        "eco2_provider_tokens",
        "Provider tokens billed for all scans, by kind.",
        labels=["kind"],
    )
    tokens.add_metric(["input"], totals.input_tokens)
    tokens.add_metric(["cached_input"], totals.cached_input_tokens)
    tokens.add_metric(["output"], totals.output_tokens)
    cost = CounterMetricFamily(
        "eco2_provider_cost_usd",
        "Provider cost of all scans in USD.",
        value=float(totals.cost_usd),
    )
    return [tokens, cost]


def _dead_letters(scrape: Scrape) -> list[Metric]:
    with db_time_box(scrape.timeout):
        counts = DeadLetter.objects.aggregate(
            pending=Count("pk", filter=Q(redriven_at__isnull=True, resolved_at__isnull=True)),
            redriven=Count("pk", filter=Q(redriven_at__isnull=False, resolved_at__isnull=True)),
            resolved=Count("pk", filter=Q(resolved_at__isnull=False)),
        )
    family = GaugeMetricFamily(
        "eco2_dead_letters",
        "Dead letters: pending / redriven (scan re-enqueued) / resolved (scan completed, or "
        "dismissed) in the DB, broker_dlq (messages in scan.ai.dlq).",
        labels=["state"],
    )
    for state in ("pending", "redriven", "resolved"):
        family.add_metric([state], counts[state])
    if SCAN_DEAD_LETTER_QUEUE in scrape.queue_depths:
        family.add_metric(["broker_dlq"], scrape.queue_depths[SCAN_DEAD_LETTER_QUEUE])
    return [family]


def register_scrape_parts() -> None:
    """Called once by ScansConfig.ready(): the families follow the queue depths in /metrics."""
    register_scrape_part("scans", _scans)
    register_scrape_part("provider_usage", _usage)
    register_scrape_part("dead_letters", _dead_letters)

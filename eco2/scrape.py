"""The scrape-time part of ``/metrics``: families read when Prometheus scrapes, each part
time-boxed and reported in ``eco2_metrics_collector_up{part}``. The project's own parts are the
queue depths and beat's jobs; an app adds its own with ``register_scrape_part`` (the scans app
in ScansConfig.ready(): scans/metrics.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric

from eco2.beat_watch import job_ages
from eco2.queue_depths import queue_depths

logger = logging.getLogger(__name__)


@contextmanager
def db_time_box(seconds: float) -> Iterator[None]:
    """A statement timeout on PostgreSQL; SQLite is local and its queries here are small."""
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")
        yield


@dataclass
class Scrape:
    """One scrape as its parts see it: the time box, and what the parts before read."""

    timeout: float
    queue_depths: dict[str, int] = field(default_factory=dict)  # the queues part's reading


ScrapePart = Callable[[Scrape], list[Metric]]
_SCRAPE_PARTS: dict[str, ScrapePart] = {}


def register_scrape_part(name: str, build: ScrapePart) -> None:
    """An app adds families to ``/metrics``, read at scrape time and time-boxed like the rest
    (the scans app registers its own in ScansConfig.ready(): scans/metrics.py)."""
    _SCRAPE_PARTS[name] = build


class AppCollector:
    """Queue depths, then the parts the apps registered, read at scrape time.

    Each part is time-boxed; a part that fails is left out (and logged), the rest is served.
    """

    def __init__(self, timeout: float = 2.0):
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        return []  # nothing to query when the collector is registered

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "eco2_metrics_collector_up",
            "1 when that part of the scrape-time collector answered, else 0.",
            labels=["part"],
        )
        scrape = Scrape(timeout=self.timeout)
        parts: list[tuple[str, ScrapePart]] = [
            ("queues", _queues),
            ("beat", _beat),
            *_SCRAPE_PARTS.items(),
        ]
        for part, build in parts:
            started = time.monotonic()
            try:
                families = build(scrape)
            except Exception:
                logger.exception(
                    "metrics collector part %s failed; its families are left out", part
                )
                up.add_metric([part], 0)
                continue
            elapsed = time.monotonic() - started
            if elapsed > self.timeout:
                logger.warning(
                    "metrics: %s took %.2fs (time box %.1fs)", part, elapsed, self.timeout
                )
            up.add_metric([part], 1)
            yield from families
        yield up


def _queues(scrape: Scrape) -> list[Metric]:
    scrape.queue_depths = queue_depths(scrape.timeout)
    family = GaugeMetricFamily(
        "eco2_queue_depth", "Messages ready in a broker queue.", labels=["queue"]
    )
    for name, count in scrape.queue_depths.items():
        family.add_metric([name], count)
    return [family]


def _beat(scrape: Scrape) -> list[Metric]:
    with db_time_box(scrape.timeout):
        ages = job_ages()
    age = GaugeMetricFamily(
        "eco2_periodic_task_seconds_since_last_run",
        "Seconds since beat last sent the periodic task (absent: never sent).",
        labels=["task"],
    )
    late = GaugeMetricFamily(
        "eco2_periodic_task_late",
        "1 when an interval job was not sent for BEAT_LATE_AFTER_INTERVALS of its intervals.",
        labels=["task"],
    )
    for job in ages:
        if job.seconds is not None:
            age.add_metric([job.name], job.seconds)
        late.add_metric([job.name], 1 if job.late else 0)
    return [age, late]

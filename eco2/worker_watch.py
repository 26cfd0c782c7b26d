"""A worker that holds work and makes no progress: noticed from inside the worker, reported to
its health check (docker/healthcheck.py worker) and to Prometheus.

Why: SIGKILL of a prefork pool child (what the OOM killer does) once left a worker's main
process deadlocked on the pool's internal lock. The process ran, its broker connection stayed
up, /readyz answered 200, and no scan step and no beat job ran for minutes. Nothing that looks
at the process or its connection can tell that worker from a healthy idle one; only progress
can.

In every worker's main process a daemon thread (started at ``worker_ready``) wakes every
WORKER_WATCH_INTERVAL seconds and writes ``WORKER_STATE_DIR/<node name>.json``:

    held            tasks this worker has received and not finished (waiting or running)
    queued          messages ready in its queues; looked up only while it holds none
    last_progress   when a task last started or finished here
    waiting_since   since when it has had work (held or queued) without progress
    stalled         it has had work for WORKER_STALL_SECONDS without starting or finishing a
                    task; ``reason`` says what it holds
    written_at, stale_after
                    a file not rewritten within ``stale_after`` seconds means the watch itself
                    stopped (a frozen process): readers treat that worker as stalled too

Progress is read from Celery's own worker state in the main process (tasks accepted, requests
finished), so it works for prefork and threads pools alike. A healthy worker whose slots are all
taken by long tasks finishes one well within the window (180 s): on prefork the hard time limit
(90 s at most) ends any step; the threads pool does not enforce it, and there the provider's
timeout (OPENAI_TIMEOUT, 30 s per connect and per wait for data) bounds a call. A worker whose
every slot stays taken longer than that is not consuming either. The remedy is a restart
(docs/deployment.md, *A worker that stops consuming*).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from celery import signals
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)


def state_dir() -> Path:
    from django.conf import settings

    return Path(settings.WORKER_STATE_DIR)


class ProgressWatch:
    """The watch of one worker; ``tick`` is one look (called by the thread, and by tests)."""

    def __init__(self, nodename: str, queues: list[str], interval: float, stall_after: float):
        self.nodename = nodename
        self.queues = queues
        self.interval = interval
        self.stall_after = stall_after
        self.path = state_dir() / f"{nodename}.json"
        self.stop = threading.Event()
        self._started = self._accepted()
        self._held: set[str] = set()
        self.last_progress = time.time()
        self.waiting_since: float | None = None

    @staticmethod
    def _accepted() -> int:
        from celery.worker import state

        return state.all_total_count[0]

    @staticmethod
    def _held_ids() -> set[str]:
        """Ids of the requests received and not finished (waiting for a slot or running);
        ETA retries not yet due are not among them. Read while the consumer changes the set."""
        from celery.worker import state

        for _ in range(10):
            with contextlib.suppress(RuntimeError):  # changed size during iteration
                return {request.id for request in list(state.reserved_requests)}
        return set(state.requests)

    def _queued(self) -> int | None:
        from django.conf import settings

        from eco2.queue_depths import queue_depths

        try:
            depths = queue_depths(settings.HEALTH_CHECK_TIMEOUT)
        except Exception as exc:  # the broker is down: nobody can consume, nothing to blame here
            logger.debug("worker watch: queue depths unavailable (%r)", exc)
            return None
        return sum(depths.get(name, 0) for name in self.queues)

    def tick(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        started, held = self._accepted(), self._held_ids()
        if started != self._started or self._held - held:
            self.last_progress = now  # a task started, or one that was here has finished
            self.waiting_since = None
        self._started, self._held = started, held
        queued = None if held else self._queued()
        if held or queued:
            self.waiting_since = self.waiting_since or now
        else:
            self.waiting_since = None
        stuck_for = now - max(self.last_progress, self.waiting_since or now)
        stalled = self.waiting_since is not None and stuck_for > self.stall_after
        reason = ""
        if stalled:
            work = f"{len(held)} task(s) received" if held else f"{queued} message(s) queued"
            reason = (
                f"{work} and no task started or finished for {stuck_for:.0f} s "
                f"(limit {self.stall_after:.0f} s): restart the worker"
            )
        report = {
            "nodename": self.nodename,
            "pid": os.getpid(),
            "queues": self.queues,
            "held": len(held),
            "queued": queued,
            "last_progress": self.last_progress,
            "waiting_since": self.waiting_since,
            "stalled": stalled,
            "reason": reason,
            "written_at": now,
            "stale_after": 3 * self.interval + 5,  # a missed look or two is no alarm
        }
        self._write(report)
        if stalled:
            logger.error("worker %s is stalled: %s", self.nodename, reason)
        return report

    def _write(self, report: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(report))
        temporary.replace(self.path)  # readers never see half a file

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the watch must not die quietly: its file going stale says so
                logger.exception("worker watch of %s failed", self.nodename)

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


_watch: ProgressWatch | None = None


@signals.worker_ready.connect(dispatch_uid="eco2.worker_watch.start")
def _start_watch(sender=None, **kwargs) -> None:
    from django.conf import settings

    global _watch
    if sender is None or not settings.WORKER_WATCH_INTERVAL:
        return
    try:
        queues = [queue.name for queue in sender.task_consumer.queues]
    except AttributeError:
        queues = list(sender.app.amqp.queues.consume_from)
    _watch = ProgressWatch(
        sender.hostname, queues, settings.WORKER_WATCH_INTERVAL, settings.WORKER_STALL_SECONDS
    )
    _watch.tick()
    threading.Thread(target=_watch.run, name="eco2-worker-watch", daemon=True).start()


@signals.worker_shutdown.connect(dispatch_uid="eco2.worker_watch.stop")
def _stop_watch(**kwargs) -> None:
    if _watch is not None:
        _watch.close()


# --- readers --------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process of this host has ``pid`` (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_reports(directory: Path | None = None, now: float | None = None) -> Iterator[dict]:
    """The reports of the live workers of this host; a report the watch stopped rewriting is
    returned as stalled (its process is frozen, or its watch died)."""
    directory = directory or state_dir()
    now = time.time() if now is None else now
    for path in sorted(directory.glob("*.json")):
        try:
            report = json.loads(path.read_text())
            alive = pid_alive(int(report["pid"]))
            silent = now - float(report["written_at"])
            stale_after = float(report["stale_after"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a report of ours
        if not alive:
            continue  # a worker that has exited
        if silent > stale_after:
            report["stalled"] = True
            report["reason"] = f"its progress watch has not reported for {silent:.0f} s"
        yield report


class WorkerWatchCollector:
    """Prometheus gauges from the reports of this host's workers (read at scrape time)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stalled = GaugeMetricFamily(
            "eco2_worker_stalled",
            "1 while a worker holds work (received or queued) and starts or finishes no task "
            "for WORKER_STALL_SECONDS, or its progress watch stopped reporting; else 0.",
            labels=["worker"],
        )
        since = GaugeMetricFamily(
            "eco2_worker_seconds_since_progress",
            "Seconds since a task last started or finished on the worker.",
            labels=["worker"],
        )
        held = GaugeMetricFamily(
            "eco2_worker_held_tasks",
            "Tasks the worker has received and not finished (waiting for a slot or running).",
            labels=["worker"],
        )
        now = time.time()
        try:
            reports = list(read_reports(now=now))
        except OSError:
            reports = []
        for report in reports:
            worker = [report["nodename"]]
            stalled.add_metric(worker, int(bool(report["stalled"])))
            since.add_metric(worker, max(0.0, now - report["last_progress"]))
            held.add_metric(worker, report["held"])
        yield from (stalled, since, held)

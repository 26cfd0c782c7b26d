"""The raw-Celery anchor of the worker benchmarks (issue 22): plain Celery, none of Eco²'s code.

A Celery app of its own ("raw"): no Django (no Django fixup, no DJANGO_SETTINGS_MODULE), none of
the app's signals or hooks, no database. Its three-task chain vision → rule → answer does
nothing (``--delay`` makes the first and the last sleep, as the two provider calls of a scan
wait), on a queue of its own (``bench.raw``), run by its own ``celery -A bench.raw_celery
worker`` on the same broker, pool, concurrency, late acks and prefetch 1 as the app's workers.

Result settings: as the app's (JSON, ``result_extended``, ``task_track_started``: every task
stores STARTED then SUCCESS, and task events are sent as by the app's prefork workers), but in
Redis (``REDIS_URL``) instead of the app's django-db backend, which is an app database write;
smoke runs without Redis store them in files under ``ECO2_VAR_DIR``. The broker is
``CELERY_BROKER_URL`` with publisher confirms, as the app's; without it (smoke) the embedded
filesystem transport (eco2/embedded_broker.py, loaded as a file: importing the ``eco2`` package
would connect the app's signal handlers) in a folder of its own.

The harnesses publish from a subprocess (``python -m bench.raw_celery throughput|latency|
sustain …``, one JSON line on stdout): the harness process has the app's publish signals
connected (the queued-task history), which must not see these chains.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery, chain, signals
from celery.canvas import Signature
from kombu import Queue
from kombu.exceptions import DecodeError

from bench.common import RAW_QUEUE

_HERE = Path(__file__).resolve().parent


def _embedded_broker() -> Any:
    """eco2/embedded_broker.py (its Transport and options), loaded from its file without the
    ``eco2`` package."""
    path = _HERE.parent / "eco2" / "embedded_broker.py"
    spec = importlib.util.spec_from_file_location("bench_raw_embedded_broker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_app() -> Celery:
    var_dir = Path(os.environ.get("ECO2_VAR_DIR") or "var")
    broker_url = os.environ.get("CELERY_BROKER_URL", "")
    conf: dict[str, Any] = {}
    if broker_url and not broker_url.startswith("filesystem://"):
        conf.update(broker_url=broker_url, broker_transport_options={"confirm_publish": True})
    else:
        broker = _embedded_broker()
        conf.update(
            broker_url="filesystem://localhost//",
            broker_transport=broker.Transport,
            broker_transport_options=broker.transport_options(var_dir / "raw-broker"),
        )
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        conf["result_backend"] = redis_url
    else:
        results = var_dir / "raw-results"
        results.mkdir(parents=True, exist_ok=True)
        conf["result_backend"] = f"file://{results}"
    app = Celery("raw", fixups=[], set_as_current=False)
    app.conf.update(
        conf,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        enable_utc=True,
        task_queues=[Queue(RAW_QUEUE)],
        task_default_queue=RAW_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        result_extended=True,
        task_track_started=True,
        worker_send_task_events=True,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app()
THREADED_POOLS = ("threads", "gevent", "eventlet")


@signals.celeryd_init.connect
def _as_the_app_on_threaded_pools(
    sender: object = None, conf: Any = None, options: dict | None = None, **kwargs: object
) -> None:
    """What eco2/celery.py does on a threads or gevent pool, for the same settings: no task
    events (with publisher confirms they deadlock the pool's threads in Celery 5.7), no
    prefetch reduction after a reconnect, and on threads the GIL handed over every 1 ms
    (WORKER_THREADS_SWITCH_INTERVAL's default)."""
    from celery import concurrency

    pool = (options or {}).get("pool") or conf.worker_pool
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    for alias in concurrency.get_available_pool_names():  # the CLI hands over the class
        if (getattr(concurrency, "ALIASES", {}).get(alias) or "").split(":")[0] == name:
            name = alias
    if name not in THREADED_POOLS:
        return
    conf.worker_enable_prefetch_count_reduction = False
    if (conf.broker_transport_options or {}).get("confirm_publish"):
        conf.worker_send_task_events = False
    if name == "threads":
        sys.setswitchinterval(0.001)


@app.task(name="raw.vision")
def vision(token: str, delay: float = 0.0) -> dict:
    if delay:
        time.sleep(delay)
    return {"token": token, "step": "vision"}


@app.task(name="raw.rule")
def rule(token: str) -> dict:
    return {"token": token, "step": "rule"}


@app.task(name="raw.answer")
def answer(token: str, delay: float = 0.0) -> dict:
    if delay:
        time.sleep(delay)
    return {"token": token, "step": "answer"}


def raw_chain(token: str, delay: float = 0.0) -> Signature:
    """vision → rule → answer: immutable signatures, as the pipeline's chain."""
    return chain(vision.si(token, delay), rule.si(token), answer.si(token, delay))


# --- the driver (run as a subprocess by the harnesses) ---------------------------------------
def _timestamp(value: Any) -> float:
    return datetime.fromisoformat(str(value)).timestamp()


def done_at(task_ids: list[str]) -> dict[str, tuple[str, float]]:
    """(state, date_done) of the tasks among ``task_ids`` that reached a ready state."""
    backend = app.backend
    found: dict[str, tuple[str, float]] = {}
    metas: Iterable[tuple[str, Any]]
    if hasattr(backend, "client") and hasattr(backend, "get_key_for_task"):  # Redis: one MGET
        values = backend.client.mget([backend.get_key_for_task(i) for i in task_ids])
        metas = zip(
            task_ids, (backend.decode_result(v) if v else None for v in values), strict=True
        )
    else:
        metas = ((i, _file_meta(backend, i)) for i in task_ids)
    for task_id, meta in metas:
        if meta and meta.get("status") in ("SUCCESS", "FAILURE") and meta.get("date_done"):
            found[task_id] = (meta["status"], _timestamp(meta["date_done"]))
    return found


def _file_meta(backend: Any, task_id: str) -> Any:
    """A task's meta from the file backend, or None while a write is under way: the backend
    truncates the file and writes it again in place, so a read racing the SUCCESS write can
    see a torn file (CI saw "Extra data" after the first 388 bytes); the next poll reads it."""
    try:
        return backend.get_task_meta(task_id, cache=False)
    except DecodeError:
        return None


def wait_done(task_id: str, timeout: float) -> tuple[str, float]:
    """(state, date_done) of ``task_id`` once it is ready, polled every 2 ms: the chains are
    timed by the worker's date_done, so the poll's own delay is not in the figure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := done_at([task_id]).get(task_id):
            return found
        time.sleep(0.002)
    raise TimeoutError(f"raw chain {task_id} not done in {timeout:.0f} s")


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def throughput(count: int, timeout: float) -> dict:
    """Publish ``count`` chains, then wait for every last task; timed from the first publish to
    the last date_done, as the scans are from their commit to the last finished_at."""
    app.control.purge()
    signatures = [raw_chain(uuid.uuid4().hex) for _ in range(count)]
    cpu = _cpu()
    started = time.time()
    pending = [signature.apply_async().id for signature in signatures]
    enqueued = time.time()
    publish_cpu = _cpu() - cpu
    finished: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        finished.update(done_at(pending))
        pending = [i for i in pending if i not in finished]
    succeeded = sum(1 for state, _ in finished.values() if state == "SUCCESS")
    end = max((t for _, t in finished.values()), default=time.time())
    seconds = (end if not pending else time.time()) - started
    return {
        "count": count,
        "completed": succeeded,
        "failed": len(finished) - succeeded,
        "timed_out": bool(pending),
        "enqueue_seconds": enqueued - started,
        "seconds": seconds,
        "per_s": succeeded / seconds if seconds > 0 else 0.0,
        "publish_cpu_ms": publish_cpu * 1000,
    }


def latency(count: int, timeout: float) -> dict:
    """``count`` chains one at a time: each published when the previous one ended."""
    app.control.purge()
    # untimed: the first chain warms the worker and the result backend's connection
    wait_done(raw_chain(uuid.uuid4().hex).apply_async().id, timeout)
    times: list[float] = []
    for _ in range(count):
        started = time.time()
        state, done = wait_done(raw_chain(uuid.uuid4().hex).apply_async().id, timeout)
        if state != "SUCCESS":
            raise RuntimeError(f"a raw chain ended {state}")
        times.append((done - started) * 1000)
    return {"count": count, "ms": times}


def sustain(slots: int, backlog: int, delay: float, warmup: float, seconds: float,
            drain_timeout: float) -> dict:  # fmt: skip
    """Keep ``slots + backlog`` chains active for ``warmup + seconds``, then drain; returns
    every completion time and the window's wall-clock edges (io_concurrency computes the rate)."""
    app.control.purge()
    active: list[str] = []
    completions: list[float] = []
    failed = created = 0
    started = time.monotonic()
    window_start, window_end = started + warmup, started + warmup + seconds
    wall_start = 0.0

    def collect() -> None:
        nonlocal active, failed
        finished = done_at(active)
        for state, at in finished.values():
            if state == "SUCCESS":
                completions.append(at)
            else:
                failed += 1
        active = [i for i in active if i not in finished]

    while (now := time.monotonic()) < window_end:
        for _ in range(slots + backlog - len(active)):
            active.append(raw_chain(uuid.uuid4().hex, delay).apply_async().id)
            created += 1
        if not wall_start and now >= window_start:
            wall_start = time.time()
        time.sleep(0.1)
        collect()
    wall_end = time.time()
    deadline = time.monotonic() + drain_timeout
    while active and time.monotonic() < deadline:
        time.sleep(0.2)
        collect()
    return {
        "created": created,
        "completed": len(completions),
        "failed": failed,
        "drained": not active,
        "completions": sorted(completions),
        "wall_start": wall_start,
        "wall_end": wall_end,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="publish raw chains and time them (JSON out)")
    parser.add_argument("mode", choices=("throughput", "latency", "sustain"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--backlog", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    if args.mode == "throughput":
        result = throughput(args.count, args.timeout)
    elif args.mode == "latency":
        result = latency(args.count, args.timeout)
    else:
        result = sustain(
            args.slots, args.backlog, args.delay, args.warmup, args.seconds, args.timeout
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""io_concurrency: scans/s and scans in flight per worker pool when the provider is slow.

The fake OpenAI server (tests/fakes) adds ``--delay`` seconds to every call (full: 3 s; smoke:
0.2 s); the worker runs the OpenAI provider with the real ``openai`` client against it. On one
worker host, the AI queue (scan.ai.pipeline) runs on the pool under test, one after the other:
prefork, threads and gevent (gevent only if importable), while scan.image runs on a small
prefork worker for the whole run so photo preparation is not the bottleneck.

For each pool the harness keeps the pool saturated (concurrency + a backlog of scans active),
starting with one burst so every slot starts a vision call at once; after a warm-up it measures
a window, then stops feeding and lets the pool drain. Printed per pool:

- sustained scans/s: completions in the window, counted from the first completion at or after
  its start to the first at or after its end (whole waves when completions come in waves);
- scans in flight: the most vision calls the fake saw at once (plus the time-average of all
  provider calls in flight during the window, which is what a saturated pool keeps up);
- worker RSS: the AI worker's processes summed from /proc (and PSS, which does not count the
  pages prefork children share once per child);
- theoretical scans/s = in flight ÷ per-scan provider latency (2 calls × delay), and the
  fraction achieved. Target: ≥ 100 scans in flight at ≥ 90 % of theoretical;
- on PostgreSQL, the database sessions waiting on a lock during the window, on average, and the
  statement waited on most (common.LockWaits): a row every step updates queues the workers.

The raw-Celery anchor (issue 22): after a pool named in ``--raw-pools`` (default: threads),
plain Celery chains (bench/raw_celery.py: no Django, no app hooks, no database) run on the same
pool, threads and worker processes, the first and the last task sleeping ``--delay`` as the two
provider calls of a scan wait, kept as saturated for the same windows. Printed: raw chains/s,
their fraction of theory (threads ÷ 2 × delay, the slots being the only limit), the scans'
fraction of the same theory, and scans/s ÷ raw chains/s. Targets: scans ≥ 90 % of theory and
≥ 0.95 of raw Celery with the same threads, in the same run.

    python bench/io_concurrency.py              # production profile: PostgreSQL, RabbitMQ, Redis
    python bench/io_concurrency.py --smoke      # 0.2 s delay, tiny pools, embedded defaults

Each in-flight AI task holds a database connection across its provider call (Django keeps one
per worker thread or greenlet), so on PostgreSQL a pool's concurrency is capped by the free
connections (max_connections minus those in use); the harness clamps to that budget and says
so, unless --allow-db-overcommit.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.fakes import model as fake_model  # noqa: E402

POOLS = ("prefork", "threads", "gevent")
HINT = "투명 페트병, 라벨 있음"


def sustained_rate(times: list[float], start: float, end: float) -> tuple[float, int, float]:
    """(scans/s, completions counted, seconds spanned) in the window [start, end).

    From the first completion at or after ``start`` to the first at or after ``end``: with a
    saturated pool completions can come in waves, and counting whole waves keeps the rate from
    depending on where the window edges fall.
    """
    a, b = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
    if a < b < len(times) and times[b] > times[a]:
        return (b - a) / (times[b] - times[a]), b - a, times[b] - times[a]
    count = b - a
    return (count / (end - start) if end > start else 0.0), count, end - start


def db_budget_for(
    pool: str, concurrency: int, reserve: int, allow_overcommit: bool
) -> tuple[int, dict]:
    """The concurrency the database can carry (PostgreSQL: free connections minus a reserve).

    SQLite and gevent: one greenlet that yields while it holds SQLite's write lock (the event
    relay publishes inside its transaction) leaves any other greenlet's BEGIN IMMEDIATE in
    SQLite's busy handler, a C sleep that blocks the whole process for 30 s. So one greenlet.
    """
    from django.db import connection

    if connection.vendor == "sqlite" and pool == "gevent" and concurrency > 1:
        return 1, {"vendor": "sqlite", "clamped_from": concurrency, "reason": "sqlite+gevent"}
    budget = common.db_connection_budget()
    if budget is None:
        return concurrency, {}
    free = budget["max_connections"] - budget["in_use"] - reserve
    info = {**budget, "reserve": reserve, "free_for_pool": free}
    if concurrency > free and not allow_overcommit:
        return max(1, free), {**info, "clamped_from": concurrency}
    return concurrency, info


def run_pool(
    pool: str,
    concurrency: int,
    args: argparse.Namespace,
    *,
    env: dict,
    fake,
    model,
    var_dir: str,
    image: common.Worker | None = None,
) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from scans.models import TERMINAL_STATUSES, Scan, ScanStatus
    from scans.services import create_scan

    reserve = args.image_concurrency + 6  # image worker, worker main processes, this harness
    from django.db import connection

    # --ai-processes N splits a threads/gevent pool's concurrency over N worker processes
    # (compose: --scale worker-ai=N), so the pool's Python work is not bound to one GIL
    processes = max(1, args.ai_processes) if pool != "prefork" else 1
    db_pool = 0
    if pool == "threads" and connection.vendor == "postgresql" and args.db_pool:
        # as worker-ai in production: the threads share a connection pool, so the database
        # carries the pool, not one connection per thread
        db_pool, db_info = db_budget_for(
            pool, min(concurrency, args.db_pool), reserve, args.allow_db_overcommit
        )
        env = {**env, "DB_POOL_MAX_SIZE": str(max(1, db_pool // processes))}
        db_info = {**db_info, "db_pool": db_pool}
    else:
        concurrency, db_info = db_budget_for(pool, concurrency, reserve, args.allow_db_overcommit)
    if db_info.get("reason") == "sqlite+gevent":
        print(
            f"  NOTE gevent on SQLite: concurrency {db_info['clamped_from']} → 1 (greenlets "
            "deadlock on SQLite's blocking busy handler; PostgreSQL has no such limit)",
            flush=True,
        )
    elif "clamped_from" in db_info and db_pool:
        print(
            f"  NOTE {pool}: DB pool clamped {db_info['clamped_from']} → {db_pool}: PostgreSQL "
            f"max_connections={db_info['max_connections']}, {db_info['in_use']} in use",
            flush=True,
        )
    elif "clamped_from" in db_info:
        print(
            f"  NOTE {pool}: concurrency clamped {db_info['clamped_from']} → {concurrency}: "
            f"PostgreSQL max_connections={db_info['max_connections']}, {db_info['in_use']} in "
            "use; every in-flight AI task holds a connection (--allow-db-overcommit to force)",
            flush=True,
        )
    backlog = args.backlog if args.backlog is not None else max(4, concurrency // 4)
    common.purge_queues()
    fake.clear()
    model.stats.reset()
    ai_workers = [
        common.ai_worker(
            f"ai-{pool}-{index}",
            pool=pool,
            concurrency=concurrency // processes,
            env=env,
            log_dir=var_dir,
        )
        for index in range(processes)
    ]
    common.start_workers(*ai_workers)
    if image is not None:
        image.wait_ready()  # started by main() beside the first AI worker
    owner = common.bench_user(f"io-{pool}")
    nonce = uuid.uuid4().hex
    size = common.parse_size(args.photo_size)
    active = Scan.objects.filter(owner=owner).exclude(status__in=TERMINAL_STATUSES)
    created = 0
    memory = {"rss_mb": 0.0, "pss_mb": 0.0, "processes": 0}
    lock_waits = common.LockWaits(common.pg_url(env))
    try:
        started = time.monotonic()
        window_start = started + args.warmup
        window_end = window_start + args.seconds
        wall_start = wall_end = 0.0
        last_sample = 0.0
        while (now := time.monotonic()) < window_end:
            for _ in range(concurrency + backlog - active.count()):
                upload = SimpleUploadedFile(
                    f"io-{created}.jpg",
                    common.photo(f"{nonce}-{created}", size),
                    content_type="image/jpeg",
                )
                create_scan(owner=owner, image=upload, hint=HINT)
                created += 1
            if not wall_start and now >= window_start:
                model.stats.open_window()
                lock_waits.start()
                wall_start = time.time()
            if now - last_sample >= 1.0:
                if wall_start:
                    sample = common.memory_mb(pid for worker in ai_workers for pid in worker.pids())
                    if sample["rss_mb"] > memory["rss_mb"]:
                        memory = sample
                fake.clear()  # calls are counted by model.stats; keep the fake's log small
                last_sample = now
            time.sleep(args.poll)
        average_in_flight = model.stats.close_window()
        waits = lock_waits.stop()
        wall_end = time.time()
        drained = common.wait_until_terminal(owner, created, args.drain_timeout)
    finally:
        # Stopped before the next pool's worker starts: on the filesystem broker (no acks) a
        # worker still polling while shutting down can take a message from the new one.
        common.stop_workers(*ai_workers)
    completions = sorted(
        finished.timestamp()
        for finished in Scan.objects.filter(owner=owner, status=ScanStatus.COMPLETED)
        .exclude(finished_at=None)
        .values_list("finished_at", flat=True)
    )
    rate, counted, span = sustained_rate(completions, wall_start, wall_end)
    in_flight = model.stats.peak["vision"]
    per_scan_latency = 2 * args.delay
    theoretical = in_flight / per_scan_latency if per_scan_latency else 0.0
    outcomes = common.scan_outcomes(owner)
    # the theory's premise: two provider calls a scan (answers from the cache make it one)
    calls_per_scan = model.stats.count["all"] / created if created else 0.0
    return {
        "pool": pool,
        "concurrency": concurrency,
        "ai_processes": processes,
        "backlog": backlog,
        "scans_per_s": rate,
        "window_completions": counted,
        "window_seconds": span,
        "in_flight": in_flight,
        "max_calls_in_flight": model.stats.peak["all"],
        "avg_calls_in_flight": average_in_flight["all"],
        "theoretical_scans_per_s": theoretical,
        "achieved_fraction": rate / theoretical if theoretical else 0.0,
        "worker_rss_mb": memory["rss_mb"],
        "worker_pss_mb": memory["pss_mb"],
        "worker_processes": memory["processes"],
        "created": created,
        "completed": outcomes.get("completed", 0),
        "failed": outcomes.get("failed", 0),
        "drained": drained,
        "provider_calls": dict(model.stats.count),
        "calls_per_scan": calls_per_scan,
        "failure_samples": common.failure_samples(owner),
        "db": db_info,
        "lock_waits": waits,
        "target_met": in_flight >= 100
        and theoretical > 0
        and rate / theoretical >= 0.9
        and calls_per_scan >= 1.95,
    }


def run_raw_pool(
    pool: str, concurrency: int, processes: int, backlog: int, args: argparse.Namespace,
    *, env: dict, var_dir: str,
) -> dict:  # fmt: skip
    """Raw chains on ``pool``: the same slots, split over the same worker processes, and the
    same delay, warm-up, window and backlog as the scans had."""
    workers = [
        common.raw_worker(
            pool=pool,
            concurrency=concurrency // processes,
            env=env,
            log_dir=var_dir,
            name=f"raw-{pool}-{index}",
        )
        for index in range(processes)
    ]
    common.start_workers(*workers)
    memory = {"rss_mb": 0.0}
    try:
        figures = common.run_raw(
            "sustain",
            env,
            slots=concurrency,
            backlog=backlog,
            delay=args.delay,
            warmup=args.warmup,
            seconds=args.seconds,
            timeout=args.drain_timeout,
        )
        memory = common.memory_mb(pid for worker in workers for pid in worker.pids())
    finally:
        common.stop_workers(*workers)
    rate, counted, span = sustained_rate(
        figures["completions"], figures["wall_start"], figures["wall_end"]
    )
    theoretical = concurrency / (2 * args.delay) if args.delay else 0.0
    return {
        "pool": pool,
        "concurrency": concurrency,
        "worker_processes": processes,
        "backlog": backlog,
        "chains_per_s": rate,
        "window_completions": counted,
        "window_seconds": span,
        "theoretical_chains_per_s": theoretical,
        "achieved_fraction": rate / theoretical if theoretical else 0.0,
        "worker_rss_mb": memory["rss_mb"],
        "created": figures["created"],
        "completed": figures["completed"],
        "failed": figures["failed"],
        "drained": figures["drained"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="0.2 s delay, tiny pools, ~45 s")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds added to every call")
    parser.add_argument("--pools", default=",".join(POOLS), help="comma separated, in order")
    parser.add_argument("--prefork", type=int, default=8, help="concurrency of the prefork pool")
    parser.add_argument("--threads", type=int, default=128, help="concurrency of the threads pool")
    parser.add_argument("--gevent", type=int, default=128, help="concurrency of the gevent pool")
    parser.add_argument("--backlog", type=int, default=None, help="queued scans kept (conc/4)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before the window")
    parser.add_argument("--seconds", type=float, default=90.0, help="measurement window")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--image-concurrency", type=int, default=2, help="prefork, scan.image")
    parser.add_argument("--photo-size", default="320x240", help="WxH of the uploaded photos")
    parser.add_argument("--poll", type=float, default=0.1, help="feeder interval, seconds")
    parser.add_argument("--allow-db-overcommit", action="store_true")
    parser.add_argument(
        "--raw-pools",
        default="threads",
        help="pools followed by raw Celery chains with the same slots (comma separated; '' none)",
    )
    parser.add_argument(
        "--ai-processes",
        type=int,
        default=None,
        help="threads/gevent: split the concurrency over this many AI worker processes "
        "(default: one per core, as compose's worker-ai replicas; smoke: 1)",
    )
    parser.add_argument(
        "--db-pool",
        type=int,
        default=32,
        help="PostgreSQL connections shared by the threads pool (DB_POOL_MAX_SIZE); 0: none",
    )
    args = parser.parse_args()
    if args.smoke:
        # gevent runs one greenlet on SQLite (see db_budget_for)
        args.delay, args.prefork, args.threads, args.gevent = 0.2, 2, 4, 1
        args.warmup, args.seconds, args.drain_timeout, args.image_concurrency = 1.5, 1.5, 30.0, 1
    if args.ai_processes is None:
        # a threads or gevent process runs at most one core of Python: one per core
        args.ai_processes = 1 if args.smoke else (os.cpu_count() or 1)
    concurrency = {"prefork": args.prefork, "threads": args.threads, "gevent": args.gevent}
    pools = [pool.strip() for pool in args.pools.split(",") if pool.strip()]
    unknown = set(pools) - set(POOLS)
    if unknown:
        parser.error(f"unknown pools: {', '.join(sorted(unknown))}")

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-io-")
    env = common.bench_env(args.smoke, var_dir)
    common.prepare_database(env)
    common.setup_django(env)
    common.load_rules()
    model = fake_model.FakeModel(fake_model.rule_categories(), delay=args.delay)
    fake = fake_model.start_fake_openai(model)
    # the client's timeout stays well above the delay: a slow call is not a failed one
    worker_env = {
        **env,
        **common.openai_env(fake.base_url, timeout=max(30.0, 4 * args.delay)),
        # every scan makes both slow calls, as the theory (2 × delay a scan) and the raw
        # chains (two sleeping tasks) count: answers from the cache made most scans one call
        "SCAN_ANSWER_CACHE": "false",
    }
    image = common.image_worker(concurrency=args.image_concurrency, env=worker_env, log_dir=var_dir)
    print(
        f"io_concurrency · {common.profile_name(args.smoke)} · provider delay {args.delay:g} s "
        f"per call (2 calls per scan) · window {args.seconds:g} s after {args.warmup:g} s warm-up",
        flush=True,
    )
    print(
        "  concurrency: "
        + ", ".join(f"{pool} {concurrency[pool]}" for pool in pools)
        + f"; scan.image: prefork {args.image_concurrency}"
        + (
            f"; threads/gevent split over {args.ai_processes} AI worker processes"
            if args.ai_processes > 1
            else ""
        ),
        flush=True,
    )
    results: dict[str, dict] = {}
    anchors: dict[str, dict] = {}
    raw_pools = {pool.strip() for pool in args.raw_pools.split(",") if pool.strip()}
    try:
        image.start()  # becomes ready while the first AI worker starts
        for pool in pools:
            if pool == "gevent" and importlib.util.find_spec("gevent") is None:
                results[pool] = {"skipped": "gevent is not installed (pip install gevent)"}
                print(f"  {pool}: SKIPPED, {results[pool]['skipped']}", flush=True)
                continue
            try:
                results[pool] = run_pool(
                    pool, concurrency[pool], args,
                    env=worker_env, fake=fake, model=model, var_dir=var_dir, image=image,
                )  # fmt: skip
            except RuntimeError as exc:  # the worker did not start (e.g. a broken gevent)
                results[pool] = {"error": str(exc)[-2000:]}
                print(f"  {pool}: COULD NOT RUN\n{exc}", flush=True)
                continue
            if pool in raw_pools:
                scans = results[pool]
                raw = run_raw_pool(
                    pool, scans["concurrency"], scans["ai_processes"], scans["backlog"], args,
                    env=env, var_dir=var_dir,
                )  # fmt: skip
                anchors[pool] = raw
                # the scans against the slots' theory and against raw Celery on the same slots
                scans["of_slot_theory"] = (
                    scans["scans_per_s"] / raw["theoretical_chains_per_s"]
                    if raw["theoretical_chains_per_s"]
                    else 0.0
                )
                scans["of_raw"] = (
                    scans["scans_per_s"] / raw["chains_per_s"] if raw["chains_per_s"] else 0.0
                )
                scans["anchor_targets_met"] = (
                    scans["of_slot_theory"] >= 0.9
                    and scans["of_raw"] >= 0.95
                    and scans["calls_per_scan"] >= 1.95
                )
        image_memory = image.memory()
    finally:
        image.stop()
        fake.stop()

    print(
        f"  {'pool':<8}{'conc':>6}{'scans/s':>9}{'in flight':>11}{'avg calls':>11}"
        f"{'theory/s':>10}{'achieved':>10}{'RSS MB':>9}{'PSS MB':>9}{'failed':>8}  target"
    )
    for pool, r in results.items():
        if "scans_per_s" not in r:
            continue
        print(
            f"  {pool:<8}{r['concurrency']:>6}{r['scans_per_s']:>9.2f}{r['in_flight']:>11}"
            f"{r['avg_calls_in_flight']:>11.1f}{r['theoretical_scans_per_s']:>10.2f}"
            f"{r['achieved_fraction']:>9.0%} {r['worker_rss_mb']:>9.0f}{r['worker_pss_mb']:>9.0f}"
            f"{r['failed']:>8}  {'PASS' if r['target_met'] else 'FAIL'}"
            + ("" if r["drained"] else "  (not drained)")
        )
        print(
            f"    provider calls a scan: {r['calls_per_scan']:.2f} (the theory counts 2"
            + (
                ")"
                if r["calls_per_scan"] >= 1.95
                else "; fewer: answers came from the cache, the figures above mean nothing)"
            )
        )
        if r.get("lock_waits"):
            waits = r["lock_waits"]
            print(
                f"    database sessions waiting on a lock: {waits['lock_waiting_sessions']:.2f} "
                f"on average, of {waits['busy_sessions']:.2f} busy"
                + (f" (most: {waits['most_waited']})" if waits["most_waited"] else "")
            )
        if r["failure_samples"]:
            print(f"    failures: {r['failure_samples']}")
    print(
        f"  scan.image worker: prefork {args.image_concurrency}, "
        f"RSS {image_memory['rss_mb']:.0f} MB"
        "; target: ≥ 100 in flight at ≥ 90 % of theoretical (in flight ÷ "
        f"{2 * args.delay:g} s per scan)"
    )
    for pool, raw in anchors.items():
        scans = results[pool]
        print(
            f"  raw Celery on {pool} {raw['concurrency']} ({raw['worker_processes']} processes; "
            f"bench/raw_celery.py, first and last task sleep {args.delay:g} s): "
            f"{raw['chains_per_s']:.2f} chains/s = {raw['achieved_fraction']:.0%} of "
            f"{raw['theoretical_chains_per_s']:.2f} theory, RSS {raw['worker_rss_mb']:.0f} MB"
            + ("" if raw["drained"] else " (not drained)")
        )
        print(
            f"    scans on the same {raw['concurrency']} slots: {scans['of_slot_theory']:.0%} of "
            f"theory (target ≥ 90 %), {scans['of_raw']:.2f} of raw Celery (target ≥ 0.95) "
            + ("PASS" if scans["anchor_targets_met"] else "FAIL")
        )
    if args.smoke:
        print("  smoke: windows of seconds and a handful of scans; the figures mean nothing")
    ran = [r for r in results.values() if "scans_per_s" in r]
    healthy = all(
        r["completed"] > 0 and not r["failed"] and r["drained"] for r in (*ran, *anchors.values())
    )
    ok = bool(ran) and healthy and not any("error" in r for r in results.values())
    common.finish(var_dir, smoke=args.smoke, ok=ok)
    print(
        common.result_line(
            {
                "delay_s": args.delay,
                "per_scan_provider_latency_s": 2 * args.delay,
                "pools": results,
                "raw": anchors,
                "image_worker": {"concurrency": args.image_concurrency, **image_memory},
                "smoke": args.smoke,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
